//! Watching the engine: containers that the engine restarts (its
//! `unless-stopped` policy, an engine restart, a host reboot) may come back
//! with a new address, and containers stopped by hand (`docker stop`,
//! `docker kill`: the policy never restarts those) serve nothing until
//! someone starts them. Every container event of an App converges it, so
//! its route follows its containers and a stopped one is started again at
//! once while the proxy holds its requests. When the event stream breaks
//! (the engine restarted) it reconnects and converges every App.

use super::{converge_app, converge_claimed, converge_soon, orphans, Trigger};
use crate::deploy::Engine;
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
                    Ok(e)
                        if matches!(
                            e.action.as_str(),
                            "start" | "restart" | "unpause" | "die" | "oom"
                        ) =>
                    {
                        tracing::debug!(app = %e.app, container = %e.container, action = %e.action, "container event");
                        resync_app(&engine, &e.app).await;
                    }
                    Ok(e) if e.action == "kill" => {
                        hold_on_signal(&engine, &e.app, &e.container).await
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

/// `docker stop` and `docker kill` announce themselves with a `kill` event
/// as the signal goes out, while the engine reports the exit (`die`) only
/// after it tore the container's network down, a tenth of a second or more
/// later. When the signalled container is the App's only one in rotation,
/// its requests are held from the signal on, so none meets a closed port
/// meanwhile; the converge after the `die` starts it again. A signal that
/// does not stop it (a reload) has its requests released a second later.
async fn hold_on_signal(engine: &Arc<Engine>, app: &str, container: &str) {
    if app.is_empty() || engine.claim(app, "resync").is_err() {
        return;
    }
    let held = async {
        let Some(row) = engine.store.get_app(app)? else {
            return Ok(false);
        };
        let rows = engine.serving_rows(&row)?;
        let alone = rows.iter().any(|r| r.container_id == container)
            && rows
                .iter()
                .all(|r| r.container_id == container || engine.is_benched(&r.container_id));
        if alone {
            tracing::info!(%app, "the only serving container is being signalled; holding requests");
            let held = Duration::from_secs(row.health.deploy_timeout_secs + 60);
            engine.proxy.pause(app, held, 10_000).await?;
        }
        Ok::<bool, anyhow::Error>(alone)
    }
    .await;
    engine.release(app);
    match held {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(%app, "cannot hold requests: {e:#}");
            return;
        }
    }
    let (engine, app) = (Arc::clone(engine), app.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        converge_soon(&engine, &app, &HashSet::new()).await;
    });
}

/// The engine went away and came back: containers were stopped and
/// started again with new addresses, so deploys in flight (health checking
/// a container at its old address, half-way through a roll) are stopped
/// truthfully as failures; each then restores the old set, and the converge
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

/// Every App converges, then loses its orphans (each under its own claim).
async fn resync_all(engine: &Arc<Engine>) {
    let Ok(apps) = engine.store.list_apps() else {
        return;
    };
    for app in &apps {
        resync_app(engine, &app.name).await;
        orphans::remove_orphans_unclaimed(engine, &app.name).await;
    }
}

/// After a deploy ended: the route points at whatever serves now (the
/// engine may have moved it meanwhile), the held requests flow, and nothing
/// the deploy left remains. The caller holds the App's claim (the deploy
/// that just ended), so containers that must pass a health check first are
/// waited for here.
pub async fn settle_claimed(engine: &Engine, app: &str) {
    let mut admit = HashSet::new();
    for _ in 0..2 {
        match converge_app(engine, app, Trigger::AfterDeploy, &admit).await {
            Ok(done) if !done.warming.is_empty() => {
                let Ok(Some(row)) = engine.store.get_app(app) else {
                    break;
                };
                for warming in done.warming {
                    if let Some(addr) = &warming.addr {
                        engine.wait_serving(&row, addr).await;
                    }
                    super::warmed(&warming.container_id);
                    admit.insert(warming.container_id);
                }
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(%app, "cannot converge after the deploy: {e:#}");
                break;
            }
        }
    }
    if let Err(e) = orphans::remove_orphans(engine, app).await {
        tracing::warn!(%app, "cannot remove orphan containers: {e:#}");
    }
}

/// Converges an App under its claim, unless a deploy holds it (the deploy
/// converges at its end).
pub async fn resync_app(engine: &Arc<Engine>, app: &str) {
    converge_claimed(engine, app, Trigger::Event, &HashSet::new()).await;
}
