//! How long and by what a new version is judged healthy: the deploy
//! timeout after the start period, and the image's own `HEALTHCHECK` when
//! the App has no health path.

use super::*;

#[test]
fn the_deploy_timeout_runs_after_the_start_period() {
    let health = HealthCheck {
        start_period_ms: 8_000,
        deploy_timeout_secs: 2,
        ..Default::default()
    };
    assert_eq!(readiness::patience(&health), Duration::from_secs(10));
}

/// Without a health path the image's own `HEALTHCHECK` decides: a healthy
/// verdict swaps, an unhealthy one fails the deploy at once with the
/// check's output and changes nothing, and a health path wins over it.
#[tokio::test]
async fn the_images_own_healthcheck_decides_without_a_health_path() {
    use crate::health::EngineHealthStatus;
    let rig = rig();
    rig.fakes
        .world()
        .image_checks
        .insert(repo(V1), EngineHealthStatus::Healthy);
    let req = CreateAppRequest {
        name: "web".into(),
        image: V1.into(),
        port: 8080,
        health_timeout: Some(30),
        health_interval_ms: Some(10),
        drain_timeout_secs: Some(1),
        ..Default::default()
    };
    let (_, d) = rig.deployer.create_app(req, "test").await.unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let events = rig.deployer.store.events(&d.id, 0).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("the image's HEALTHCHECK")
                && e.message.contains("reports healthy")),
        "{events:?}"
    );
    let app = rig.deployer.store.get_app("web").unwrap().unwrap();
    let serving = rig.serving();
    let check = rig
        .deployer
        .check_in_force(&app, Some(&serving[0].container_id))
        .await;
    assert!(
        check.starts_with("the image's HEALTHCHECK: `/app check`"),
        "{check}"
    );

    // Unhealthy: fails long before the 30 s deploy timeout, with the output.
    rig.fakes
        .world()
        .image_checks
        .insert(repo(V2), EngineHealthStatus::Unhealthy);
    let started = Instant::now();
    let d = rig.deploy(V2).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let failure = d.failure.unwrap();
    assert_eq!(
        failure.kind,
        FailureKind::ImageHealthcheckFailing,
        "{failure:?}"
    );
    assert!(
        failure.message.contains("check failed: not ready"),
        "{failure:?}"
    );
    assert_eq!(failure.output.as_deref(), Some("check failed: not ready"));
    assert_eq!(rig.serving_image(), repo(V1));
    rig.assert_serves();

    // A health path always wins: the same image deploys when it answers.
    let d = rig
        .update(UpdateAppRequest {
            health_path: Some("/healthz".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let d = rig.deploy(V2).await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let app = rig.deployer.store.get_app("web").unwrap().unwrap();
    assert_eq!(
        rig.deployer.check_in_force(&app, None).await,
        "GET /healthz answers 2xx"
    );
}
