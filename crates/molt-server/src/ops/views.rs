//! The read models: what an App, a deploy and an environment look like to
//! clients, built in one place for the API, the event stream and the
//! dashboard.

use crate::deploy::Deployer;
use crate::release::{diff, Release};
use crate::store::{AppRow, DeployRow, EventRow, Store};
use molt_core::api::{AppView, ContainerView, DeployEvent, DeployView, EnvVarView};
use molt_core::release::ReleaseDiff;

/// A deploy as clients see it; `events` when one deploy is asked for.
pub fn deploy_view(d: &DeployRow, events: Vec<EventRow>) -> DeployView {
    DeployView {
        id: d.id.clone(),
        app: d.app.clone(),
        kind: d.kind,
        image: d.image.clone(),
        digest: d.digest.clone(),
        status: d.status,
        error: d.error.clone(),
        failure: d.failure.clone(),
        strategy: d.strategy.clone(),
        triggered_by: d.triggered_by.clone(),
        previous_digest: d.previous_digest.clone(),
        created_at: d.created_at.clone(),
        finished_at: d.finished_at.clone(),
        events: events
            .into_iter()
            .map(|e| DeployEvent {
                seq: e.seq,
                at: e.at,
                status: e.status,
                message: e.message,
            })
            .collect(),
        changes: None,
    }
}

/// What a deploy's release changed against the deploy that served when it
/// began; `None` for an App's first deploy or when that deploy is no
/// longer in the history.
pub fn release_changes(store: &Store, d: &DeployRow) -> anyhow::Result<Option<ReleaseDiff>> {
    let Some(before) = &d.previous_deploy else {
        return Ok(None);
    };
    Ok(store
        .get_deploy(before)?
        .map(|b| diff(&Release::of(&b), &Release::of(d))))
}

pub fn app_view(deployer: &Deployer, app: &AppRow) -> anyhow::Result<AppView> {
    let current = match &app.current_deploy {
        Some(id) => deployer.store.get_deploy(id)?,
        None => None,
    };
    let last = deployer.store.latest_deploy(&app.name)?;
    let containers = deployer
        .serving_rows(app)?
        .into_iter()
        .map(|r| ContainerView {
            in_rotation: !deployer.is_out_of_rotation(&r.container_id),
            replica: r.replica,
            id: r.container_id,
            name: r.container_name,
            address: r.addr,
        })
        .collect();
    Ok(AppView {
        name: app.name.clone(),
        status: app.status,
        image: app.image.clone(),
        serving_image: current.as_ref().map(|d| d.image.clone()),
        digest: current.and_then(|d| d.digest),
        port: app.port,
        health_path: app.health.path.clone(),
        health: app.health.clone(),
        domains: app.hosts(),
        replicas: app.replicas,
        strategy: app.strategy.clone(),
        memory_bytes: app.memory_bytes,
        cpus: app.cpus,
        gpus: app.gpus,
        drain_timeout_secs: app.drain_timeout_secs,
        upstream_timeout_secs: app.upstream_timeout_secs,
        https_redirect: app.https_redirect,
        hsts_max_age_secs: app.hsts_max_age_secs,
        max_body_bytes: app
            .max_body_bytes
            .unwrap_or(molt_proxy::admin::DEFAULT_MAX_BODY_BYTES),
        tunnel_idle_timeout_secs: app
            .tunnel_idle_timeout_secs
            .unwrap_or(molt_proxy::admin::DEFAULT_TUNNEL_IDLE_MS / 1000),
        constraints: app.constraints.clone(),
        links: app.links.clone(),
        cap_add: app.cap_add.clone(),
        pids_limit: crate::confine::pids_limit(app),
        read_only: app.read_only,
        current_deploy: app.current_deploy.clone(),
        last_deploy: last.map(|d| deploy_view(&d, Vec::new())),
        created_at: app.created_at.clone(),
        updated_at: app.updated_at.clone(),
        containers,
        health_check: None,
        https: crate::certs::https_views(&deployer.store, &app.hosts())?,
    })
}

/// `app_view` with the check in force, which asks the engine about a
/// serving container (its image's `HEALTHCHECK`).
pub async fn app_view_with_check(deployer: &Deployer, app: &AppRow) -> anyhow::Result<AppView> {
    let mut view = app_view(deployer, app)?;
    let container = view.containers.first().map(|c| c.id.clone());
    view.health_check = Some(deployer.check_in_force(app, container.as_deref()).await);
    Ok(view)
}

/// An App's variables; secrets show no value.
pub fn env_views(deployer: &Deployer, app: &str) -> anyhow::Result<Vec<EnvVarView>> {
    Ok(deployer
        .store
        .env(app)?
        .into_iter()
        .map(|e| EnvVarView {
            key: e.key,
            secret: e.secret,
            value: if e.secret { None } else { e.value },
        })
        .collect())
}
