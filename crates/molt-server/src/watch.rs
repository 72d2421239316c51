//! Watching the engine: containers that the engine restarts (its
//! `unless-stopped` policy, an engine restart, a host reboot) may come back
//! with a new address, so the server follows the engine's events and points
//! the App's route at wherever its serving containers are now. A replica
//! that dies leaves the route until it runs again, so the others take its
//! requests. When the event stream breaks (the engine restarted) it
//! reconnects and resyncs every App.

use crate::deploy::{route_for, Engine};
use crate::store::ReplicaRow;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Runs for the life of the server.
pub fn spawn(engine: Arc<Engine>) {
    tokio::spawn(async move {
        let mut reconnect = false;
        loop {
            let events = engine.runtime.events();
            futures_util::pin_mut!(events);
            if reconnect {
                interrupt_deploys(&engine);
            }
            reconnect = true;
            // Anything may have changed while we were not listening.
            resync_all(&engine).await;
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) if matches!(e.action.as_str(), "start" | "restart" | "unpause") => {
                        resync_app(&engine, &e.app).await;
                    }
                    Ok(e) if e.action == "die" || e.action == "oom" => {
                        let (serving, replicas) = serving_replicas(&engine, &e.app, &e.container);
                        if serving {
                            tracing::warn!(app = %e.app, container = %e.container, action = %e.action, "a serving container stopped; the engine restarts it (unless-stopped)");
                        } else {
                            tracing::debug!(app = %e.app, container = %e.container, action = %e.action, "a container that serves nothing stopped");
                        }
                        // A serving replica of several leaves the route at
                        // once; the others take its requests until it runs
                        // again (its start event puts it back).
                        if e.action == "die" && serving && replicas > 1 {
                            resync_app(&engine, &e.app).await;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!("{err:#}");
                        break;
                    }
                }
            }
            tracing::warn!("lost the engine's event stream; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Whether `container` serves `app`, and how many containers do.
fn serving_replicas(engine: &Engine, app: &str, container: &str) -> (bool, usize) {
    let Ok(Some(app)) = engine.store.get_app(app) else {
        return (false, 0);
    };
    let rows = engine.serving_rows(&app).unwrap_or_default();
    (rows.iter().any(|r| r.container_id == container), rows.len())
}

/// The engine went away and came back: containers were stopped and
/// started again with new addresses, so deploys in flight (health checking
/// a container at its old address, half-way through a roll) are stopped
/// truthfully as failures; each then restores the old set, and the resync
/// after it points the routes at the new addresses.
fn interrupt_deploys(engine: &Engine) {
    let Ok(apps) = engine.store.list_apps() else {
        return;
    };
    for app in apps {
        if engine.in_progress(&app.name).is_some() {
            tracing::warn!(app = %app.name, "the Docker engine restarted during a deploy; stopping it");
            engine.interrupt(
                &app.name,
                "the Docker engine restarted while the deploy ran",
            );
        }
    }
}

async fn resync_all(engine: &Engine) {
    let Ok(apps) = engine.store.list_apps() else {
        return;
    };
    for app in &apps {
        resync_app(engine, &app.name).await;
    }
    remove_orphans(engine, &apps).await;
}

/// After a deploy ended: the route points at whatever serves now (the
/// engine may have moved it meanwhile) and nothing the deploy left remains.
/// The caller holds the App's claim (the deploy that just ended).
pub async fn settle_claimed(engine: &Engine, app: &str) {
    resync_claimed(engine, app).await;
    if let Ok(apps) = engine.store.list_apps() {
        let apps: Vec<_> = apps.into_iter().filter(|a| a.name == app).collect();
        if !apps.is_empty() {
            remove_orphans(engine, &apps).await;
        }
    }
}

/// Containers of this installation that no App serves from and no deploy in
/// progress owns: e.g. a failed deploy's container that the engine brought
/// back after its restart, before the deploy could remove it.
async fn remove_orphans(engine: &Engine, apps: &[crate::store::AppRow]) {
    let Ok(containers) = engine.runtime.list(None).await else {
        return;
    };
    let only_these = apps.len() == 1;
    // What serves, by container id: the rows of each App's current deploy
    // (a container kept across a scale keeps the label of the deploy that
    // started it, so labels alone cannot say).
    let mut serving: HashSet<String> = HashSet::new();
    for app in apps {
        match engine.serving_rows(app) {
            Ok(rows) => serving.extend(rows.into_iter().map(|r| r.container_id)),
            // Unsure what serves: remove nothing of this App.
            Err(_) => return,
        }
    }
    for c in containers {
        if only_these && c.app != apps[0].name {
            continue;
        }
        let app = apps.iter().find(|a| a.name == c.app);
        let in_progress = engine.in_progress(&c.app).as_deref() == Some(c.deploy.as_str());
        if serving.contains(&c.id) || in_progress {
            continue;
        }
        if let Some(app) = app {
            if let Ok(Some(state)) = engine.runtime.state(&c.id).await {
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
        }
        tracing::info!(app = %c.app, container = %c.name, "removing an orphan container");
        if let Err(e) = engine.runtime.remove(&c.id).await {
            tracing::warn!("cannot remove the orphan {}: {e:#}", c.name);
        }
    }
}

/// Points an App's route at its serving containers' current addresses
/// (those that run and are not benched by autoheal), unless a deploy is
/// moving it right now. A route is never emptied here: when no serving
/// container runs, the proxy keeps the last addresses and the engine's
/// restart brings one back.
pub async fn resync_app(engine: &Engine, app: &str) {
    // Holding the App's claim keeps a deploy from swapping in between.
    if app.is_empty() || engine.claim(app, "resync").is_err() {
        return;
    }
    resync_claimed(engine, app).await;
    engine.release(app);
}

/// [`resync_app`] for a caller that holds the App's claim.
async fn resync_claimed(engine: &Engine, app: &str) {
    let result = async {
        let Some(app) = engine.store.get_app(app)? else {
            return Ok(());
        };
        let Some(current) = app.current_deploy.clone() else {
            return Ok(());
        };
        let mut running = Vec::new();
        for row in engine.store.replicas(&current)? {
            let state = engine.runtime.state(&row.container_id).await?;
            let Some(addr) = state
                .filter(|s| s.running && !s.restarting)
                .and_then(|s| engine.runtime.upstream_addr(&s, app.port))
            else {
                continue;
            };
            if row.addr.as_deref() != Some(addr.as_str()) {
                tracing::info!(app = %app.name, replica = row.replica, %addr, "a serving container has a new address; updating the route");
                engine.store.set_replica_addr(&current, row.replica, &addr)?;
            }
            running.push(ReplicaRow {
                addr: Some(addr),
                ..row
            });
        }
        if running.is_empty() {
            return Ok(());
        }
        let wanted = route_for(&app, engine.targets(&running));
        let routes = engine.proxy.routes().await?;
        if routes.iter().find(|r| r.app == app.name) != Some(&wanted) {
            engine.proxy.set_route(wanted).await?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(%app, "cannot resync the route: {e:#}");
    }
}
