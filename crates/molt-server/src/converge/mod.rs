//! The one reconciler: a level-triggered `converge` that makes an App's
//! containers, its records, its route and its pause agree, whatever event
//! (or none) led here. It runs at start-up ([`startup`]), after the Docker
//! engine's container events ([`watch`]), after every deploy
//! ([`watch::settle_claimed`]) and when autoheal moves a replica in or out of
//! rotation ([`autoheal`]). The caller holds the App's claim, so no deploy
//! moves the route meanwhile; nothing here waits for a health check.

pub mod autoheal;
pub(crate) mod orphans;
pub mod startup;
pub mod watch;

use crate::deploy::{route_for, short, Deployer};
use crate::runtime::{ContainerState, UpstreamMode};
use crate::store::ReplicaRow;
use anyhow::Result;
use molt_core::AppStatus;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub use orphans::remove_orphans;

/// Who asks: decides what converge may change besides containers and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The server starts: every record is settled, nothing else runs.
    Startup,
    /// A container event or autoheal, under a claim of its own.
    Event,
    /// A deploy ends under its claim; it records the App's status itself.
    AfterDeploy,
}

/// What converge left for its caller to do outside the claim.
#[derive(Debug, Default)]
pub struct Converged {
    /// Serving containers that run but are not in the route yet (started
    /// just now, or brought back by the engine): each joins once healthy.
    pub warming: Vec<ReplicaRow>,
    /// Serving replicas that are gone or cannot start: each needs a fresh
    /// container through a deploy (which takes the claim itself).
    pub replace: Vec<u32>,
}

