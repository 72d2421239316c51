//! The deploy's record in the store: a cutover the database refuses after
//! the proxy took it (moves forward, healed later), and a status transition
//! the store refuses.

use super::*;

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
