//! The HTTP API under `/api/v1`: JSON in and out, a bearer token on every
//! route, errors as `{"error": {"code", "message"}}`.

use crate::deploy::{Engine, EngineError};
use crate::registry::{self, Credential};
use crate::store::{AppRow, DeployRow, EventRow};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use molt_core::api::{
    AddRegistryRequest, ApiError, ApiErrorBody, AppView, ContainerView, CreateAppRequest,
    DebugReport, DeployEvent, DeployRequest, DeployStarted, DeployView, EnvChangeRequest,
    EnvChanged, EnvVarView, Finding, RegistryView, RestartRequest, RollbackRequest, ScaleRequest,
};
use serde::Deserialize;
use std::sync::Arc;

/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 256 * 1024;

/// The OpenAPI document, generated from the handlers and types above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Molt API", description = "Zero-downtime deploys of container images. Every route needs `Authorization: Bearer TOKEN`."),
    paths(
        list_apps, create_app, show_app, delete_app, list_deploys, start_deploy, show_deploy,
        crate::events::deploy_events, redeploy, restart, rollback, cancel, list_env, change_env,
        list_registries, add_registry, remove_registry, openapi_json, dashboard_link, crate::logs::app_logs, debug_app,
        scale
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A one-time dashboard login link.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DashboardLink {
    /// Open it in a browser within five minutes; it works once.
    pub url: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/api/v1/dashboard-link", tag = "meta", responses((status = 200, description = "A one-time login URL for the dashboard", body = DashboardLink)))]
async fn dashboard_link(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<DashboardLink>, ApiFailure> {
    let (token, expires) = crate::dashboard::link::issue(&s.engine.sealer)?;
    // The address the client reached the API at is where the dashboard is.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1:7700");
    let expires_at = time::OffsetDateTime::from_unix_timestamp(expires as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(Json(DashboardLink {
        url: format!("http://{host}/login/link?token={token}"),
        expires_at,
    }))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    pub token: Arc<String>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/apps", get(list_apps).post(create_app))
        .route("/apps/{name}", get(show_app).delete(delete_app))
        .route("/apps/{name}/deploys", get(list_deploys).post(start_deploy))
        .route("/apps/{name}/deploys/{id}", get(show_deploy))
        .route(
            "/apps/{name}/deploys/{id}/events",
            get(crate::events::deploy_events),
        )
        .route("/apps/{name}/redeploy", post(redeploy))
        .route("/apps/{name}/restart", post(restart))
        .route("/apps/{name}/rollback", post(rollback))
        .route("/apps/{name}/cancel", post(cancel))
        .route("/apps/{name}/scale", post(scale))
        .route("/apps/{name}/env", get(list_env).patch(change_env))
        .route("/apps/{name}/logs", get(crate::logs::app_logs))
        .route("/apps/{name}/debug", get(debug_app))
        .route("/registries", get(list_registries).post(add_registry))
        .route("/openapi.json", get(openapi_json))
        .route("/dashboard-link", post(dashboard_link))
        .route("/registries/{host}", axum::routing::delete(remove_registry))
        .fallback(|| async {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route: see the CLI reference in the README",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(server_metrics))
        .nest("/api/v1", api)
        .merge(crate::dashboard::router(state.clone()))
        .with_state(state)
}

/// Prometheus text; like `/healthz` it needs no token, so scrapers work
/// without one (it names Apps, nothing secret).
async fn server_metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.engine.metrics.render(),
    )
}

/// An API error response.
pub struct ApiFailure {
    status: StatusCode,
    body: ApiError,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: ApiErrorBody {
                    code: code.to_string(),
                    message: message.into(),
                    deploy_id: None,
                },
            },
        }
    }

    /// The stable error code, for callers that show the error themselves.
    pub(crate) fn code(&self) -> &str {
        &self.body.error.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.body.error.message
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<EngineError> for ApiFailure {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            EngineError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            EngineError::Conflict { message, deploy_id } => {
                let mut f = Self::new(StatusCode::CONFLICT, "conflict", message);
                f.body.error.deploy_id = deploy_id;
                f
            }
            EngineError::Registry(r) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, r.code(), r.to_string())
            }
            EngineError::Internal(e) => internal(e),
        }
    }
}

