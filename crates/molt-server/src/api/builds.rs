//! Builds from source and releases: `molt build` sends its context here as
//! a tar stream, `molt releases` lists what builds made and `molt releases
//! promote` runs one.

use super::{started, triggered_by, ApiFailure, ApiState};
use crate::build::BuildError;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use molt_core::api::{BuildOptions, BuildView, DeployStarted, ReleaseView};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

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

/// A build's output as server-sent events: one `log` event per line
/// (its `id` the line's number, from 1), then one `end` event with the
/// build (without its output) once it succeeded or failed.
#[utoipa::path(get, path = "/api/v1/apps/{name}/builds/{id}/events", tag = "builds", params(("name" = String, Path, description = "App name"), ("id" = String, Path, description = "Build id"), ("after" = Option<usize>, Query, description = "Resume after this many lines")), responses((status = 200, description = "`log` events, then `end` with the BuildView", content_type = "text/event-stream"), (status = 404, body = molt_core::api::ApiError)))]
pub async fn build_events(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    // Refused at once when there is no such build.
    s.builds.view(&name, &id, usize::MAX)?;
    let state = (s, name, id, q.after, None, false);
    let stream =
        futures_util::stream::unfold(state, |(s, name, id, after, mut signal, done)| async move {
            if done {
                return None;
            }
            loop {
                // Subscribe before reading, so no line falls between the two.
                if signal.is_none() {
                    signal = s.builds.follow(&id);
                }
                let view = match s.builds.view(&name, &id, after) {
                    Ok(v) => v,
                    Err(_) => return None,
                };
                let ended = view.status != "building";
                if !view.log.is_empty() || ended {
                    let mut events: Vec<Result<Event, Infallible>> = view
                        .log
                        .iter()
                        .enumerate()
                        .map(|(i, line)| {
                            Ok(Event::default()
                                .event("log")
                                .id((after + i + 1).to_string())
                                .data(line))
                        })
                        .collect();
                    let after = after + view.log.len();
                    if ended {
                        let end = BuildView {
                            log: Vec::new(),
                            ..view
                        };
                        events.push(Ok(Event::default()
                            .event("end")
                            .data(serde_json::to_string(&end).unwrap_or_default())));
                    }
                    let next = (s, name, id, after, signal, ended);
                    return Some((futures_util::stream::iter(events), next));
                }
                let stopping = s.stopping.clone();
                match signal.as_mut() {
                    Some(rx) => tokio::select! {
                        changed = rx.changed() => if changed.is_err() { signal = None; },
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stopping.cancelled() => return None,
                    },
                    None => tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stopping.cancelled() => return None,
                    },
                }
            }
        });
    Ok(Sse::new(futures_util::StreamExt::flatten(stream)).keep_alive(KeepAlive::default()))
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
