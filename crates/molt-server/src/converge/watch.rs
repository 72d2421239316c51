//! Watching the engine: containers that the engine restarts (its
//! `unless-stopped` policy, an engine restart, a host reboot) may come back
//! with a new address, and containers stopped by hand (`docker stop`,
//! `docker kill`: the policy never restarts those) serve nothing until
//! someone starts them. Every container event of an App converges it, so
//! its route follows its containers and a stopped one is started again at
//! once while the proxy holds its requests. On a swarm, a node marked down
//! converges every App, so the node's lost tasks leave the routes at once.
//! When the event stream breaks (the engine restarted) it reconnects and
//! converges every App.

use super::{converge_app, converge_claimed, converge_soon, orphans, Trigger};
use crate::deploy::Deployer;
use crate::runtime::NODE_DOWN;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Runs for the life of the server.
pub fn spawn(deployer: Arc<Deployer>) {
    tokio::spawn(async move {
        let mut reconnect = false;
        loop {
            let events = deployer.runtime.events();
            futures_util::pin_mut!(events);
            if reconnect {
                interrupt_deploys(&deployer);
            }
            reconnect = true;
            // Anything may have changed while we were not listening.
            resync_all(&deployer).await;
            while let Some(event) = events.next().await {
                match event {
                    Ok(e)
                        if matches!(
                            e.action.as_str(),
                            "start" | "restart" | "unpause" | "die" | "oom"
                        ) =>
                    {
                        tracing::debug!(app = %e.app, container = %e.container, action = %e.action, "container event");
                        resync_app(&deployer, &e.app).await;
                    }
                    Ok(e) if e.action == "kill" => {
                        hold_on_signal(&deployer, &e.app, &e.container).await
                    }
                    Ok(e) if e.action == NODE_DOWN => {
                        tracing::warn!(node = %e.container, "a swarm node is down; converging every App");
                        converge_every_app(&deployer).await;
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
async fn hold_on_signal(deployer: &Arc<Deployer>, app: &str, container: &str) {
    if app.is_empty() || deployer.claim(app, "resync").is_err() {
        return;
    }
    let held = async {
        let Some(row) = deployer.store.get_app(app)? else {
            return Ok(false);
        };
        let rows = deployer.serving_rows(&row)?;
        let alone = rows.iter().any(|r| r.container_id == container)
            && rows.iter().all(|r| {
                r.container_id == container || deployer.is_out_of_rotation(&r.container_id)
            });
        if alone {
            tracing::info!(%app, "the only serving container is being signalled; holding requests");
            let held = Duration::from_secs(row.health.deploy_timeout_secs + 60);
            deployer.proxy.pause(app, held, 10_000).await?;
        }
        Ok::<bool, anyhow::Error>(alone)
    }
    .await;
    deployer.release(app);
    match held {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(%app, "cannot hold requests: {e:#}");
            return;
        }
    }
    let (deployer, app) = (Arc::clone(deployer), app.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        converge_soon(&deployer, &app, &HashSet::new()).await;
    });
}

/// The engine went away and came back: containers were stopped and
/// started again with new addresses, so deploys in flight (health checking
/// a container at its old address, half-way through a roll) are stopped
/// truthfully as failures; each then restores the old set, and the converge
/// after it points the routes at the new addresses.
fn interrupt_deploys(deployer: &Deployer) {
    let Ok(apps) = deployer.store.list_apps() else {
        return;
    };
    for app in apps {
        if deployer.in_progress(&app.name).is_some() {
            tracing::warn!(app = %app.name, "the Docker engine restarted during a deploy; stopping it");
            deployer.interrupt(
                &app.name,
                "the Docker engine restarted while the deploy ran",
            );
        }
    }
}

/// Every App converges (each under its own claim; one a deploy holds
/// converges at the deploy's end).
async fn converge_every_app(deployer: &Arc<Deployer>) {
    let Ok(apps) = deployer.store.list_apps() else {
        return;
    };
    for app in &apps {
        resync_app(deployer, &app.name).await;
    }
}

/// Every App converges, then loses its orphans (each under its own claim).
async fn resync_all(deployer: &Arc<Deployer>) {
    let Ok(apps) = deployer.store.list_apps() else {
        return;
    };
    for app in &apps {
        resync_app(deployer, &app.name).await;
        orphans::remove_orphans_unclaimed(deployer, &app.name).await;
    }
}

/// After a deploy ended: the route points at whatever serves now (the
/// engine may have moved it meanwhile), the held requests flow, and nothing
/// the deploy left remains. The caller holds the App's claim (the deploy
/// that just ended), so containers that must pass a health check first are
/// waited for here.
pub async fn settle_claimed(deployer: &Deployer, app: &str) {
    let mut admit = HashSet::new();
    for _ in 0..2 {
        match converge_app(deployer, app, Trigger::AfterDeploy, &admit).await {
            Ok(done) if !done.warming.is_empty() => {
                let Ok(Some(row)) = deployer.store.get_app(app) else {
                    break;
                };
                for warming in done.warming {
                    if let Some(addr) = &warming.addr {
                        deployer
                            .wait_serving(&row, &warming.container_id, addr)
                            .await;
                    }
                    super::warmed(deployer, &warming.container_id);
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
    if let Err(e) = orphans::remove_orphans(deployer, app).await {
        tracing::warn!(%app, "cannot remove orphan containers: {e:#}");
    }
}

/// Converges an App under its claim, unless a deploy holds it (the deploy
/// converges at its end).
pub async fn resync_app(deployer: &Arc<Deployer>, app: &str) {
    converge_claimed(deployer, app, Trigger::Event, &HashSet::new()).await;
}
