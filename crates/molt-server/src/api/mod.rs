//! The HTTP API under `/api/v1`: JSON in and out, a bearer token on every
//! route, errors as `{"error": {"code", "message"}}`.

pub mod attach;
pub mod builds;
pub mod events;
pub mod logs;
pub mod push;

use crate::deploy::{DeployError, Deployer};
use crate::ops::registries::{normalize_host, save_registry};
use crate::ops::views::{app_view, app_view_with_check, deploy_view, env_views, release_changes};
use crate::store::{AppRow, DeployRow};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use molt_core::api::{
    AddCertRequest, AddRegistryRequest, ApiError, ApiErrorBody, AppView, CertView,
    CreateAppRequest, DebugReport, DeployRequest, DeployStarted, DeployView, EnvChangeRequest,
    EnvChanged, EnvVarView, RegistryView, RestartRequest, RollbackRequest, ScaleRequest,
    UpdateAppRequest,
};
use serde::Deserialize;

/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 256 * 1024;

/// The OpenAPI document, generated from the handlers and types above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Molt API", description = "Zero-downtime deploys of container images. Every route needs `Authorization: Bearer TOKEN`."),
    paths(
        list_apps, create_app, show_app, delete_app, list_deploys, start_deploy, show_deploy,
        events::deploy_events, redeploy, restart, rollback, cancel, list_env, change_env,
        list_registries, add_registry, remove_registry, openapi_json, dashboard_link, logs::app_logs, debug_app,
        scale, attach::run, attach::exec, attach::list_runs, update_app, push::push_target, push::register_release,
        builds::start_build, builds::show_build, builds::build_events, builds::list_releases, builds::promote,
        list_certs, add_cert, remove_cert
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
    let (token, expires) = crate::ops::login_links::issue(&s.deployer.sealer)?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(expires as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(Json(DashboardLink {
        url: login_link_url(&headers, s.deployer.console_domain(), &token),
        expires_at,
    }))
}

/// The one-time login URL at the address the client reached the API at,
/// which is where the dashboard is: over HTTPS when that was the console
/// domain through the proxy (plain HTTP there is refused by the TLS
/// listener, and would carry the token in clear).
fn login_link_url(headers: &HeaderMap, console_domain: Option<&str>, token: &str) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1:7700");
    let scheme = if crate::console::over_https(headers, console_domain) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}/login/link?token={token}")
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// The API's state is the one every HTTP surface shares.
pub use crate::ops::Shared as ApiState;

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/apps", get(list_apps).post(create_app))
        .route(
            "/apps/{name}",
            get(show_app).delete(delete_app).patch(update_app),
        )
        .route("/apps/{name}/deploys", get(list_deploys).post(start_deploy))
        .route("/apps/{name}/deploys/{id}", get(show_deploy))
        .route(
            "/apps/{name}/deploys/{id}/events",
            get(events::deploy_events),
        )
        .route("/apps/{name}/redeploy", post(redeploy))
        .route("/apps/{name}/restart", post(restart))
        .route("/apps/{name}/rollback", post(rollback))
        .route("/apps/{name}/cancel", post(cancel))
        .route("/apps/{name}/scale", post(scale))
        .route("/apps/{name}/env", get(list_env).patch(change_env))
        .route("/apps/{name}/logs", get(logs::app_logs))
        .route("/apps/{name}/debug", get(debug_app))
        .route("/apps/{name}/run", post(attach::run))
        .route("/apps/{name}/exec", post(attach::exec))
        .route("/apps/{name}/runs", get(attach::list_runs))
        .route("/apps/{name}/push-target", post(push::push_target))
        .route("/apps/{name}/builds", post(builds::start_build))
        .route("/apps/{name}/builds/{id}", get(builds::show_build))
        .route("/apps/{name}/builds/{id}/events", get(builds::build_events))
        .route(
            "/apps/{name}/releases",
            get(builds::list_releases).post(push::register_release),
        )
        .route("/apps/{name}/releases/{id}/promote", post(builds::promote))
        .route("/registries", get(list_registries).post(add_registry))
        .route("/openapi.json", get(openapi_json))
        .route("/dashboard-link", post(dashboard_link))
        .route("/registries/{host}", axum::routing::delete(remove_registry))
        .route("/certs", get(list_certs).post(add_cert))
        .route("/certs/{domain}", axum::routing::delete(remove_cert))
        .fallback(|| async {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route: see the CLI reference in the README",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    // On the API's address the metrics need the token like every API route:
    // they name every App and how its deploys went. `--metrics ADDR` serves
    // them without one on an address of their own (`metrics_router`).
    let metrics = Router::new()
        .route("/metrics", get(server_metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    // The registry's token endpoint: its clients bring a credential the
    // server issued, not the admin token.
    let registry_token = Router::new().route("/api/v1/registry/token", get(push::registry_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(metrics)
        .merge(registry_token)
        .nest("/api/v1", api)
        .with_state(state)
}

/// `GET /metrics` alone, with no token: for `molt server --metrics ADDR`,
/// an address a scraper can reach and the API's clients need not.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(server_metrics))
        .with_state(state)
}

/// Prometheus text: deploys by App, kind and outcome, their durations.
async fn server_metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.deployer.metrics.render()
            + &crate::certs::expiry_metrics(&s.deployer.store)
            + &crate::metrics::peer_metrics(&s.deployer.proxy.peers()),
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
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<DeployError> for ApiFailure {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            DeployError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            DeployError::Conflict { message, deploy_id } => {
                let mut f = Self::new(StatusCode::CONFLICT, "conflict", message);
                f.body.error.deploy_id = deploy_id;
                f
            }
            DeployError::Registry(r) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, r.code(), r.to_string())
            }
            DeployError::Internal(e) => internal(e),
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
    // The chain of causes names files, addresses and engine answers: it
    // goes to the server's log, under an id the client is given to find it.
    let id = crate::datadir::random_hex(4);
    tracing::error!(error_id = %id, "internal error: {e:#}");
    ApiFailure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        crate::ops::internal_message(&id),
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
pub(super) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiFailure> {
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
pub(crate) fn triggered_by(headers: &HeaderMap) -> &'static str {
    match headers.get("x-molt-client").and_then(|v| v.to_str().ok()) {
        Some("cli") => "cli",
        Some("dashboard") => "dashboard",
        _ => "api",
    }
}

// ---- views ----

fn find_app(deployer: &Deployer, name: &str) -> Result<AppRow, ApiFailure> {
    deployer.store.get_app(name)?.ok_or_else(|| {
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
    let apps = s.deployer.store.list_apps()?;
    let views = apps
        .iter()
        .map(|a| app_view(&s.deployer, a))
        .collect::<anyhow::Result<_>>()?;
    Ok(Json(views))
}

#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", request_body = CreateAppRequest, responses((status = 201, description = "Created; the first deploy runs", body = DeployStarted), (status = 400, description = "Invalid input", body = ApiError), (status = 409, description = "The name is taken", body = ApiError), (status = 422, description = "The registry preflight failed", body = ApiError)))]
async fn create_app(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    crate::ops::refuse_own_host(&req.domains, &headers)?;
    let (app, deploy) = s.deployer.create_app(req, triggered_by(&headers)).await?;
    let app = s.deployer.store.get_app(&app.name)?.unwrap_or(app);
    Ok((
        StatusCode::CREATED,
        Json(DeployStarted {
            app: app_view(&s.deployer, &app)?,
            deploy: deploy_view(&deploy, Vec::new()),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 200, body = AppView), (status = 404, body = ApiError)))]
async fn show_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<AppView>, ApiFailure> {
    let app = find_app(&s.deployer, &name)?;
    Ok(Json(app_view_with_check(&s.deployer, &app).await?))
}

#[utoipa::path(patch, path = "/api/v1/apps/{name}", tag = "apps", params(("name" = String, Path, description = "App name")), request_body = UpdateAppRequest, responses((status = 202, description = "A `config` deploy started: with new containers through the health-checked swap when the port, health check or resources change, or moving only the route (domains, timeouts, strategy) or the replica count; the App takes the new settings only if it succeeds", body = DeployStarted), (status = 400, description = "Invalid or unchanged settings, a domain another App serves, the host cannot hold them, or `recreate_needs_yes`: the change must stop the serving version first and `yes` was not given", body = ApiError), (status = 404, body = ApiError), (status = 409, description = "Another deploy is in progress, or nothing serves yet", body = ApiError)))]
async fn update_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UpdateAppRequest>,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    crate::ops::refuse_own_host(&req.add_domains, &headers)?;
    let r = s
        .deployer
        .update_app(&name, req, triggered_by(&headers))
        .await?;
    started(&s, r)
}

#[utoipa::path(delete, path = "/api/v1/apps/{name}", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 204, description = "Deleted with its containers, route, environment and history"), (status = 404, body = ApiError)))]
async fn delete_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    s.deployer.delete_app(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/deploys", tag = "deploys", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "Newest first", body = Vec<DeployView>), (status = 404, body = ApiError)))]
async fn list_deploys(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeployView>>, ApiFailure> {
    find_app(&s.deployer, &name)?;
    let deploys = s.deployer.store.list_deploys(&name)?;
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
        .deployer
        .deploy(&name, &req.image, triggered_by(&headers))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeployStarted {
            app: app_view(&s.deployer, &app)?,
            deploy: deploy_view(&deploy, Vec::new()),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/debug", tag = "apps", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "What is wrong, with hints", body = DebugReport), (status = 404, body = ApiError)))]
async fn debug_app(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DebugReport>, ApiFailure> {
    let app = find_app(&s.deployer, &name)?;
    Ok(Json(
        crate::ops::diagnose::diagnose(&s.deployer, &app).await?,
    ))
}

/// The answer to every request that started a deploy on an existing App.
pub(crate) fn started(
    s: &ApiState,
    result: (AppRow, DeployRow),
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let (app, deploy) = result;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeployStarted {
            app: app_view(&s.deployer, &app)?,
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
    let r = s.deployer.redeploy(&name, triggered_by(&headers)).await?;
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
        .deployer
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
        .deployer
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
        .deployer
        .scale(&name, req.replicas, triggered_by(&headers))
        .await?;
    started(&s, r)
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/cancel", tag = "deploys", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "The canceled deploy", body = DeployView), (status = 409, description = "Nothing to cancel", body = ApiError)))]
async fn cancel(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DeployView>, ApiFailure> {
    let id = s.deployer.cancel(&name)?;
    // Wait (bounded) for the deploy to record its end, so the answer is final.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let d = s.deployer.store.get_deploy(&id)?;
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

#[utoipa::path(get, path = "/api/v1/apps/{name}/env", tag = "env", params(("name" = String, Path, description = "App name")), responses((status = 200, description = "Secrets have no value", body = Vec<EnvVarView>)))]
async fn list_env(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<EnvVarView>>, ApiFailure> {
    find_app(&s.deployer, &name)?;
    Ok(Json(env_views(&s.deployer, &name)?))
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
        .deployer
        .change_env(&name, set, req.unset, req.apply, triggered_by(&headers))
        .await?;
    Ok(Json(EnvChanged {
        env: env_views(&s.deployer, &name)?,
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
        .deployer
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
    let events = s.deployer.store.events(&id, q.after)?;
    let mut view = deploy_view(&deploy, events);
    view.changes = release_changes(&s.deployer.store, &deploy)?;
    Ok(Json(view))
}

#[utoipa::path(get, path = "/api/v1/registries", tag = "registries", responses((status = 200, description = "Never the secret", body = Vec<RegistryView>)))]
async fn list_registries(State(s): State<ApiState>) -> Result<Json<Vec<RegistryView>>, ApiFailure> {
    let rows = s.deployer.store.list_registries()?;
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
    let row = save_registry(&s.deployer, &req).await?;
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

#[utoipa::path(delete, path = "/api/v1/registries/{host}", tag = "registries", params(("host" = String, Path, description = "Registry host")), responses((status = 204, description = "Removed"), (status = 404, body = ApiError)))]
async fn remove_registry(
    State(s): State<ApiState>,
    Path(host): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let host = normalize_host(&host)?;
    if s.deployer.store.remove_registry(&host)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no credential saved for {host}: see `molt registries list`"),
        ))
    }
}

#[utoipa::path(get, path = "/api/v1/certs", tag = "certs", responses((status = 200, description = "The HTTPS certificates, never their keys", body = Vec<CertView>)))]
async fn list_certs(State(s): State<ApiState>) -> Result<Json<Vec<CertView>>, ApiFailure> {
    let now = crate::certs::unix_now();
    let rows = s.deployer.store.list_certs()?;
    Ok(Json(
        rows.iter().map(|r| crate::certs::view(r, now)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/certs", tag = "certs", request_body = AddCertRequest, responses((status = 201, body = CertView), (status = 400, description = "The key does not match, the certificate expired or does not cover the domain", body = ApiError)))]
async fn add_cert(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<AddCertRequest>,
) -> Result<(StatusCode, Json<CertView>), ApiFailure> {
    let row = crate::certs::add_custom(&s.deployer, &req).await?;
    Ok((
        StatusCode::CREATED,
        Json(crate::certs::view(&row, crate::certs::unix_now())),
    ))
}

#[utoipa::path(delete, path = "/api/v1/certs/{domain}", tag = "certs", params(("domain" = String, Path, description = "The certificate's domain")), responses((status = 204, description = "Removed"), (status = 404, body = ApiError)))]
async fn remove_cert(
    State(s): State<ApiState>,
    Path(domain): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    if crate::certs::remove(&s.deployer, &domain).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no certificate for {domain}: see `molt certs list`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reached through the console domain over HTTPS, the login link is
    /// HTTPS too; at the API's own address it is plain HTTP.
    #[test]
    fn login_links_keep_the_scheme_the_client_came_over() {
        let headers = |host: &str, proto: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("host", host.parse().unwrap());
            if let Some(p) = proto {
                h.insert("x-forwarded-proto", p.parse().unwrap());
            }
            h
        };
        let console = Some("molt.example.com");
        assert_eq!(
            login_link_url(
                &headers("molt.example.com:8443", Some("https")),
                console,
                "t"
            ),
            "https://molt.example.com:8443/login/link?token=t"
        );
        assert_eq!(
            login_link_url(&headers("127.0.0.1:7700", None), console, "t"),
            "http://127.0.0.1:7700/login/link?token=t"
        );
        assert_eq!(
            login_link_url(&headers("127.0.0.1:7700", None), None, "t"),
            "http://127.0.0.1:7700/login/link?token=t"
        );
    }

    /// A client learns that something failed and where the cause is logged,
    /// never the chain of causes (paths, addresses, engine answers).
    #[test]
    fn internal_errors_do_not_show_their_cause() {
        let e = anyhow::anyhow!("open /srv/molt/data/molt.db: permission denied")
            .context("reading the App `web`");
        let f = internal(e);
        assert_eq!(f.body.error.code, "internal");
        assert!(
            !f.body.error.message.contains("/srv/molt"),
            "{}",
            f.body.error.message
        );
        assert!(
            !f.body.error.message.contains("permission"),
            "{}",
            f.body.error.message
        );
        assert!(
            f.body.error.message.contains("server's log"),
            "{}",
            f.body.error.message
        );
    }
}