/// Brings one App's containers, records, route and pause into agreement.
/// `admit` names containers that take requests even though they are not in
/// the route yet (their health wait ended). The caller holds the claim.
pub async fn converge_app(
    deployer: &Deployer,
    name: &str,
    trigger: Trigger,
    admit: &HashSet<String>,
) -> Result<Converged> {
    let mut done = Converged::default();
    // A cutover the proxy took and the database has not recorded yet: the
    // record is behind what serves, so nothing is converged from it.
    if !deployer.heal_cutover(name).await {
        return Ok(done);
    }
    let Some(app) = deployer.store.get_app(name)? else {
        return Ok(done);
    };
    if app.status == AppStatus::Deleting {
        // A delete was interrupted (it holds the claim while it runs).
        deployer.proxy.remove_route(&app.name).await?;
        for c in deployer.runtime.list(Some(&app.name)).await? {
            deployer.runtime.remove(&c.id).await?;
        }
        deployer.store.delete_app(&app.name)?;
        return Ok(done);
    }
    let route = deployer
        .proxy
        .routes()
        .await?
        .into_iter()
        .find(|r| r.app == app.name);
    let current = match &app.current_deploy {
        Some(id) => deployer.store.get_deploy(id)?,
        None => None,
    };
    let Some(current) = current else {
        // Nothing serves: at start-up a route left behind goes, and the App
        // is failed (a deploy in flight records its own status).
        if trigger == Trigger::Startup {
            if route.is_some() {
                deployer.proxy.remove_route(&app.name).await?;
            }
            deployer
                .store
                .set_app_status(&app.name, AppStatus::Failed)?;
        }
        return Ok(done);
    };

    // Containers ↔ store: every serving container runs, at a recorded address.
    let routed = |row: &ReplicaRow| {
        route.as_ref().is_some_and(|r| {
            r.targets
                .iter()
                .any(|t| Some(&t.addr) == row.addr.as_ref() && t.id == row.container_id)
        })
    };
    let rows = deployer.store.replicas(&current.id)?;
    let coming_back = !rows.is_empty();
    let mut states = Vec::new();
    for row in rows {
        let state = deployer.runtime.state(&row.container_id).await?;
        states.push((row, state));
    }
    // Containers out of rotation stay out by `targets`; a container already routed at its
    // address keeps its place; any other earns it with a health check.
    let ready = |row: &ReplicaRow| {
        let c = &row.container_id;
        !warming(deployer, c) && (routed(row) || deployer.is_out_of_rotation(c))
            || admit.contains(c)
    };
    let with_addr = |row: &ReplicaRow, state: &ContainerState| {
        deployer
            .runtime
            .upstream_addr(state, app.port)
            .map(|addr| ReplicaRow {
                addr: Some(addr),
                ..row.clone()
            })
    };
    let serves = states.iter().any(|(row, state)| {
        state
            .as_ref()
            .filter(|s| s.running && !s.restarting)
            .and_then(|s| with_addr(row, s))
            .is_some_and(|r| ready(&r))
    });
    // Nothing takes requests: hold them before anything slow happens.
    // (Pausing a paused route, or resuming one that is not, changes nothing.)
    if coming_back && !serves {
        tracing::info!(app = %app.name, "no serving container takes requests; holding them");
        let held = Duration::from_secs(app.health.deploy_timeout_secs + 60);
        deployer.proxy.pause(&app.name, held, 10_000).await?;
    }

    let mut in_service = Vec::new();
    // What the history tells, once the route is without them.
    let mut lost = Vec::new();
    for (row, state) in states {
        let container = row.container_id.clone();
        let Some(mut state) = state else {
            tracing::warn!(app = %app.name, replica = row.replica, "the serving container {} is gone; replacing it", short(&container));
            done.replace.push(row.replica);
            continue;
        };
        if let Some(node) = &state.lost_node {
            // Its node is down: the other replicas serve, and a replacement
            // is placed on another node and health-checked before it joins.
            if routed(&row) {
                lost.push(format!(
                    "node {node} is down: replica {} left the route",
                    row.replica
                ));
            }
            done.replace.push(row.replica);
            continue;
        }
        if state.restarting {
            // The engine's restart policy brings it back; its start event
            // converges again.
            continue;
        }
        let mut started = false;
        if !state.running {
            // Nobody restarts it (`docker stop`, `docker kill`, an interrupted
            // deploy): start it again now.
            tracing::warn!(app = %app.name, replica = row.replica, "the serving container {} stopped; starting it again", short(&container));
            if let Err(e) = deployer.runtime.start_existing(&container).await {
                tracing::warn!(app = %app.name, replica = row.replica, "cannot start {} again ({e:#}); replacing it", short(&container));
                done.replace.push(row.replica);
                continue;
            }
            started = true;
            deployer.warming().entry(container.clone()).or_insert(false);
            state = deployer.runtime.state(&container).await?.unwrap_or(state);
        }
        let recorded = row.addr.clone();
        let Some(row) = with_addr(&row, &state) else {
            continue;
        };
        if let Some(addr) = row
            .addr
            .as_deref()
            .filter(|a| recorded.as_deref() != Some(*a))
        {
            tracing::info!(app = %app.name, replica = row.replica, %addr, "a serving container has a new address");
            deployer
                .store
                .set_replica_addr(&current.id, row.replica, addr)?;
        }
        if !started && ready(&row) {
            in_service.push(row);
        } else {
            done.warming.push(row);
        }
    }

    // Route and pause: requests go to what serves. A warming container
    // joins at once beside others where a connection to it is refused until
    // it listens (the proxy sends the request on to another target); behind
    // a published port the engine's port proxy accepts the connection and
    // drops it, which fails the request, so there it joins once healthy.
    // Alone, it joins once healthy while the proxy holds the requests
    // instead of failing them. A route is never emptied here.
    if in_service.is_empty() {
        // Each serving container is warming, restarting or being replaced:
        // the hold above stays until one takes requests.
        if !coming_back {
            deployer.proxy.resume(&app.name).await?;
        }
    } else {
        let ready = in_service.len();
        in_service.extend(done.warming.iter().cloned());
        let routed = if warming_joins_at_once(deployer.runtime.upstream()) {
            &in_service[..]
        } else {
            &in_service[..ready]
        };
        let wanted = route_for(&app, deployer.targets(routed));
        if route.as_ref() != Some(&wanted) {
            deployer.proxy.set_route(wanted).await?;
        }
        // Held requests (a hold above, an interrupted recreate) flow now.
        deployer.proxy.resume(&app.name).await?;
    }
    for message in lost {
        tracing::warn!(app = %app.name, "{message}");
        if let Err(e) = deployer.store.event(&current.id, &message) {
            tracing::warn!(app = %app.name, "cannot record that {message}: {e:#}");
        }
    }

    // The App's status: `recovering` while none of its containers takes
    // requests or a lost replica waits for its replacement.
    let status = if in_service.len() == done.warming.len() || !done.replace.is_empty() {
        AppStatus::Recovering
    } else {
        AppStatus::Running
    };
    let ours = match trigger {
        Trigger::Startup => true,
        Trigger::Event => matches!(
            app.status,
            AppStatus::Running | AppStatus::Recovering | AppStatus::Failed
        ),
        Trigger::AfterDeploy => false,
    };
    if ours && app.status != status {
        deployer.store.set_app_status(&app.name, status)?;
    }
    Ok(done)
}