impl From<anyhow::Error> for ApiFailure {
    fn from(e: anyhow::Error) -> Self {
        internal(e)
    }
}

fn internal(e: anyhow::Error) -> ApiFailure {
    if is_disk_full(&e) {
        tracing::error!("the data dir is out of space: {e:#}");
        return ApiFailure::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "Molt's data dir is out of space (database or disk is full), so nothing was changed: free space on its disk and try again",
        );
    }
    tracing::error!("internal error: {e:#}");
    ApiFailure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{e:#}"),
    )
}

/// Whether an error comes from a full disk (SQLite's SQLITE_FULL or ENOSPC).
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(rusqlite::Error::SqliteFailure(f, _)) = cause.downcast_ref::<rusqlite::Error>()
        {
            return f.code == rusqlite::ErrorCode::DiskFull;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::StorageFull;
        }
        cause.to_string().contains("No space left on device")
    })
}

/// `Json` whose rejections are API errors (400, 413, 415) rather than
/// plain text.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "invalid_json",
                };
                let status = if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                };
                Err(ApiFailure::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// A JSON body that may be left out (then every field takes its default).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiFailure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON for this route: {e}"),
        )
    })
}

/// Every `/api/v1` route needs `Authorization: Bearer TOKEN`; the token is
/// compared in constant time.
async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::seal::same_secret(given.as_bytes(), state.token.as_bytes()) {
        next.run(req).await
    } else {
        let mut resp = ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required: pass --token or set MOLT_TOKEN (the token is in the data dir's admin-token file)",
        )
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        resp
    }
}

/// Who asked, for the deploy history: the CLI says so in a header.
fn triggered_by(headers: &HeaderMap) -> &'static str {
    match headers.get("x-molt-client").and_then(|v| v.to_str().ok()) {
        Some("cli") => "cli",
        Some("dashboard") => "dashboard",
        _ => "api",
    }
}

// ---- views ----

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
    }
}

fn app_view(engine: &Engine, app: &AppRow) -> anyhow::Result<AppView> {
    let current = match &app.current_deploy {
        Some(id) => engine.store.get_deploy(id)?,
        None => None,
    };
    let last = engine.store.latest_deploy(&app.name)?;
    let containers = engine
        .serving_rows(app)?
        .into_iter()
        .map(|r| ContainerView {
            in_rotation: !engine.is_benched(&r.container_id),
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
        links: app.links.clone(),
        cap_add: app.cap_add.clone(),
        pids_limit: crate::confine::pids_limit(app),
        read_only: app.read_only,
        current_deploy: app.current_deploy.clone(),
        last_deploy: last.map(|d| deploy_view(&d, Vec::new())),
        created_at: app.created_at.clone(),
        updated_at: app.updated_at.clone(),
        containers,
    })
}

fn find_app(engine: &Engine, name: &str) -> Result<AppRow, ApiFailure> {
    engine.store.get_app(name)?.ok_or_else(|| {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no App named `{}`: see `molt apps list`",
                name.chars().take(80).collect::<String>()
            ),
        )
    })
}

// ---- handlers ----

#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", responses((status = 200, description = "Every App", body = Vec<AppView>)))]
async fn list_apps(State(s): State<ApiState>) -> Result<Json<Vec<AppView>>, ApiFailure> {
    let apps = s.engine.store.list_apps()?;
    let views = apps
        .iter()
        .map(|a| app_view(&s.engine, a))
        .collect::<anyhow::Result<_>>()?;
    Ok(Json(views))
}

