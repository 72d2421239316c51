//! Unit tests of the deploy executor against the in-memory fakes of
//! `crate::fakes` and a real SQLite file: every failure point of every
//! strategy, in milliseconds. After each, the App must serve exactly its
//! recorded set: every serving container runs, the route points at them,
//! nothing is paused and nothing else of the App is left.

use super::*;
use crate::fakes::FakeWorld;
use crate::store::AppSettings;

const V1: &str = "127.0.0.1:5000/v1:1";
const V2: &str = "127.0.0.1:5000/v2:1";
const V3: &str = "127.0.0.1:5000/v3:1";

struct Rig {
    deployer: Arc<Deployer>,
    fakes: FakeWorld,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("molt.db")).unwrap());
    let fakes = FakeWorld::default();
    let capacity = Capacity {
        memory_bytes: 64 << 30,
        gpus: 0,
    };
    let deployer = Arc::new(Deployer::new(
        store,
        fakes.ports(),
        Arc::new(Sealer::from_key(&[7; 32])),
        capacity,
    ));
    Rig {
        deployer,
        fakes,
        _dir: dir,
    }
}

impl Rig {
    /// Creates `web` serving V1 on `replicas` containers with `strategy`.
    async fn create(&self, replicas: u32, strategy: &str) {
        let req = CreateAppRequest {
            name: "web".into(),
            image: V1.into(),
            port: 8080,
            health_path: Some("/healthz".into()),
            health_timeout: Some(1),
            health_interval_ms: Some(10),
            domains: Vec::new(),
            env: Vec::new(),
            memory: None,
            cpus: None,
            gpus: None,
            replicas: Some(replicas),
            strategy: Some(strategy.into()),
            drain_timeout_secs: Some(1),
            upstream_timeout_secs: None,
            from: None,
            with_secrets: false,
            ..Default::default()
        };
        let (_, d) = self.deployer.create_app(req, "test").await.unwrap();
        let d = self.ended(&d.id).await;
        assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
        self.assert_serves();
    }

    /// Waits until the App is released (its deploy ran to its end), and
    /// returns the deploy as recorded.
    async fn ended(&self, id: &str) -> DeployRow {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.deployer.in_progress("web").is_some() {
            assert!(Instant::now() < deadline, "deploy {id} did not end");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.deployer.store.get_deploy(id).unwrap().unwrap()
    }

    fn serving(&self) -> Vec<ReplicaRow> {
        let app = self.deployer.store.get_app("web").unwrap().unwrap();
        self.deployer.serving_rows(&app).unwrap()
    }

    /// The App serves exactly its recorded set.
    fn assert_serves(&self) {
        let rows = self.serving();
        let app = self.deployer.store.get_app("web").unwrap().unwrap();
        assert_eq!(rows.len() as u32, app.replicas, "{rows:?}");
        let world = self.fakes.world();
        for row in &rows {
            let c = world
                .containers
                .get(&row.container_id)
                .unwrap_or_else(|| panic!("serving container {} is gone", row.container_id));
            assert!(c.running, "serving container {} is stopped", c.name);
        }
        let mut routed: Vec<&str> = world.routes["web"]
            .targets
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        routed.sort();
        let mut ids: Vec<&str> = rows.iter().map(|r| r.container_id.as_str()).collect();
        ids.sort();
        assert_eq!(routed, ids, "the route points at the serving set");
        assert!(!world.paused.contains("web"), "the route is left paused");
        let extra: Vec<&str> = world
            .containers
            .values()
            .filter(|c| c.app == "web" && !ids.contains(&c.id.as_str()))
            .map(|c| c.name.as_str())
            .collect();
        assert!(extra.is_empty(), "left behind: {extra:?}");
    }

    fn serving_image(&self) -> String {
        let rows = self.serving();
        self.fakes.world().containers[&rows[0].container_id]
            .image
            .clone()
    }

    async fn deploy(&self, image: &str) -> DeployRow {
        let (_, d) = self.deployer.deploy("web", image, "test").await.unwrap();
        self.ended(&d.id).await
    }
}

fn repo(image: &str) -> String {
    image.rsplit_once(':').unwrap().0.to_string()
}

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

/// The database refuses to record the swap after the proxy took it: the new
/// set keeps serving, nothing is torn down, and the cutover is healed once
/// the database answers.
#[tokio::test]
async fn a_cutover_the_database_refuses_moves_forward_and_heals() {
    for strategy in ["bluegreen", "rolling", "recreate"] {
        let rig = rig();
        rig.create(2, strategy).await;
        let old: Vec<String> = rig.serving().into_iter().map(|r| r.container_id).collect();
        rig.deployer
            .store
            .execute_for_test(
                "CREATE TEMP TRIGGER refuse_swap BEFORE UPDATE OF current_deploy ON apps
                 BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END;",
            )
            .unwrap();
        let (_, d) = rig.deployer.deploy("web", V2, "test").await.unwrap();
        let d = rig.ended(&d.id).await;
        assert_eq!(
            d.status,
            DeployStatus::Swapping,
            "{strategy}: not finished yet"
        );
        // The proxy routes to the new containers, and they run.
        let routed: Vec<String> = rig.fakes.world().routes["web"]
            .targets
            .iter()
            .map(|t| t.id.clone())
            .collect();
        {
            let w = rig.fakes.world();
            for id in &routed {
                let c = &w.containers[id];
                assert!(c.running && c.image == repo(V2), "{strategy}: {c:?}");
            }
            for id in &old {
                assert!(
                    w.containers.contains_key(id),
                    "{strategy}: old {id} was removed before the record"
                );
            }
        }
        assert!(!rig.deployer.heal_cutover("web").await, "still refused");
        // Orphan removal reads the (stale) record: it must leave both sets.
        crate::converge::orphans::remove_orphans(&rig.deployer, "web")
            .await
            .unwrap();
        {
            let w = rig.fakes.world();
            for id in routed.iter().chain(&old) {
                assert!(
                    w.containers.contains_key(id),
                    "{strategy}: {id} removed as an orphan"
                );
            }
        }
        rig.deployer
            .store
            .execute_for_test("DROP TRIGGER refuse_swap;")
            .unwrap();
        assert!(rig.deployer.heal_cutover("web").await);
        let d = rig.deployer.store.get_deploy(&d.id).unwrap().unwrap();
        assert_eq!(d.status, DeployStatus::Succeeded, "{strategy}");
        assert_eq!(rig.serving_image(), repo(V2));
        rig.assert_serves();
    }
}

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

#[test]
fn the_store_refuses_an_illegal_transition() {
    let rig = rig();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(rig.create(1, "bluegreen"));
    let id = rig
        .deployer
        .store
        .get_app("web")
        .unwrap()
        .unwrap()
        .current_deploy
        .unwrap();
    let err = rig
        .deployer
        .store
        .advance(&id, DeployStatus::Pulling, "back in time")
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot go from `succeeded`"),
        "{err}"
    );
    let d = rig.deployer.store.get_deploy(&id).unwrap().unwrap();
    assert_eq!(d.status, DeployStatus::Succeeded);
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

impl Rig {
    /// Runs `molt apps update web` with `req` to its end.
    async fn update(&self, req: UpdateAppRequest) -> DeployRow {
        let (_, d) = self.deployer.update_app("web", req, "test").await.unwrap();
        assert_eq!(d.kind, DeployKind::Config);
        self.ended(&d.id).await
    }

