//! Builds from source and releases: `molt build` sends its context here as
//! a tar stream, `molt releases` lists what builds made and `molt releases
//! promote` runs one.

use super::{started, triggered_by, ApiFailure, ApiState};
use crate::build::BuildError;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use molt_core::api::{BuildOptions, BuildView, DeployStarted, ReleaseView};
use serde::Deserialize;

/// The header that carries a build's options as JSON.
pub const BUILD_OPTIONS_HEADER: &str = "x-molt-build";

impl From<BuildError> for ApiFailure {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            BuildError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            e @ BuildError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "context_too_large",
                e.to_string(),
            ),
            BuildError::Internal(e) => e.into(),
        }
    }
}

/// Starts a build of the tar stream in the body.
#[utoipa::path(post, path = "/api/v1/apps/{name}/builds", tag = "builds", params(("name" = String, Path, description = "App name"), ("X-Molt-Build" = Option<String>, Header, description = "BuildOptions as JSON")), request_body(content = String, content_type = "application/x-tar", description = "The build context"), responses((status = 202, description = "Received; the build runs (follow it with GET .../builds/{id})", body = BuildView), (status = 400, body = molt_core::api::ApiError), (status = 404, body = molt_core::api::ApiError), (status = 413, description = "The context is over the server's limit (the message says it)", body = molt_core::api::ApiError)))]
pub async fn start_build(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<BuildView>), ApiFailure> {
    let headers = req.headers();
    let opts: BuildOptions = match headers.get(BUILD_OPTIONS_HEADER) {
        Some(v) => serde_json::from_slice(v.as_bytes()).map_err(|e| {
            ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_build_options",
                format!("the {BUILD_OPTIONS_HEADER} header is not valid build options: {e}"),
            )
        })?,
        None => BuildOptions::default(),
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = req.into_body().into_data_stream();
    let build = s.builds.start(&name, opts, declared, body).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.builds.view(&name, &build.id, 0)?),
    ))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    after: usize,
}

/// A build, with its output from line `after` on.
#[utoipa::path(get, path = "/api/v1/apps/{name}/builds/{id}", tag = "builds", params(("name" = String, Path, description = "App name"), ("id" = String, Path, description = "Build id"), ("after" = Option<usize>, Query, description = "Only output after this many lines")), responses((status = 200, body = BuildView), (status = 404, body = molt_core::api::ApiError)))]
pub async fn show_build(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<BuildView>, ApiFailure> {
    Ok(Json(s.builds.view(&name, &id, q.after)?))
}

/// An App's releases, newest first.
#[utoipa::path(get, path = "/api/v1/apps/{name}/releases", tag = "builds", params(("name" = String, Path, description = "App name")), responses((status = 200, body = Vec<ReleaseView>), (status = 404, body = molt_core::api::ApiError)))]
pub async fn list_releases(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiFailure> {
    Ok(Json(s.builds.releases(&name)?))
}

/// Runs a release through the health-checked swap.
#[utoipa::path(post, path = "/api/v1/apps/{name}/releases/{id}/promote", tag = "builds", params(("name" = String, Path, description = "App name"), ("id" = String, Path, description = "Release id")), responses((status = 202, body = DeployStarted), (status = 404, body = molt_core::api::ApiError), (status = 409, body = molt_core::api::ApiError)))]
pub async fn promote(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<DeployStarted>), ApiFailure> {
    let r = s
        .deployer
        .promote(&name, &id, triggered_by(&headers))
        .await?;
    started(&s, r)
}
