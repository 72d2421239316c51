//! Image deploys under every strategy: the swap that retires the old set,
//! and each way a new version fails (a pull, a crash, a health check that
//! never passes, a route the proxy refuses), after which the old set serves
//! unchanged and the failure says why, its output with secrets masked.

use super::*;

#[tokio::test]
async fn every_strategy_swaps_and_retires_the_old_set() {
    for strategy in ["bluegreen", "rolling", "recreate"] {
        let rig = rig();
        rig.create(2, strategy).await;
        let d = rig.deploy(V2).await;
        assert_eq!(
            d.status,
            DeployStatus::Succeeded,
            "{strategy}: {:?}",
            d.failure
        );
        assert_eq!(d.strategy.as_deref(), Some(strategy));
        assert_eq!(rig.serving_image(), repo(V2));
        rig.assert_serves();
    }
}

#[tokio::test]
async fn a_pull_that_fails_changes_nothing_and_says_why() {
    let rig = rig();
    rig.create(2, "bluegreen").await;
    let before = rig.serving();
    rig.fakes.world().missing_images.insert(repo(V3));
    let d = rig.deploy(V3).await;
    assert_eq!(d.status, DeployStatus::Failed);
    let failure = d.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::ImageNotFound, "{failure:?}");
    assert!(failure.message.contains("manifest unknown"), "{failure:?}");
    assert!(
        failure.message.contains("check the repository and tag"),
        "the failure says what to do: {failure:?}"
    );
    assert_eq!(rig.serving(), before);
    rig.assert_serves();
}

#[tokio::test]
async fn a_rolling_deploy_whose_second_replica_crashes_rolls_back() {
    let rig = rig();
    rig.create(3, "rolling").await;
    let before = rig.serving();
    rig.fakes.world().crashing.insert((repo(V2), 1), 3);
    let d = rig.deploy(V2).await;
    assert_eq!(d.status, DeployStatus::Failed);
    let failure = d.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Crash, "{failure:?}");
    assert_eq!(failure.exit_code, Some(3));
    assert_eq!(failure.output.as_deref(), Some("boom"));
    assert_eq!(rig.serving(), before, "the old set is back, replica 0 too");
    assert_eq!(rig.serving_image(), repo(V1));
    rig.assert_serves();
}

#[tokio::test]
async fn a_version_that_never_gets_healthy_changes_nothing() {
    for strategy in ["bluegreen", "recreate"] {
        let rig = rig();
        rig.create(1, strategy).await;
        rig.fakes.world().unhealthy_images.insert(repo(V2));
        let d = rig.deploy(V2).await;
        let failure = d.failure.unwrap();
        assert_eq!(failure.kind, FailureKind::HealthCheckFailing, "{failure:?}");
        assert!(failure.last_check.unwrap().contains("500"));
        assert_eq!(rig.serving_image(), repo(V1));
        rig.assert_serves();
    }
}

