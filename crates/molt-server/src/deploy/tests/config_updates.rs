//! `apps update`: a config deploy takes its settings with the swap or not at
//! all, a routing-only change moves just the route, and a failed change
//! never routes its new domains.

use super::*;

/// A new port the container does not listen on fails its health check:
/// the old container keeps serving, the App keeps every old setting, and
/// the failure names the port the container listens on.
#[tokio::test]
async fn a_failed_config_deploy_leaves_the_settings_unchanged() {
    for strategy in ["bluegreen", "rolling", "recreate"] {
        let rig = rig();
        rig.create(2, strategy).await;
        let before = rig.app();
        let containers = rig.container_ids();
        rig.fakes.world().listen_port = Some(8080);
        let d = rig
            .update(UpdateAppRequest {
                port: Some(9090),
                health_path: Some("/ready".into()),
                ..Default::default()
            })
            .await;
        assert_eq!(d.status, DeployStatus::Failed, "{strategy}");
        let failure = d.failure.unwrap();
        assert_eq!(failure.kind, FailureKind::PortMismatch, "{failure:?}");
        assert_eq!(failure.listening_ports, vec![8080]);
        assert!(
            failure
                .message
                .contains("likely cause is the new port 9090")
                && failure.message.contains("listens on port 8080"),
            "{}",
            failure.message
        );
        let after = rig.app();
        assert_eq!(AppSettings::of(&after), AppSettings::of(&before));
        assert_eq!(after.current_deploy, before.current_deploy);
        assert_eq!(rig.container_ids(), containers, "{strategy}");
        rig.assert_serves();
    }
}

/// A new port and health path start new containers through the swap, and
/// the App takes the settings with the swap.
#[tokio::test]
async fn a_config_deploy_applies_its_settings_with_the_swap() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let containers = rig.container_ids();
    let d = rig
        .update(UpdateAppRequest {
            port: Some(9090),
            health_path: Some("/ready".into()),
            start_period: Some(8),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let app = rig.app();
    assert_eq!(app.port, 9090);
    assert_eq!(app.health.path.as_deref(), Some("/ready"));
    assert_eq!(app.health.start_period_ms, 8000);
    assert_eq!(app.current_deploy.as_deref(), Some(d.id.as_str()));
    assert_ne!(rig.container_ids(), containers, "new containers serve");
    let addr = rig.fakes.world().routes["web"].targets[0].addr.clone();
    assert!(addr.ends_with(":9090"), "{addr}");
    rig.assert_serves();
}

/// Domains and timeouts move only the route: no container starts, the
/// change is a `config` deploy that succeeds at once, and removing the last
/// extra domain keeps `NAME.localhost`.
#[tokio::test]
async fn a_routing_only_change_moves_the_route_without_new_containers() {
    let rig = rig();
    rig.create(2, "bluegreen").await;
    let containers = rig.container_ids();
    let starts = |rig: &Rig| {
        rig.fakes
            .world()
            .calls
            .iter()
            .filter(|c| c.starts_with("start "))
            .count()
    };
    let before = starts(&rig);
    let d = rig
        .update(UpdateAppRequest {
            add_domains: vec!["WWW.Example.com".into()],
            drain_timeout_secs: Some(5),
            upstream_timeout_secs: Some(7),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(starts(&rig), before, "no container started");
    assert_eq!(rig.container_ids(), containers);
    let route = rig.fakes.world().routes["web"].clone();
    assert_eq!(route.hosts, vec!["web.localhost", "www.example.com"]);
    assert_eq!(
        (route.drain_timeout_ms, route.upstream_timeout_ms),
        (5000, 7000)
    );
    assert_eq!(rig.app().domains, vec!["www.example.com"]);
    rig.assert_serves();

    let d = rig
        .update(UpdateAppRequest {
            remove_domains: vec!["www.example.com".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(rig.fakes.world().routes["web"].hosts, vec!["web.localhost"]);
    assert_eq!(rig.container_ids(), containers);
    let (code, _) = refusal(
        rig.deployer
            .update_app(
                "web",
                UpdateAppRequest {
                    remove_domains: vec!["web.localhost".into()],
                    ..Default::default()
                },
                "test",
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "invalid_domain");
    rig.assert_serves();
}

/// A settings change that fails midway (a rolling deploy's second replica,
/// a recreate's new set) never routes its new domains, not even while its
/// first containers serve; once it succeeds the route has them.
#[tokio::test]
async fn a_failed_settings_change_never_routes_its_new_domains() {
    for strategy in ["rolling", "recreate"] {
        let rig = rig();
        rig.create(2, strategy).await;
        {
            let mut w = rig.fakes.world();
            w.crashing.insert((repo(V1), 1), 3);
            w.route_history.clear();
        }
        let change = UpdateAppRequest {
            add_domains: vec!["new.example.com".into()],
            port: Some(9090),
            ..Default::default()
        };
        let d = rig.update(change.clone()).await;
        assert_eq!(d.status, DeployStatus::Failed, "{strategy}");
        {
            let w = rig.fakes.world();
            assert!(!w.route_history.is_empty(), "{strategy}: no route moved");
            for r in &w.route_history {
                assert_eq!(r.hosts, vec!["web.localhost"], "{strategy}");
            }
            assert_eq!(w.routes["web"].hosts, vec!["web.localhost"], "{strategy}");
        }
        assert!(rig.app().domains.is_empty());
        rig.fakes.world().crashing.clear();
        let d = rig.update(change).await;
        assert_eq!(
            d.status,
            DeployStatus::Succeeded,
            "{strategy}: {:?}",
            d.failure
        );
        assert_eq!(
            rig.fakes.world().routes["web"].hosts,
            vec!["web.localhost", "new.example.com"],
            "{strategy}"
        );
        rig.assert_serves();
    }
}

/// An App whose create failed (here: its image listens on another port)
/// is fixed with `apps update`: the new settings come with a deploy of its
/// image, and the App serves with them.
#[tokio::test]
async fn an_app_that_never_served_is_fixed_by_an_update() {
    let rig = rig();
    rig.fakes.world().listen_port = Some(9090);
    let first = rig.try_create(create_request()).await;
    assert_eq!(first.status, DeployStatus::Failed);
    assert!(rig.app().current_deploy.is_none());

    // A change that does not fix it says so, and promises no containers.
    let d = rig
        .update(UpdateAppRequest {
            port: Some(7070),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Failed);
    let message = d.failure.unwrap().message;
    assert!(
        message.contains("the App keeps its previous settings. "),
        "{message}"
    );
    assert!(!message.contains("containers"), "{message}");
    assert_eq!(rig.app().port, 8080);

    let d = rig
        .update(UpdateAppRequest {
            port: Some(9090),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(d.kind, DeployKind::Config);
    assert_eq!(rig.app().port, 9090);
    assert_eq!(rig.app().current_deploy, Some(d.id.clone()));
    assert_eq!(rig.serving_image(), repo(V1));
    rig.assert_serves();
    // Nothing to change is still refused.
    let e = rig
        .deployer
        .update_app(
            "web",
            UpdateAppRequest {
                port: Some(9090),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap_err();
    assert_eq!(refusal(e).0, "nothing_to_change");
}
