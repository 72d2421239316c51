//! Watching the engine: containers that the engine restarts (its
//! `unless-stopped` policy, an engine restart, a host reboot) may come back
//! with a new address, so the server follows the engine's events and points
//! the App's route at wherever its serving container is now. When the event
//! stream breaks (the engine restarted) it reconnects and resyncs every App.

use crate::engine::{route_for, Engine};
use futures_util::StreamExt;
use molt_proxy::admin::Target;
use std::sync::Arc;
use std::time::Duration;

/// Runs for the life of the server.
pub fn spawn(engine: Arc<Engine>) {
    tokio::spawn(async move {
        loop {
            let events = engine.runtime.events();
            futures_util::pin_mut!(events);
            // Anything may have changed while we were not listening.
            resync_all(&engine).await;
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) if matches!(e.action.as_str(), "start" | "restart" | "unpause") => {
                        resync_app(&engine, &e.app).await;
                    }
                    Ok(e) if e.action == "die" || e.action == "oom" => {
                        tracing::warn!(app = %e.app, container = %e.container, action = %e.action, "an App container stopped; the engine restarts it (unless-stopped)");
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
pub async fn settle_app(engine: &Engine, app: &str) {
    resync_app(engine, app).await;
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
    for c in containers {
        if only_these && c.app != apps[0].name {
            continue;
        }
        let app = apps.iter().find(|a| a.name == c.app);
        let serving = app.and_then(|a| a.current_deploy.as_deref()) == Some(c.deploy.as_str());
        let in_progress = engine.in_progress(&c.app).as_deref() == Some(c.deploy.as_str());
        if serving || in_progress {
            continue;
        }
        if let Some(app) = app {
            if let Ok(Some(state)) = engine.runtime.state(&c.id).await {
                if let Some(ip) = state.ip {
                    let addr = format!("{ip}:{}", app.port);
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

/// Points an App's route at its serving container's current address,
/// unless a deploy is moving it right now.
pub async fn resync_app(engine: &Engine, app: &str) {
    // Holding the App's claim keeps a deploy from swapping in between.
    if app.is_empty() || engine.claim(app, "resync").is_err() {
        return;
    }
    let name = app;
    let result = async {
        let Some(app) = engine.store.get_app(app)? else {
            return Ok(());
        };
        let Some(current) = app.current_deploy.as_ref().map(|id| engine.store.get_deploy(id)).transpose()?.flatten() else {
            return Ok(());
        };
        let Some(container) = current.container_id.clone() else {
            return Ok(());
        };
        let Some(ip) = engine.runtime.state(&container).await?.and_then(|s| s.ip) else {
            return Ok(());
        };
        let addr = format!("{ip}:{}", app.port);
        if current.target_addr.as_deref() != Some(addr.as_str()) {
            tracing::info!(app = %app.name, %addr, "the serving container has a new address; updating the route");
            engine.store.set_deploy_target(&current.id, &addr)?;
        }
        let wanted = route_for(&app, vec![Target { addr, id: container }]);
        let routes = engine.proxy.routes().await?;
        if routes.iter().find(|r| r.app == app.name) != Some(&wanted) {
            engine.proxy.set_route(wanted).await?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    engine.release(name);
    if let Err(e) = result {
        tracing::warn!(%app, "cannot resync the route: {e:#}");
    }
}
