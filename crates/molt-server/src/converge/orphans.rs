//! Orphans: containers of this installation that nothing serves from and no
//! deploy in progress owns (a failed deploy's container the engine brought
//! back, an old version a crash left draining). Which containers are orphans
//! is decided only under the App's claim, from its serving set read again
//! from the store at that moment: a deploy that finished a moment ago may
//! serve from containers that any earlier reading called leftovers.

use crate::deploy::Deployer;
use crate::store::AppRow;
use anyhow::Result;
use std::collections::HashSet;
use std::time::Duration;

/// A container to remove, with the address it may still be draining at.
struct Orphan {
    id: String,
    name: String,
    addr: Option<String>,
}

/// Removes `app`'s orphans (an App that no longer exists: every container
/// labelled with its name). The caller holds the App's claim; each drain
/// (bounded by the App's drain timeout) happens under it, so a deploy waits
/// for it rather than racing it.
pub async fn remove_orphans(deployer: &Deployer, app: &str) -> Result<usize> {
    let orphans = find(deployer, app).await?;
    let removed = orphans.len();
    let row = deployer.store.get_app(app)?;
    for orphan in orphans {
        if let (Some(row), Some(addr)) = (&row, &orphan.addr) {
            drain(deployer, row, addr).await;
        }
        tracing::info!(%app, container = %orphan.name, "removing an orphan container");
        if let Err(e) = deployer.runtime.remove(&orphan.id).await {
            tracing::warn!("cannot remove the orphan {}: {e:#}", orphan.name);
        }
    }
    Ok(removed)
}

/// [`remove_orphans`] for a caller without the claim, that must not hold
/// it through long drains: the orphans are chosen under the claim, drained
/// without it, and removed under it again if they are orphans still.
/// Returns false when the App was busy (its deploy removes its leftovers).
pub async fn remove_orphans_unclaimed(deployer: &Deployer, app: &str) -> bool {
    let chosen = match claimed_soon(deployer, app, || find(deployer, app)).await {
        Some(Ok(orphans)) => orphans,
        Some(Err(e)) => {
            tracing::warn!(%app, "cannot look for orphan containers: {e:#}");
            return true;
        }
        None => return false,
    };
    if chosen.is_empty() {
        return true;
    }
    if let Ok(Some(row)) = deployer.store.get_app(app) {
        for addr in chosen.iter().filter_map(|o| o.addr.as_deref()) {
            drain(deployer, &row, addr).await;
        }
    }
    let chosen: HashSet<String> = chosen.into_iter().map(|o| o.id).collect();
    let remove = || async {
        for orphan in find(deployer, app).await? {
            if chosen.contains(&orphan.id) {
                tracing::info!(%app, container = %orphan.name, "removing an orphan container");
                deployer.runtime.remove(&orphan.id).await?;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let removed = claimed_soon(deployer, app, remove).await;
    match removed {
        Some(Err(e)) => tracing::warn!(%app, "cannot remove orphan containers: {e:#}"),
        None => tracing::info!(%app, "a deploy started while orphans drained; it removes them"),
        Some(Ok(())) => {}
    }
    true
}

/// Runs `work` under the App's claim, waiting (5 s at most) while a
/// converge holds it for a moment; `None` when a deploy holds it (the
/// deploy removes its leftovers itself when it ends).
async fn claimed_soon<T, F: std::future::Future<Output = T>>(
    deployer: &Deployer,
    app: &str,
    work: impl Fn() -> F,
) -> Option<T> {
    for _ in 0..50 {
        if let Some(done) = claimed(deployer, app, work()).await {
            return Some(done);
        }
        if deployer
            .in_progress(app)
            .is_some_and(|holder| holder != "resync")
        {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Runs `work` under the App's claim; `None` when the App is busy.
async fn claimed<T>(
    deployer: &Deployer,
    app: &str,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    deployer.claim(app, "resync").ok()?;
    let result = work.await;
    deployer.release(app);
    Some(result)
}

/// The App's orphans now: its containers that are not in the serving set
/// read from the store now, and not owned by the deploy holding the claim.
async fn find(deployer: &Deployer, app: &str) -> Result<Vec<Orphan>> {
    // A cutover the database has not recorded yet: the serving set read
    // from it is behind what the proxy routes to, so nothing is an orphan.
    if deployer.has_unrecorded_cutover(app) {
        return Ok(Vec::new());
    }
    let row = deployer.store.get_app(app)?;
    let serving: HashSet<String> = match &row {
        // A container kept across a scale keeps the label of the deploy that
        // started it, so labels alone cannot say what serves.
        Some(row) => deployer
            .serving_rows(row)?
            .into_iter()
            .map(|r| r.container_id)
            .collect(),
        None => HashSet::new(),
    };
    let owner = deployer.in_progress(app);
    let mut orphans = Vec::new();
    for c in deployer.runtime.list(Some(app)).await? {
        if serving.contains(&c.id) || owner.as_deref() == Some(c.deploy.as_str()) {
            continue;
        }
        let addr = match (&row, deployer.runtime.state(&c.id).await) {
            (Some(row), Ok(Some(state))) => deployer.runtime.upstream_addr(&state, row.port),
            _ => None,
        };
        orphans.push(Orphan {
            id: c.id,
            name: c.name,
            addr,
        });
    }
    Ok(orphans)
}

/// Lets the proxy finish the requests an orphan may still be serving.
async fn drain(deployer: &Deployer, app: &AppRow, addr: &str) {
    let _ = deployer
        .proxy
        .wait_drained(&app.name, addr, Duration::from_secs(app.drain_timeout_secs))
        .await;
}