#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", request_body = CreateAppRequest, responses((status = 201, description = "Created; the first deploy runs", body = DeployStarted), (status = 400, description = "Invalid input", body = ApiError), (status = 409, description = "The name is taken", body = ApiError), (status = 422, description = "The registry preflight failed", body = ApiError)))]
async fn create_app(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let (app, deploy) = s.engine.create_app(req, triggered_by(&headers)).await?;
    let app = s.engine.store.get_app(&app.name)?.unwrap_or(app);
    Ok((
        StatusCode::CREATED,
        Json(DeployStarted {
            app: app_view(&s.engine, &app)?,
            deploy: deploy_view(&deploy, Vec::new()),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 200, body = AppView), (status = 404, body = ApiError)))]
async fn show_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AppView>, ApiFailure> {
    let app = find_app(&s.engine, &name)?;
    Ok(Json(app_view(&s.engine, &app)?))
}

#[utoipa::path(delete, path = "/api/v1/apps/{name}", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 204, description = "Deleted with its containers, route, environment and history"), (status = 404, body = ApiError)))]
async fn delete_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    s.engine.delete_app(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/deploys", tag = "deploys", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "Newest first", body = Vec<DeployView>), (status = 404, body = ApiError)))]
async fn list_deploys(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeployView>>, ApiFailure> {
    find_app(&s.engine, &name)?;
    let deploys = s.engine.store.list_deploys(&name)?;
    Ok(Json(
        deploys.iter().map(|d| deploy_view(d, Vec::new())).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/deploys", tag = "deploys", params(("name" = String, Path, description = "App name")), request_body = DeployRequest, responses((status = 202, body = DeployStarted), (status = 409, description = "Another deploy is in progress", body = ApiError)))]
async fn start_deploy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DeployRequest>,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let (app, deploy) = s
        .engine
        .deploy(&name, &req.image, triggered_by(&headers))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeployStarted {
            app: app_view(&s.engine, &app)?,
            deploy: deploy_view(&deploy, Vec::new()),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/debug", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "What is wrong, with hints", body = DebugReport), (status = 404, body = ApiError)))]
async fn debug_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DebugReport>, ApiFailure> {
    let app = find_app(&s.engine, &name)?;
    let deploys = s.engine.store.list_deploys(&name)?;
    // The newest failed deploy that came after the serving one.
    let failed = deploys
        .iter()
        .take_while(|d| Some(&d.id) != app.current_deploy.as_ref())
        .find(|d| d.status == molt_core::DeployStatus::Failed)
        .cloned();
    let mut findings = Vec::new();
    if let Some(f) = &failed {
        findings.push(crate::debug::classify(
            f.failure.as_ref(),
            f.error.as_deref().unwrap_or_default(),
            &name,
            app.memory_bytes,
        ));
    }
    let serving = deploys
        .iter()
        .find(|d| Some(&d.id) == app.current_deploy.as_ref());
    // Every serving container; with several, each finding names its replica.
    let rows = s.engine.serving_rows(&app)?;
    let many = rows.len() > 1;
    for row in &rows {
        let container = &row.container_id;
        let (the, replica) = if many {
            (
                format!("serving container of replica {}", row.replica),
                format!(" (replica {})", row.replica),
            )
        } else {
            ("serving container".to_string(), String::new())
        };
        match s.engine.runtime.state(container).await? {
            None => findings.push(Finding {
                kind: "container_missing".into(),
                summary: format!("the {the} is gone"),
                detail: None,
                hint: format!("deploy again (`molt redeploy {name}`); the server also recreates routes when it restarts"),
            }),
            Some(state) if state.oom_killed => {
                let oom = molt_core::Failure::new(
                    molt_core::FailureKind::OomKilled,
                    "the container was killed for using more memory than its limit",
                );
                let mut f = crate::debug::classify(Some(&oom), "", &name, app.memory_bytes);
                f.summary.push_str(&replica);
                findings.push(f);
            }
            Some(state) if state.restarting || !state.running || state.restart_count > 0 => {
                let logs = s.engine.runtime.logs_tail(container, 20).await;
                findings.push(Finding {
                    kind: "crash_loop".into(),
                    summary: format!(
                        "the {the} {} (last exit code {}, restarted {} time(s) by the engine)",
                        if state.running && !state.restarting { "is running but has crashed before" } else { "keeps crashing" },
                        state.exit_code.unwrap_or(-1),
                        state.restart_count
                    ),
                    detail: (!logs.is_empty()).then_some(logs),
                    hint: format!("its last output says why; roll back with `molt rollback {name}` while you fix it"),
                });
            }
            Some(_) if s.engine.is_benched(container) => findings.push(Finding {
                kind: "health_check_failing".into(),
                summary: format!("the {the} fails its health check and is out of the proxy's rotation"),
                detail: None,
                hint: "autoheal replaces it after the failure threshold; the other replicas serve meanwhile".into(),
            }),
            Some(_) => {}
        }
    }
    Ok(Json(DebugReport {
        app: app.name.clone(),
        status: app.status,
        serving_digest: serving.and_then(|d| d.digest.clone()),
        failed_deploy: failed.map(|d| deploy_view(&d, Vec::new())),
        findings,
    }))
}

/// The answer to every request that started a deploy on an existing App.
fn started(
    s: &ApiState,
    result: (AppRow, DeployRow),
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let (app, deploy) = result;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeployStarted {
            app: app_view(&s.engine, &app)?,
            deploy: deploy_view(&deploy, Vec::new()),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/redeploy", tag = "deploys", params(("name" = String, Path, description = "App name")), responses((status = 202, body = DeployStarted), (status = 409, body = ApiError)))]
async fn redeploy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let r = s.engine.redeploy(&name, triggered_by(&headers)).await?;
    started(&s, r)
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/restart", tag = "deploys", params(("name" = String, Path, description = "App name")), request_body(content = Option<RestartRequest>), responses((status = 202, body = DeployStarted), (status = 409, body = ApiError)))]
async fn restart(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let req: RestartRequest = optional_json(&body)?;
    let r = s
        .engine
        .restart(&name, req.hard, triggered_by(&headers))
        .await?;
    started(&s, r)
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/rollback", tag = "deploys", params(("name" = String, Path, description = "App name")), request_body(content = Option<RollbackRequest>), responses((status = 202, body = DeployStarted), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn rollback(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let req: RollbackRequest = optional_json(&body)?;
    let r = s
        .engine
        .rollback(
            &name,
            req.deploy_id.as_deref(),
            req.with_config,
            triggered_by(&headers),
        )
        .await?;
    started(&s, r)
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/scale", tag = "deploys", params(("name" = String, Path, description = "App name")), request_body = ScaleRequest, responses((status = 202, description = "A `scale` deploy started: new replicas are health-checked before they join the route; removed ones drain first", body = DeployStarted), (status = 400, description = "Invalid count, unchanged, or the host cannot hold it", body = ApiError), (status = 404, body = ApiError), (status = 409, description = "Another deploy is in progress, or nothing serves yet", body = ApiError)))]
async fn scale(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ScaleRequest>,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let r = s
        .engine
        .scale(&name, req.replicas, triggered_by(&headers))
        .await?;
    started(&s, r)
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/cancel", tag = "deploys", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "The canceled deploy", body = DeployView), (status = 409, description = "Nothing to cancel", body = ApiError)))]
async fn cancel(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DeployView>, ApiFailure> {
    let id = s.engine.cancel(&name)?;
    // Wait (bounded) for the deploy to record its end, so the answer is final.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let d = s.engine.store.get_deploy(&id)?;
        match d {
            Some(d) if d.status.is_terminal() || tokio::time::Instant::now() >= deadline => {
                return Ok(Json(deploy_view(&d, Vec::new())));
            }
            None => {
                return Err(ApiFailure::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the deploy vanished",
                ))
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

fn env_views(s: &ApiState, app: &str) -> anyhow::Result<Vec<EnvVarView>> {
    Ok(s.engine
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

#[utoipa::path(get, path = "/api/v1/apps/{name}/env", tag = "env", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "Secrets have no value", body = Vec<EnvVarView>)))]
async fn list_env(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<EnvVarView>>, ApiFailure> {
    find_app(&s.engine, &name)?;
    Ok(Json(env_views(&s, &name)?))
}

#[utoipa::path(patch, path = "/api/v1/apps/{name}/env", tag = "env", params(("name" = String, Path, description = "App name")), request_body = EnvChangeRequest, responses((status = 200, body = EnvChanged), (status = 400, body = ApiError)))]
async fn change_env(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnvChangeRequest>,
) -> Result<Json<EnvChanged>, ApiFailure> {
    let set = req
        .set
        .into_iter()
        .map(|e| (e.key, e.value, e.secret))
        .collect();
    let deploy = s
        .engine
        .change_env(&name, set, req.unset, req.apply, triggered_by(&headers))
        .await?;
    Ok(Json(EnvChanged {
        env: env_views(&s, &name)?,
        deploy: deploy.map(|d| deploy_view(&d, Vec::new())),
    }))
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Only events after this sequence number (for following a deploy).
    #[serde(default)]
    after: i64,
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/deploys/{id}", tag = "deploys", params(("name" = String, Path, description = "App name"), ("id" = String, Path, description = "Deploy id"), ("after" = Option<i64>, Query, description = "Only timeline events after this sequence number")), responses((status = 200, body = DeployView), (status = 404, body = ApiError)))]
async fn show_deploy(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<DeployView>, ApiFailure> {
    let deploy = s
        .engine
        .store
        .get_deploy(&id)?
        .filter(|d| d.app == name)
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no deploy `{}` for the App `{}`: see `molt deploys {}`",
                    id.chars().take(40).collect::<String>(),
                    name.chars().take(80).collect::<String>(),
                    name.chars().take(80).collect::<String>()
                ),
            )
        })?;
    let events = s.engine.store.events(&id, q.after)?;
    Ok(Json(deploy_view(&deploy, events)))
}

#[utoipa::path(get, path = "/api/v1/registries", tag = "registries", responses((status = 200, description = "Never the secret", body = Vec<RegistryView>)))]
async fn list_registries(State(s): State<ApiState>) -> Result<Json<Vec<RegistryView>>, ApiFailure> {
    let rows = s.engine.store.list_registries()?;
    Ok(Json(
        rows.into_iter()
            .map(|r| RegistryView {
                host: r.host,
                username: r.username,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/registries", tag = "registries", request_body = AddRegistryRequest, responses((status = 201, body = RegistryView), (status = 422, description = "The registry refused the credential", body = ApiError)))]
async fn add_registry(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<AddRegistryRequest>,
) -> Result<(StatusCode, Json<RegistryView>), ApiFailure> {
    let row = save_registry(&s.engine, &req).await?;
    Ok((
        StatusCode::CREATED,
        Json(RegistryView {
            host: row.host,
            username: row.username,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }),
    ))
}

/// Verifies a registry credential with the registry, then seals and saves
/// it. Shared by the API and the dashboard, so both apply the same checks.
pub(crate) async fn save_registry(
    engine: &Engine,
    req: &AddRegistryRequest,
) -> Result<crate::store::RegistryRow, ApiFailure> {
    let host = normalize_host(&req.host)?;
    if req.username.is_empty() || req.password.is_empty() {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_credential",
            "both a username and a password (or token) are needed",
        ));
    }
    let cred = Credential {
        username: req.username.clone(),
        password: req.password.clone(),
    };
    registry::verify_credential(&host, &cred)
        .await
        .map_err(|e| ApiFailure::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()))?;
    let sealed = engine
        .sealer
        .seal(&format!("registry:{host}"), req.password.as_bytes())?;
    engine
        .store
        .upsert_registry(&host, &req.username, &sealed)?;
    let row = engine
        .store
        .get_registry(&host)?
        .ok_or_else(|| anyhow::anyhow!("the credential vanished right after it was saved"))?;
    Ok(row)
}

#[utoipa::path(delete, path = "/api/v1/registries/{host}", tag = "registries", params(("host" = String, Path, description = "Registry host")), responses((status = 204, description = "Removed"), (status = 404, body = ApiError)))]
async fn remove_registry(
    State(s): State<ApiState>,
    Path(host): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let host = normalize_host(&host)?;
    if s.engine.store.remove_registry(&host)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no credential saved for {host}: see `molt registries list`"),
        ))
    }
}

/// A registry host as images name it (`ghcr.io`, `127.0.0.1:5000`).
pub(crate) fn normalize_host(raw: &str) -> Result<String, ApiFailure> {
    let host = raw
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    };
    // Reuse the reference parser's host rules on `HOST/x`.
    match molt_core::ImageRef::parse(&format!("{host}/x")) {
        Ok(r) if r.registry == host => Ok(host),
        _ => Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_registry",
            format!(
                "`{}` is not a registry host: give one like `ghcr.io` or `127.0.0.1:5000`",
                raw.chars().take(100).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(normalize_host("https://GHCR.io/").ok().unwrap(), "ghcr.io");
        assert_eq!(
            normalize_host("127.0.0.1:5000").ok().unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_host("index.docker.io").ok().unwrap(), "docker.io");
        assert!(normalize_host("bad host").is_err());
        assert!(normalize_host("a/b").is_err());
    }
}