#[tokio::test]
async fn a_route_the_proxy_refuses_leaves_the_old_set_serving() {
    for strategy in ["bluegreen", "rolling", "recreate"] {
        let rig = rig();
        rig.create(2, strategy).await;
        let first = {
            let mut w = rig.fakes.world();
            w.refuse_routes_from = Some(w.route_calls + 1);
            w.route_calls + 1
        };
        let (_, d) = rig.deployer.deploy("web", V2, "test").await.unwrap();
        // Recreate's restore needs the proxy again: let it answer once the
        // first refusal happened.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rig.deployer.in_progress("web").is_some() {
            if strategy == "recreate" && rig.fakes.world().route_calls >= first {
                rig.fakes.world().refuse_routes_from = None;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let d = rig.deployer.store.get_deploy(&d.id).unwrap().unwrap();
        let failure = d
            .failure
            .unwrap_or_else(|| panic!("{strategy}: {:?} without a failure", d.status));
        assert_eq!(
            failure.kind,
            FailureKind::ProxyRefused,
            "{strategy}: {failure:?}"
        );
        rig.fakes.world().refuse_routes_from = None;
        assert_eq!(rig.serving_image(), repo(V1), "{strategy}");
        if strategy != "recreate" {
            rig.assert_serves();
        }
    }
}

/// A crashed container that printed the App's secret: neither the
/// deploy's failure nor its events keep the value.
#[tokio::test]
async fn crash_output_is_recorded_with_secrets_masked() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    rig.deployer
        .change_env(
            "web",
            vec![
                ("API_TOKEN".into(), "s3cr3t-t0ken".into(), true),
                ("PIN".into(), "42".into(), true),
                ("MODE".into(), "debug-plain".into(), false),
            ],
            Vec::new(),
            false,
            "test",
        )
        .await
        .unwrap();
    {
        let mut w = rig.fakes.world();
        w.crashing.insert((repo(V2), 0), 1);
        w.crash_output = Some("config: API_TOKEN=s3cr3t-t0ken MODE=debug-plain\npanic".into());
    }
    let d = rig.deploy(V2).await;
    assert_eq!(d.status, DeployStatus::Failed);
    let failure = d.failure.clone().unwrap();
    let output = failure.output.clone().unwrap();
    assert!(
        output.contains("API_TOKEN=*** MODE=debug-plain"),
        "{output}"
    );
    assert!(!failure.message.contains("s3cr3t"), "{}", failure.message);
    let events = rig.deployer.store.events(&d.id, 0).unwrap();
    let all: String = events.iter().map(|e| format!("{}\n", e.message)).collect();
    assert!(all.contains("last output of container"), "{all}");
    assert!(!all.contains("s3cr3t-t0ken"), "{all}");
    assert!(all.contains("API_TOKEN=***"), "{all}");
    rig.assert_serves();
}

/// The timeline of a failed deploy says the previous version kept serving
/// only when there was one: a first deploy that fails had none.
#[tokio::test]
async fn only_a_deploy_with_a_serving_version_says_it_kept_serving() {
    let rig = rig();
    rig.fakes.world().unhealthy_images.insert(repo(V1));
    let first = rig.try_create(create_request()).await;
    assert_eq!(first.status, DeployStatus::Failed);
    let timeline = |id: &str| -> String {
        let events = rig.deployer.store.events(id, 0).unwrap();
        events.iter().map(|e| format!("{}\n", e.message)).collect()
    };
    let said = timeline(&first.id);
    assert!(said.contains("removed the new container"), "{said}");
    assert!(!said.contains("previous version"), "{said}");

    rig.fakes.world().unhealthy_images.clear();
    let second = rig.deploy(V1).await;
    assert_eq!(second.status, DeployStatus::Succeeded);
    rig.fakes.world().unhealthy_images.insert(repo(V2));
    let third = rig.deploy(V2).await;
    assert_eq!(third.status, DeployStatus::Failed);
    let said = timeline(&third.id);
    assert!(said.contains("the previous version kept serving"), "{said}");
}

/// A hard restart runs the same bytes in place: its deploy records the
/// serving digest, so the App keeps showing it and the deploy stays a
/// rollback target like any other.
#[tokio::test]
async fn a_hard_restart_records_the_digest_it_keeps_serving() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let serving_digest = |rig: &Rig| {
        let id = rig.app().current_deploy.expect("a serving deploy");
        rig.deployer.store.get_deploy(&id).unwrap().unwrap().digest
    };
    let digest = serving_digest(&rig);
    assert!(digest.is_some(), "the create pinned a digest");
    let (_, d) = rig.deployer.restart("web", true, "test").await.unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(d.strategy.as_deref(), Some("in_place"));
    assert_eq!(d.digest, digest, "the hard restart's deploy");
    assert_eq!(serving_digest(&rig), digest, "the App after a hard restart");
    rig.assert_serves();
}
