//! Unit tests of the deploy executor against the in-memory fakes of
//! `crate::fakes` and a real SQLite file: every failure point of every
//! strategy, in milliseconds. After each, the App must serve exactly its
//! recorded set: every serving container runs, the route points at them,
//! nothing is paused and nothing else of the App is left.
//!
//! The set-up every test shares (`Rig`: a deployer on the fakes, with the
//! App `web`) lives here; each submodule holds the tests of one concept.

use super::*;
use crate::fakes::FakeWorld;
use crate::store::AppSettings;

mod config_updates;
mod health_checks;
mod interruptions;
mod record;
mod refusals;
mod replica_repair;
mod rollback_and_retry;
mod swaps;

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
        let d = self
            .try_create(CreateAppRequest {
                replicas: Some(replicas),
                strategy: Some(strategy.into()),
                drain_timeout_secs: Some(1),
                ..create_request()
            })
            .await;
        assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
        self.assert_serves();
    }

    /// Creates an App from `req`; its first deploy as it ended.
    async fn try_create(&self, req: CreateAppRequest) -> DeployRow {
        let (_, d) = self.deployer.create_app(req, "test").await.unwrap();
        self.ended(&d.id).await
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

/// `web` on V1, port 8080, checked at `/healthz` every 10 ms for 1 s.
fn create_request() -> CreateAppRequest {
    CreateAppRequest {
        name: "web".into(),
        image: V1.into(),
        port: 8080,
        health_path: Some("/healthz".into()),
        health_timeout: Some(1),
        health_interval_ms: Some(10),
        ..Default::default()
    }
}

fn repo(image: &str) -> String {
    image.rsplit_once(':').unwrap().0.to_string()
}

fn refusal(e: DeployError) -> (&'static str, String) {
    match e {
        DeployError::Invalid { code, message } => (code, message),
        e => panic!("expected a refusal, got {e:?}"),
    }
}