    fn app(&self) -> AppRow {
        self.deployer.store.get_app("web").unwrap().unwrap()
    }

    fn container_ids(&self) -> Vec<String> {
        self.serving().into_iter().map(|r| r.container_id).collect()
    }
}

fn refusal(e: DeployError) -> (&'static str, String) {
    match e {
        DeployError::Invalid { code, message } => (code, message),
        e => panic!("expected a refusal, got {e:?}"),
    }
}

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

#[test]
fn the_deploy_timeout_runs_after_the_start_period() {
    let health = HealthCheck {
        start_period_ms: 8_000,
        deploy_timeout_secs: 2,
        ..Default::default()
    };
    assert_eq!(readiness::patience(&health), Duration::from_secs(10));
}

/// Every deploy records its release (the App's whole settings beside its
/// environment); a rollback `--with-config` brings back the target's
/// settings with the swap, and one without it changes only the image.
#[tokio::test]
async fn a_rollback_with_config_restores_the_settings_of_its_target() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let first = rig.app();
    let created = rig
        .deployer
        .store
        .get_deploy(first.current_deploy.as_ref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(created.config, Some(AppSettings::of(&first)));
    let d = rig
        .update(UpdateAppRequest {
            port: Some(9090),
            health_path: Some("/ready".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(d.config.as_ref().map(|c| c.port), Some(9090));

    // Without --with-config the settings stay.
    let (_, r) = rig
        .deployer
        .rollback("web", Some(&created.id), false, "test")
        .await
        .unwrap();
    let r = rig.ended(&r.id).await;
    assert_eq!(r.status, DeployStatus::Succeeded, "{:?}", r.failure);
    assert_eq!(rig.app().port, 9090);
    assert_eq!(r.config.as_ref().map(|c| c.port), Some(9090));

    let (_, r) = rig
        .deployer
        .rollback("web", Some(&created.id), true, "test")
        .await
        .unwrap();
    let r = rig.ended(&r.id).await;
    assert_eq!(r.status, DeployStatus::Succeeded, "{:?}", r.failure);
    let app = rig.app();
    assert_eq!(AppSettings::of(&app), AppSettings::of(&first));
    assert_eq!(app.current_deploy.as_deref(), Some(r.id.as_str()));
    let addr = rig.fakes.world().routes["web"].targets[0].addr.clone();
    assert!(addr.ends_with(&format!(":{}", first.port)), "{addr}");
    rig.assert_serves();
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

/// An image deploy that failed on its port is tried again with the port
/// its version listens on: the App takes the image and the port together,
/// and the preview said it would start new containers.
#[tokio::test]
async fn a_failed_image_deploy_is_tried_again_with_new_settings() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    rig.fakes.world().listen_port = Some(9000);
    let (_, d) = rig.deployer.deploy("web", V2, "test").await.unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Failed);
    let failure = d.failure.unwrap();
    let now = AppSettings::of(&rig.app());
    assert_eq!(
        super::blamed_setting(&now, &now, &failure),
        Some(super::Blamed::Port)
    );
    let req = UpdateAppRequest {
        port: Some(9000),
        ..Default::default()
    };
    let preview = rig.deployer.preview_update("web", &req, true).unwrap();
    assert_eq!(preview.changes, vec!["port 8080 → 9000"]);
    assert!(matches!(
        preview.effect,
        super::ChangeEffect::NewContainers(_)
    ));
    let (_, d) = rig
        .deployer
        .deploy_with_settings("web", V2, req, "test")
        .await
        .unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let app = rig.app();
    assert_eq!(app.port, 9000);
    assert_eq!(app.current_deploy.as_deref(), Some(d.id.as_str()));
    assert!(d.image.contains("v2"), "{}", d.image);
    // A settings change alone previews as one and starts nothing.
    let req = UpdateAppRequest {
        drain_timeout_secs: Some(3),
        ..Default::default()
    };
    let preview = rig.deployer.preview_update("web", &req, false).unwrap();
    assert_eq!(preview.effect, super::ChangeEffect::RouteOnly);
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
