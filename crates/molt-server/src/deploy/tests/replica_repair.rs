//! Converge repairing a serving set: a replica on a lost swarm node leaves
//! the route and is replaced, and a stopped replica started again rejoins
//! the route (behind a published port only once healthy).

use super::*;

/// A replica whose swarm node went down leaves the route at once (the
/// others serve), the serving deploy's timeline says so, and a replacement
/// joins through a deploy of that replica.
#[tokio::test]
async fn a_replica_on_a_lost_node_leaves_the_route_and_is_replaced() {
    let rig = rig();
    rig.create(3, "bluegreen").await;
    let serving_deploy = rig
        .deployer
        .store
        .get_app("web")
        .unwrap()
        .unwrap()
        .current_deploy
        .unwrap();
    let lost = rig.serving()[1].container_id.clone();
    rig.fakes
        .world()
        .containers
        .get_mut(&lost)
        .unwrap()
        .lost_node = Some("node-2".into());
    let before = rig.fakes.world().route_history.len();

    assert!(
        crate::converge::converge_claimed(
            &rig.deployer,
            "web",
            crate::converge::Trigger::Event,
            &std::collections::HashSet::new()
        )
        .await
    );
    // The first route after the loss leaves it out and keeps the others.
    let routed: Vec<String> = rig.fakes.world().route_history[before]
        .targets
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(routed.len(), 2, "{routed:?}");
    assert!(!routed.contains(&lost), "{routed:?}");
    let told: Vec<String> = rig
        .deployer
        .store
        .events(&serving_deploy, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        told.contains(&"node node-2 is down: replica 1 left the route".to_string()),
        "{told:?}"
    );

    // The replacement: a deploy of replica 1, after which three serve.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replaced = rig.deployer.in_progress("web").is_none()
            && rig.serving().iter().all(|r| r.container_id != lost);
        if replaced {
            break;
        }
        assert!(Instant::now() < deadline, "replica 1 was not replaced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.assert_serves();
    let deploys = rig.deployer.store.list_deploys("web").unwrap();
    assert_eq!(deploys[0].kind, DeployKind::Restart, "{:?}", deploys[0]);
    assert_eq!(deploys[0].status, DeployStatus::Succeeded);
}

/// A serving container that stopped is started again by converge. On the
/// bridge network it joins the route at once beside the others (a refused
/// connection goes on to another target); behind a published port (a
/// swarm), where the engine's port proxy would accept and drop requests
/// until it listens, it joins only once its health check passed.
#[tokio::test]
async fn a_replica_started_again_joins_the_route_once_healthy_behind_a_published_port() {
    for published in [false, true] {
        let rig = rig();
        rig.fakes.world().published = published;
        rig.create(3, "bluegreen").await;
        let stopped = rig.serving()[1].container_id.clone();
        rig.fakes
            .world()
            .containers
            .get_mut(&stopped)
            .unwrap()
            .running = false;
        let before = rig.fakes.world().route_history.len();
        assert!(
            crate::converge::converge_claimed(
                &rig.deployer,
                "web",
                crate::converge::Trigger::Event,
                &std::collections::HashSet::new()
            )
            .await
        );
        assert!(rig.fakes.world().containers[&stopped].running);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.fakes.world().routes["web"].targets.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "published {published}: replica 1 did not rejoin the route"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let w = rig.fakes.world();
        let joined: Vec<bool> = w.route_history[before..]
            .iter()
            .map(|r| r.targets.iter().any(|t| t.id == stopped))
            .collect();
        if published {
            assert_eq!(
                (joined.first(), joined.last()),
                (Some(&false), Some(&true)),
                "out of the route, then in once healthy: {joined:?}"
            );
        } else {
            assert!(
                joined.iter().all(|j| *j),
                "in the route at once: {joined:?}"
            );
        }
        drop(w);
        rig.assert_serves();
    }
}
