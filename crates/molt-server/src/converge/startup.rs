//! Start-up: after a start (or a crash), makes the database, the
//! containers (found by label) and the proxy's routes agree again. A deploy
//! that was in flight is finished if traffic had moved, undone if not; every
//! record ends terminal and true. Then every App converges on its own (one
//! App's failure is logged and stops nothing else) and its paused route
//! resumes as soon as a serving container runs. Health waits for containers
//! started here, and the drains of orphans, run in the background: the API
//! listens without waiting for either.

use super::{converge_app, follow_up, orphans, Trigger};
use crate::deploy::Deployer;
use crate::store::{DeployRow, ReplicaRole, ReplicaRow};
use anyhow::Result;
use molt_core::DeployStatus;
use std::collections::HashSet;
use std::sync::Arc;

/// What one pass did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    pub finished: usize,
    pub failed: usize,
    pub apps_converged: usize,
    /// Apps whose converge failed (logged; the others went on).
    pub apps_failed: usize,
    /// Containers of Apps that no longer exist (each App's own orphans go
    /// in the background).
    pub orphans_removed: usize,
    pub routes_removed: usize,
}

pub async fn reconcile(deployer: &Arc<Deployer>) -> Result<Report> {
    let mut report = Report::default();
    let routes = deployer.proxy.routes().await?;

    // 0. One-off containers of `molt run`: their clients left with the
    // server, so they go (they are never an App's replicas).
    match crate::ops::oneoff::sweep_runs(deployer).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} one-off container(s) a stopped server left"),
        Err(e) => tracing::error!("cannot remove leftover one-off containers: {e:#}"),
    }

    // 1. Deploys that were in flight.
    for deploy in deployer.store.unfinished_deploys()? {
        if let Err(e) = settle(deployer, &deploy, &routes, &mut report).await {
            tracing::error!(app = %deploy.app, deploy = %deploy.id, "cannot settle the interrupted deploy: {e:#}");
        }
    }

    // 2. Every App converges, all at once and each on its own.
    let apps = deployer.store.list_apps()?;
    let outcomes =
        futures_util::future::join_all(apps.iter().map(|app| start_app(deployer, &app.name))).await;
    for (app, outcome) in apps.iter().zip(outcomes) {
        match outcome {
            Ok(()) => report.apps_converged += 1,
            Err(e) => {
                tracing::error!(app = %app.name, "cannot reconcile the App: {e:#}");
                report.apps_failed += 1;
            }
        }
    }

    // 3. Routes and containers of Apps that no longer exist.
    let names: HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    let console = deployer.console_domain().is_some();
    for route in &routes {
        let kept = console && route.app == crate::console::ROUTE;
        if !names.contains(route.app.as_str()) && !kept {
            match deployer.proxy.remove_route(&route.app).await {
                Ok(()) => report.routes_removed += 1,
                Err(e) => tracing::error!(app = %route.app, "cannot remove the route: {e:#}"),
            }
        }
    }
    let mut gone: HashSet<String> = HashSet::new();
    for c in deployer.runtime.list(None).await? {
        if !names.contains(c.app.as_str()) {
            gone.insert(c.app);
        }
    }
    for app in &gone {
        match orphans::remove_orphans(deployer, app).await {
            Ok(removed) => report.orphans_removed += removed,
            Err(e) => tracing::error!(%app, "cannot remove its containers: {e:#}"),
        }
    }
    Ok(report)
}

/// One App at start-up: converge under its claim, then leave health waits,
/// replacements and orphans (whose drains may take the App's drain
/// timeout) to the background.
async fn start_app(deployer: &Arc<Deployer>, app: &str) -> Result<()> {
    deployer.claim(app, "resync")?;
    let done = converge_app(deployer, app, Trigger::Startup, &HashSet::new()).await;
    deployer.release(app);
    follow_up(deployer, app, done?);
    let (deployer, app) = (Arc::clone(deployer), app.to_string());
    tokio::spawn(async move { orphans::remove_orphans_unclaimed(&deployer, &app).await });
    Ok(())
}

/// Ends a deploy that the server did not see to its end.
async fn settle(
    deployer: &Deployer,
    deploy: &DeployRow,
    routes: &[molt_proxy::admin::Route],
    report: &mut Report,
) -> Result<()> {
    let Some(app) = deployer.store.get_app(&deploy.app)? else {
        deployer.store.finish_deploy(
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
    let rows = deployer.store.replicas(&deploy.id)?;
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
    // Progress as recorded: every replica of the set took its place in the
    // route (the cutover marks them; a rolling deploy marks each as it
    // moves). The proxy's routes are asked too, for the moment between its
    // acknowledgement and that record.
    let roles = deployer.store.replica_roles(&deploy.id)?;
    let recorded = !roles.is_empty()
        && roles.len() as u32 == deploy.replicas
        && roles
            .iter()
            .all(|(_, role)| matches!(role, Some(ReplicaRole::Routed | ReplicaRole::Kept)));
    let whole_set =
        !rows.is_empty() && rows.len() as u32 == deploy.replicas && rows.iter().all(routed);
    let moved = deploy.status.traffic_moved()
        || (deploy.status == DeployStatus::Swapping && (recorded || whole_set));
    if moved {
        if !deploy.status.traffic_moved() {
            deployer.store.record_swap(
                &deploy.id,
                &app.name,
                &crate::deploy::followed_image(deploy, &app),
                "traffic had switched to the new containers (found by the reconciler)",
            )?;
        }
        deployer.store.finish_deploy(
            &deploy.id,
            DeployStatus::Succeeded,
            None,
            "deploy completed by the reconciler after a server restart: the new version serves; the old containers are removed",
        )?;
        report.finished += 1;
    } else {
        // Containers that take traffic stay until the route holds the old
        // set again and they drained (the orphan pass); the others go now.
        let serving: HashSet<String> = deployer
            .serving_rows(&app)?
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        let in_route: HashSet<&str> = rows
            .iter()
            .filter(|r| routed(r) && !serving.contains(&r.container_id))
            .map(|r| r.container_id.as_str())
            .collect();
        for c in deployer.runtime.list(Some(&deploy.app)).await? {
            if c.deploy == deploy.id && !in_route.contains(c.id.as_str()) {
                deployer.runtime.remove(&c.id).await?;
            }
        }
        let error = if in_route.is_empty() {
            format!(
                "the server stopped during `{}` before traffic moved; the new container was removed{}",
                deploy.status,
                if app.current_deploy.is_some() {
                    " and the previous version kept serving"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "the server stopped during `{}` with {} of {} replicas moved; the previous version was restored and the new containers removed",
                deploy.status,
                in_route.len(),
                deploy.replicas
            )
        };
        deployer.store.finish_deploy(
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
