//! The reconciler: after a start (or a crash), makes the database, the
//! containers (found by label) and the proxy's routes agree again. A deploy
//! that was in flight is finished if traffic had moved, undone if not; every
//! record ends terminal and true, and orphan containers are removed.

use crate::deploy::{route_for, short, Engine};
use crate::store::{DeployRow, ReplicaRow};
use anyhow::Result;
use molt_core::{AppStatus, DeployStatus};
use std::collections::HashSet;
use std::time::Duration;

/// What one pass did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    pub finished: usize,
    pub failed: usize,
    pub orphans_removed: usize,
    pub routes_set: usize,
    pub routes_removed: usize,
}

pub async fn reconcile(engine: &Engine) -> Result<Report> {
    let mut report = Report::default();
    let routes = engine.proxy.routes().await?;

    // 1. Deploys that were in flight.
    for deploy in engine.store.unfinished_deploys()? {
        settle(engine, &deploy, &routes, &mut report).await?;
    }

    // 2. Every App: its serving container runs and its route points at it.
    let apps = engine.store.list_apps()?;
    let mut keep: HashSet<String> = HashSet::new();
    for app in &apps {
        if app.status == AppStatus::Deleting {
            // A delete was interrupted: finish it.
            engine.proxy.remove_route(&app.name).await?;
            for c in engine.runtime.list(Some(&app.name)).await? {
                engine.runtime.remove(&c.id).await?;
            }
            engine.store.delete_app(&app.name)?;
            continue;
        }
        let current = match &app.current_deploy {
            Some(id) => engine.store.get_deploy(id)?,
            None => None,
        };
        let Some(current) = current else {
            if routes.iter().any(|r| r.app == app.name) {
                engine.proxy.remove_route(&app.name).await?;
                report.routes_removed += 1;
            }
            engine.store.set_app_status(&app.name, AppStatus::Failed)?;
            continue;
        };
        // Every serving replica runs, and the route holds them all at their
        // current addresses.
        let rows = engine.store.replicas(&current.id)?;
        let mut targets = Vec::new();
        for row in &rows {
            let container = &row.container_id;
            keep.insert(container.clone());
            let Some(mut state) = engine.runtime.state(container).await? else {
                tracing::error!(app = %app.name, replica = row.replica, "the serving container {} is gone; deploy the App again", short(container));
                continue;
            };
            let mut started = false;
            if !state.running && !state.restarting {
                // Stopped by an interrupted recreate or rolling deploy.
                engine.runtime.start_existing(container).await?;
                started = true;
                if let Some(s) = engine.runtime.state(container).await? {
                    state = s;
                }
            }
            let Some(addr) = engine.runtime.upstream_addr(&state, app.port) else {
                continue;
            };
            if row.addr.as_deref() != Some(addr.as_str()) {
                engine
                    .store
                    .set_replica_addr(&current.id, row.replica, &addr)?;
            }
            // A container started just now gets the chance to come up
            // before it takes requests.
            if started && !engine.wait_serving(app, &addr).await {
                tracing::warn!(app = %app.name, replica = row.replica, "the restarted container {} is not healthy yet", short(container));
            }
            targets.push(ReplicaRow {
                addr: Some(addr),
                ..row.clone()
            });
        }
        if !targets.is_empty() {
            let wanted = route_for(app, engine.targets(&targets));
            if routes.iter().find(|r| r.app == app.name) != Some(&wanted) {
                engine.proxy.set_route(wanted).await?;
                report.routes_set += 1;
            }
        }
        // A recreate interrupted in phase 1 or 2 left the route paused:
        // the serving container is back, so let requests flow.
        if let Err(e) = engine.proxy.resume(&app.name).await {
            tracing::warn!(app = %app.name, "cannot resume the route: {e:#}");
        }
        if app.status != AppStatus::Running {
            engine.store.set_app_status(&app.name, AppStatus::Running)?;
        }
    }

    // 3. Routes of Apps that no longer exist.
    let names: HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    for route in &routes {
        if !names.contains(route.app.as_str()) {
            engine.proxy.remove_route(&route.app).await?;
            report.routes_removed += 1;
        }
    }

    // 4. Orphans: containers of this installation that nothing serves from.
    for c in engine.runtime.list(None).await? {
        if !keep.contains(&c.id) {
            // An old version whose drain the crash interrupted may still be
            // finishing requests: let the proxy drain it first.
            if let (Some(app), Ok(Some(state))) = (
                apps.iter().find(|a| a.name == c.app),
                engine.runtime.state(&c.id).await,
            ) {
                if let Some(addr) = engine.runtime.upstream_addr(&state, app.port) {
                    let _ = engine
                        .proxy
                        .wait_drained(
                            &app.name,
                            &addr,
                            Duration::from_secs(app.drain_timeout_secs),
                        )
                        .await;
                }
            }
            tracing::info!(app = %c.app, container = %c.name, "removing an orphan container");
            engine.runtime.remove(&c.id).await?;
            report.orphans_removed += 1;
        }
    }
    Ok(report)
}

