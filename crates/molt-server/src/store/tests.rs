//! Store tests on a real SQLite file; `web()` is shared with other modules' tests.

use super::*;

pub(crate) fn deploy(id: &str, replicas: u32) -> DeployRow {
    DeployRow {
        id: id.into(),
        app: "web".into(),
        kind: DeployKind::Deploy,
        image: "r/web:1".into(),
        digest: None,
        status: DeployStatus::Pending,
        error: None,
        failure: None,
        strategy: None,
        phase: None,
        settings: None,
        config: None,
        release: None,
        triggered_by: "test".into(),
        previous_deploy: None,
        previous_digest: None,
        replicas,
        env: Vec::new(),
        created_at: now(),
        finished_at: None,
    }
}

/// A store in a temp dir (kept while the guard lives) holding the App
/// `web` and its first deploy `d1`.
pub(crate) fn web() -> (tempfile::TempDir, std::sync::Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("molt.db")).unwrap();
    store.create_app(&app(), &[], &deploy("d1", 1)).unwrap();
    (dir, std::sync::Arc::new(store))
}

fn app() -> AppRow {
    AppRow {
        image: "r/web:1".into(),
        port: 80,
        created_at: now(),
        updated_at: now(),
        ..AppRow::named("web")
    }
}

#[test]
fn a_deploys_containers_and_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("molt.db")).unwrap();
    store.create_app(&app(), &[], &deploy("d1", 3)).unwrap();
    for i in [2, 0, 1] {
        store
            .put_replica(&ReplicaRow {
                deploy_id: "d1".into(),
                replica: i,
                container_id: format!("c{i}"),
                container_name: format!("n{i}"),
                addr: None,
            })
            .unwrap();
    }
    store.set_replica_addr("d1", 1, "10.0.0.1:80").unwrap();
    let rows = store.replicas("d1").unwrap();
    assert_eq!(
        rows.iter().map(|r| r.replica).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(rows[1].addr.as_deref(), Some("10.0.0.1:80"));
    // The swap makes the deploy's replica count the App's.
    store
        .record_swap("d1", "web", "r/web:1", "swapped")
        .unwrap();
    let app = store.get_app("web").unwrap().unwrap();
    assert_eq!(
        (app.replicas, app.current_deploy.as_deref()),
        (3, Some("d1"))
    );
    assert_eq!(store.get_deploy("d1").unwrap().unwrap().replicas, 3);
    store.delete_app("web").unwrap();
    assert!(store.replicas("d1").unwrap().is_empty());
}

/// Runs deploy `id` of `kind` to `status`, as the engine would.
fn run(store: &Store, id: &str, kind: DeployKind, status: DeployStatus, digest: bool) {
    let d = DeployRow {
        kind,
        digest: digest.then(|| format!("sha256:{id}")),
        ..deploy(id, 1)
    };
    store.start_deploy(&d).unwrap();
    store.event(id, "pulled").unwrap();
    store
        .put_replica(&ReplicaRow {
            deploy_id: id.into(),
            replica: 0,
            container_id: format!("c-{id}"),
            container_name: format!("n-{id}"),
            addr: None,
        })
        .unwrap();
    if status == DeployStatus::Succeeded {
        store.record_swap(id, "web", "r/web:1", "swapped").unwrap();
    }
    if status.is_terminal() {
        store.finish_deploy(id, status, None, "done").unwrap();
    }
}

fn ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<_> = store
        .list_deploys("web")
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    ids.reverse();
    ids
}

#[test]
fn history_keeps_the_newest_deploys_and_the_rollback_targets() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("molt.db")).unwrap();
    store.set_keep_deploys(3);
    let (ok, failed) = (DeployStatus::Succeeded, DeployStatus::Failed);
    store.create_app(&app(), &[], &deploy("c0", 1)).unwrap();
    store.finish_deploy("c0", failed, None, "failed").unwrap();
    // Seven rollback targets, then a scale (not one), a succeeded deploy
    // without a digest (not one), and a deploy still running.
    for i in 1..=7 {
        run(&store, &format!("v{i}"), DeployKind::Deploy, ok, true);
    }
    run(&store, "s1", DeployKind::Scale, ok, true);
    run(&store, "nodigest", DeployKind::Deploy, ok, false);
    run(
        &store,
        "running",
        DeployKind::Deploy,
        DeployStatus::Pulling,
        true,
    );
    // Failures after it push everything else out of the newest three.
    for i in 1..=3 {
        run(&store, &format!("f{i}"), DeployKind::Deploy, failed, true);
    }
    assert_eq!(
        ids(&store),
        ["v3", "v4", "v5", "v6", "v7", "nodigest", "running", "f1", "f2", "f3"],
        "the five newest targets, the serving one, the running one, the newest three"
    );
    // What went, went with its timeline and its containers.
    for gone in ["c0", "v1", "v2", "s1"] {
        assert!(store.events(gone, 0).unwrap().is_empty(), "{gone}");
        assert!(store.replicas(gone).unwrap().is_empty(), "{gone}");
    }
    assert_eq!(store.events("v3", 0).unwrap().len(), 4);
    assert_eq!(store.replicas("v3").unwrap().len(), 1);
    // The serving deploy stays however old it gets.
    let serving = store.get_app("web").unwrap().unwrap().current_deploy;
    assert_eq!(serving.as_deref(), Some("nodigest"));
    store
        .finish_deploy("running", failed, None, "gave up")
        .unwrap();
    for i in 4..=9 {
        run(&store, &format!("f{i}"), DeployKind::Deploy, failed, true);
    }
    assert_eq!(
        ids(&store),
        ["v3", "v4", "v5", "v6", "v7", "nodigest", "f7", "f8", "f9"]
    );
    // Within the limit nothing goes.
    store.set_keep_deploys(DEFAULT_KEEP_DEPLOYS);
    assert_eq!(store.prune("web").unwrap(), 0);
}

