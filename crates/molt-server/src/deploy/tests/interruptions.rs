//! A deploy stopped midway: canceled at each of its await points (every
//! strategy and a hard restart), or interrupted by an engine restart. The
//! App serves its recorded set afterwards.

use super::*;

/// Cancels a deploy at each of its await points in turn (each call to a
/// port), for every strategy and for a hard restart: nothing is left
/// stopped or orphaned, and the App serves.
#[tokio::test]
async fn a_cancel_at_any_point_leaves_the_app_serving() {
    for strategy in ["bluegreen", "rolling", "recreate", "hard"] {
        let rig = rig();
        let replicas = 2;
        rig.create(
            replicas,
            if strategy == "hard" {
                "bluegreen"
            } else {
                strategy
            },
        )
        .await;
        let images = [V2, V1];
        let mut points = 0;
        for n in 1.. {
            let image = images[n % 2];
            let (reached, release) = rig.fakes.hold_at(rig.fakes.calls() + n);
            let d = if strategy == "hard" {
                rig.deployer.restart("web", true, "test").await.unwrap().1
            } else {
                rig.deployer.deploy("web", image, "test").await.unwrap().1
            };
            let held = tokio::select! {
                _ = reached.notified() => true,
                _ = async {
                    while rig.deployer.in_progress("web").is_some() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } => false,
            };
            if held {
                let _ = rig.deployer.cancel("web");
                release.notify_one();
            }
            let d = rig.ended(&d.id).await;
            rig.fakes.world().hold = None;
            assert!(
                matches!(d.status, DeployStatus::Succeeded | DeployStatus::Canceled),
                "{strategy}, point {n}: {:?} {:?}",
                d.status,
                d.failure
            );
            rig.assert_serves();
            if !held {
                break;
            }
            points = n;
        }
        assert!(points >= 5, "{strategy}: only {points} points tried");
    }
}

#[tokio::test]
async fn an_engine_restart_mid_deploy_is_an_interrupted_failure() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    rig.fakes.world().unhealthy_images.insert(repo(V2));
    let (_, d) = rig.deployer.deploy("web", V2, "test").await.unwrap();
    // Wait until its new container runs, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.fakes.of_app("web").len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    rig.deployer.interrupt("web", "the Docker engine restarted");
    let d = rig.ended(&d.id).await;
    let failure = d.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Interrupted, "{failure:?}");
    assert!(failure.message.starts_with("the Docker engine restarted"));
    rig.assert_serves();
}