/// Converges an App under a claim of its own, then follows up outside it:
/// waits for warming containers and replaces lost ones. Returns false when
/// the App was busy (a deploy in progress converges at its end).
pub async fn converge_claimed(
    deployer: &Arc<Deployer>,
    app: &str,
    trigger: Trigger,
    admit: &HashSet<String>,
) -> bool {
    if app.is_empty() || deployer.claim(app, "resync").is_err() {
        return false;
    }
    let result = converge_app(deployer, app, trigger, admit).await;
    deployer.release(app);
    match result {
        Ok(done) => follow_up(deployer, app, done),
        Err(e) => tracing::warn!(%app, "cannot converge: {e:#}"),
    }
    true
}

/// [`converge_claimed`], retried while another converge holds the claim for
/// a moment; a deploy that holds it converges at its end by itself.
pub async fn converge_soon(deployer: &Arc<Deployer>, app: &str, admit: &HashSet<String>) {
    for _ in 0..50 {
        if converge_claimed(deployer, app, Trigger::Event, admit).await
            || deployer
                .in_progress(app)
                .is_some_and(|holder| holder != "resync")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(%app, "the App stayed busy; the next event converges it");
}

/// Whether a warming container joins the route beside serving ones before
/// its health check passes: only where a connection to it is refused until
/// it listens, so the proxy sends the request on to another target. Behind
/// a published port (a swarm, `--upstream published`) the engine's port
/// proxy accepts the connection and drops it, failing the request.
fn warming_joins_at_once(upstream: UpstreamMode) -> bool {
    upstream == UpstreamMode::Bridge
}

/// A container's health wait ended (passed or timed out).
fn warmed(deployer: &Deployer, container: &str) {
    deployer.warming().remove(container);
}

fn warming(deployer: &Deployer, container: &str) -> bool {
    deployer.warming().contains_key(container)
}

/// The background half of a converge: each warming container joins the
/// route once its health check passes (or its deploy timeout ends: a
/// container that never passes is autoheal's to judge); each lost replica
/// is replaced through a deploy.
pub fn follow_up(deployer: &Arc<Deployer>, app: &str, done: Converged) {
    for row in done.warming {
        let waited = deployer.warming().insert(row.container_id.clone(), true);
        if waited == Some(true) {
            continue;
        }
        let (deployer, app) = (Arc::clone(deployer), app.to_string());
        tokio::spawn(async move {
            let container = row.container_id.clone();
            if let (Ok(Some(app_row)), Some(addr)) = (deployer.store.get_app(&app), &row.addr) {
                if !deployer.wait_serving(&app_row, &container, addr).await {
                    tracing::warn!(%app, replica = row.replica, "container {} is not healthy within the deploy timeout; routing it anyway", short(&container));
                }
            }
            warmed(&deployer, &container);
            converge_soon(&deployer, &app, &HashSet::from([container])).await;
        });
    }
    if let Some(&replica) = done.replace.first() {
        let (deployer, app) = (Arc::clone(deployer), app.to_string());
        tokio::spawn(async move {
            let many = deployer
                .store
                .get_app(&app)
                .ok()
                .flatten()
                .is_some_and(|a| a.replicas > 1);
            let started = if many {
                deployer.replace_replica(&app, replica, "converge").await
            } else {
                deployer.restart(&app, false, "converge").await
            };
            if let Err(e) = started {
                tracing::warn!(%app, "cannot replace a lost serving container: {e}");
            }
        });
    }
}