#[tokio::test]
async fn a_subscriber_is_woken_by_each_committed_change() {
    use crate::feed::{Feed, Woken};
    use std::sync::Arc;
    use std::time::Duration;
    let (_dir, store) = web();
    let mut rx = store.subscribe();
    // Nothing announced yet: a short wait ends on its tick.
    let short = Duration::from_millis(20);
    assert_eq!(Feed::wait(&mut rx, short, |_| true).await, Woken::Tick);
    let writer = Arc::clone(&store);
    let steps = tokio::task::spawn_blocking(move || {
        writer
            .advance("d1", DeployStatus::Pulling, "pulling")
            .unwrap();
        writer.event("d1", "pulled").unwrap();
        writer
            .record_swap("d1", "web", "r/web:1", "swapped")
            .unwrap();
        writer
            .finish_deploy("d1", DeployStatus::Succeeded, None, "done")
            .unwrap();
        writer.start_deploy(&deploy("d2", 1)).unwrap();
    });
    // A fallback far longer than the test: only an announcement wakes it.
    let long = Duration::from_secs(600);
    for want in ["d1", "d1", "d1", "d1", "d2"] {
        let woken = tokio::time::timeout(
            Duration::from_secs(10),
            Feed::wait(&mut rx, long, |c| c.app == "web" && c.deploy_id == want),
        )
        .await
        .expect("woken by the change, not by a tick");
        assert_eq!(woken, Woken::Changed);
    }
    steps.await.unwrap();
}

#[test]
fn confinement_is_stored_with_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("molt.db")).unwrap();
    let app = AppRow {
        links: vec!["db".into()],
        cap_add: vec!["NET_RAW".into()],
        pids_limit: Some(64),
        read_only: true,
        ..app()
    };
    store.create_app(&app, &[], &deploy("d1", 1)).unwrap();
    let got = store.get_app("web").unwrap().unwrap();
    assert_eq!(got.links, vec!["db".to_string()]);
    assert_eq!(got.cap_add, vec!["NET_RAW".to_string()]);
    assert_eq!((got.pids_limit, got.read_only), (Some(64), true));
}

#[test]
fn the_replicas_migration_keeps_existing_containers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("molt.db");
    {
        // A database at schema 1, with one deploy and its container.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO deploys (id, app, kind, image, status, triggered_by, container_id,
                container_name, target_addr, created_at)
             VALUES ('d1', 'web', 'deploy', 'r/web:1', 'succeeded', 'cli', 'abc', 'molt-web-d1',
                '10.0.0.2:80', '2024-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let rows = store.replicas("d1").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].container_id, "abc");
    assert_eq!(rows[0].addr.as_deref(), Some("10.0.0.2:80"));
    assert_eq!(store.get_deploy("d1").unwrap().unwrap().replicas, 1);
}

/// A database call does not stall the async worker it runs on: with a
/// single worker, a ticking task keeps ticking while a store call waits for
/// a connection that a slow call (here: one holding it for 300 ms) keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_store_call_hands_its_worker_over() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("molt.db")).unwrap());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let slow = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let _conn = store.conn();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        })
    };
    locked_rx.recv().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // On the one worker, beside the ticker (the test's own body runs on
    // another thread).
    let during = tokio::spawn({
        let (store, ticks) = (Arc::clone(&store), Arc::clone(&ticks));
        async move {
            let before = ticks.load(Ordering::SeqCst);
            store.list_apps().unwrap();
            ticks.load(Ordering::SeqCst) - before
        }
    })
    .await
    .unwrap();
    ticker.abort();
    slow.join().unwrap();
    assert!(
        during >= 5,
        "the worker stalled: {during} ticks while the call waited"
    );
}

#[test]
fn the_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = web();
    store.event("d1", "a write, so the WAL is in use").unwrap();
    for name in ["molt.db", "molt.db-wal", "molt.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}