/// Ends a deploy that the server did not see to its end.
async fn settle(
    engine: &Engine,
    deploy: &DeployRow,
    routes: &[molt_proxy::admin::Route],
    report: &mut Report,
) -> Result<()> {
    let Some(app) = engine.store.get_app(&deploy.app)? else {
        engine.store.finish_deploy(
            &deploy.id,
            DeployStatus::Failed,
            Some(&molt_core::Failure::new(
                molt_core::FailureKind::Interrupted,
                "the App was deleted",
            )),
            "deploy ended: the App no longer exists",
        )?;
        report.failed += 1;
        return Ok(());
    };
    // Traffic moved if the swap was recorded, or if the proxy already holds
    // the deploy's whole set although the server died before recording it
    // (a rolling deploy interrupted halfway holds only part of it: that one
    // is undone, its old replicas come back).
    let rows = engine.store.replicas(&deploy.id)?;
    let route = routes.iter().find(|r| r.app == deploy.app);
    let routed = |row: &ReplicaRow| {
        row.addr.as_ref().is_some_and(|addr| {
            route.is_some_and(|r| {
                r.targets
                    .iter()
                    .any(|t| &t.addr == addr && t.id == row.container_id)
            })
        })
    };
    let whole_set =
        !rows.is_empty() && rows.len() as u32 == deploy.replicas && rows.iter().all(routed);
    let moved =
        deploy.status.traffic_moved() || (deploy.status == DeployStatus::Swapping && whole_set);
    if moved {
        if !deploy.status.traffic_moved() {
            engine.store.record_swap(
                &deploy.id,
                &app.name,
                &crate::deploy::followed_image(deploy, &app),
                "traffic had switched to the new containers (found by the reconciler)",
            )?;
        }
        engine.store.finish_deploy(
            &deploy.id,
            DeployStatus::Succeeded,
            None,
            "deploy completed by the reconciler after a server restart: the new version serves; the old containers are removed",
        )?;
        report.finished += 1;
    } else {
        // Containers that take traffic stay until the route holds the old
        // set again and they drained (the orphan pass); the others go now.
        let serving: HashSet<String> = engine
            .serving_rows(&app)?
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        let in_route: HashSet<&str> = rows
            .iter()
            .filter(|r| routed(r) && !serving.contains(&r.container_id))
            .map(|r| r.container_id.as_str())
            .collect();
        for c in engine.runtime.list(Some(&deploy.app)).await? {
            if c.deploy == deploy.id && !in_route.contains(c.id.as_str()) {
                engine.runtime.remove(&c.id).await?;
            }
        }
        let error = if in_route.is_empty() {
            format!(
                "the server stopped during `{}` before traffic moved; the new container was removed and the previous version kept serving",
                deploy.status
            )
        } else {
            format!(
                "the server stopped during `{}` with {} of {} replicas moved; the previous version was restored and the new containers removed",
                deploy.status,
                in_route.len(),
                deploy.replicas
            )
        };
        engine.store.finish_deploy(
            &deploy.id,
            DeployStatus::Failed,
            Some(&molt_core::Failure::new(
                molt_core::FailureKind::Interrupted,
                error.clone(),
            )),
            &format!("deploy failed: {error}"),
        )?;
        report.failed += 1;
    }
    Ok(())
}
