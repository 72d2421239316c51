//! Requests refused before anything moves: an App name whose
//! `NAME.localhost` is taken, an update that clashes or changes nothing,
//! and a recreate-by-memory that needs `yes`.

use super::*;

/// `NAME.localhost` routed to another App (as its extra domain) refuses
/// the create before any container starts.
#[tokio::test]
async fn a_name_whose_localhost_host_is_taken_is_refused_at_create() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let req = CreateAppRequest {
        name: "other".into(),
        image: V1.into(),
        port: 8080,
        domains: vec!["api.localhost".into()],
        ..Default::default()
    };
    let (_, d) = rig.deployer.create_app(req, "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.deployer.in_progress("other").is_some() {
        assert!(Instant::now() < deadline, "deploy {} did not end", d.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = rig.fakes.world().calls.len();
    let req = CreateAppRequest {
        name: "api".into(),
        image: V1.into(),
        port: 8080,
        ..Default::default()
    };
    let err = rig.deployer.create_app(req, "test").await.unwrap_err();
    match err {
        DeployError::Invalid { code, message } => {
            assert_eq!(code, "name_domain_taken");
            assert!(message.contains("`other`"), "{message}");
            assert!(message.contains("api.localhost"), "{message}");
        }
        e => panic!("expected a refusal, got {e:?}"),
    }
    assert!(rig.deployer.store.get_app("api").unwrap().is_none());
    assert_eq!(rig.fakes.world().calls.len(), started, "nothing started");
}

/// A domain another App serves is refused with that App's name, and a
/// request that changes nothing is refused.
#[tokio::test]
async fn an_update_is_refused_before_anything_moves() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let req = CreateAppRequest {
        name: "api".into(),
        image: V1.into(),
        port: 8080,
        domains: vec!["api.example.com".into()],
        ..Default::default()
    };
    let (_, d) = rig.deployer.create_app(req, "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.deployer.in_progress("api").is_some() {
        assert!(Instant::now() < deadline, "deploy {} did not end", d.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls = rig.fakes.world().calls.len();
    let update = |req| rig.deployer.update_app("web", req, "test");
    let (code, message) = refusal(
        update(UpdateAppRequest {
            add_domains: vec!["api.example.com".into()],
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(code, "domain_taken");
    assert!(message.contains("`api`"), "{message}");
    // Another App's own NAME.localhost cannot be removed from it: the
    // refusal says so instead of suggesting it.
    let (code, message) = refusal(
        update(UpdateAppRequest {
            add_domains: vec!["api.localhost".into()],
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(code, "domain_taken");
    assert!(message.contains("`api`"), "{message}");
    assert!(!message.contains("--remove-domain"), "{message}");
    assert!(message.contains("choose another domain"), "{message}");
    for req in [
        UpdateAppRequest::default(),
        UpdateAppRequest {
            port: Some(8080),
            ..Default::default()
        },
    ] {
        let (code, _) = refusal(update(req).await.unwrap_err());
        assert_eq!(code, "nothing_to_change");
    }
    let (code, _) = refusal(
        update(UpdateAppRequest {
            health_timeout: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(code, "invalid_health_timeout", "create's rules apply");
    // An interval out of range is refused, not quietly changed.
    for ms in [0, 5, 60_001] {
        let (code, _) = refusal(
            update(UpdateAppRequest {
                health_interval_ms: Some(ms),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        );
        assert_eq!(code, "invalid_health_interval", "{ms} ms");
    }
    assert_eq!(rig.fakes.world().calls.len(), calls, "nothing moved");
    assert_eq!(rig.deployer.store.list_deploys("web").unwrap().len(), 1);
}

/// Memory that cannot fit beside the serving version makes the change a
/// recreate, which is refused without `yes` and runs with it.
#[tokio::test]
async fn memory_beyond_capacity_needs_yes() {
    let rig = rig();
    rig.create(1, "auto").await;
    let d = rig
        .update(UpdateAppRequest {
            memory: Some("40g".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(
        d.strategy.as_deref(),
        Some("bluegreen"),
        "40 GiB fit beside nothing"
    );
    let containers = rig.container_ids();
    let calls = rig.fakes.world().calls.len();
    let thirty = UpdateAppRequest {
        memory: Some("30g".into()),
        ..Default::default()
    };
    let (code, message) = refusal(
        rig.deployer
            .update_app("web", thirty.clone(), "test")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "recreate_needs_yes");
    assert!(message.contains("--yes"), "{message}");
    assert_eq!(rig.fakes.world().calls.len(), calls, "nothing stopped");
    assert_eq!(rig.app().memory_bytes, Some(40 << 30));
    let d = rig
        .update(UpdateAppRequest {
            yes: true,
            ..thirty
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(d.strategy.as_deref(), Some("recreate"));
    assert_eq!(rig.app().memory_bytes, Some(30 << 30));
    assert_ne!(rig.container_ids(), containers);
    rig.assert_serves();
}

/// More replicas than the host can hold are refused before anything
/// starts, as `apps scale` refuses them: a replica count alone moves no
/// container's reservation, but each new replica reserves its own.
#[tokio::test]
async fn replicas_beyond_capacity_are_refused() {
    let rig = rig();
    rig.create(1, "auto").await;
    let d = rig
        .update(UpdateAppRequest {
            memory: Some("20g".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let calls = rig.fakes.world().calls.len();
    // 64 GiB offered: three 20 GiB replicas fit, four do not.
    let (code, message) = refusal(
        rig.deployer
            .update_app(
                "web",
                UpdateAppRequest {
                    replicas: Some(4),
                    ..Default::default()
                },
                "test",
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "insufficient_resources", "{message}");
    assert!(message.contains("(4 containers)"), "{message}");
    assert_eq!(rig.fakes.world().calls.len(), calls, "nothing started");
    let d = rig
        .update(UpdateAppRequest {
            replicas: Some(3),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(rig.app().replicas, 3);
}

/// Unsetting a variable the App does not have is refused, naming it, and
/// changes nothing (a typo must not look like a done change).
#[tokio::test]
async fn unsetting_a_variable_that_is_not_set_is_refused() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    rig.deployer
        .change_env(
            "web",
            vec![("COLOR".into(), "red".into(), false)],
            Vec::new(),
            false,
            "test",
        )
        .await
        .unwrap();
    let (code, message) = refusal(
        rig.deployer
            .change_env(
                "web",
                Vec::new(),
                vec!["COLOR".into(), "COLOUR".into()],
                false,
                "test",
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "unknown_env");
    assert!(message.contains("COLOUR"), "{message}");
    assert!(
        !message.contains("COLOR,"),
        "only the missing one is named: {message}"
    );
    let env = rig.deployer.store.env("web").unwrap();
    assert_eq!(env.len(), 1, "COLOR is still set: {env:?}");
    rig.deployer
        .change_env("web", Vec::new(), vec!["COLOR".into()], false, "test")
        .await
        .unwrap();
    assert!(rig.deployer.store.env("web").unwrap().is_empty());
}
