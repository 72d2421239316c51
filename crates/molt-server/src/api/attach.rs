//! The attach endpoints of `molt run` and `molt exec`. The request is an
//! ordinary POST with a JSON body and the token, so every refusal is an
//! ordinary API error; once the process started, the answer is
//! `101 Switching Protocols` (`Upgrade: molt-attach`) and the connection
//! carries frames both ways (`molt_core::attach`): stdin to the process,
//! its stdout, stderr and finally its exit to the client. An HTTP/1.1
//! upgrade needs no WebSocket stack on either side and passes through the
//! reverse proxies that pass WebSockets.

use super::{triggered_by, ApiFailure, ApiState};
use crate::ops::oneoff::{self, Started};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use molt_core::attach::{ExecRequest, RunRequest, RunView, PROTOCOL};

/// Request bodies larger than this are refused.
const BODY_LIMIT: usize = 256 * 1024;

/// Refuses a request that does not ask for the attach stream.
fn wants_upgrade(headers: &HeaderMap) -> Result<(), ApiFailure> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if upgrade.eq_ignore_ascii_case(PROTOCOL) {
        return Ok(());
    }
    Err(ApiFailure::new(
        StatusCode::BAD_REQUEST,
        "upgrade_required",
        format!("this endpoint streams the command's input and output: send `Connection: Upgrade` and `Upgrade: {PROTOCOL}` (the CLI does: `molt run`, `molt exec`)"),
    ))
}

async fn body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiFailure> {
    let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over {BODY_LIMIT} bytes"),
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON for this route: {e}"),
        )
    })
}

/// Answers 101 and hands the upgraded connection to the process.
fn upgrade(s: &ApiState, on_upgrade: hyper::upgrade::OnUpgrade, started: Started) -> Response {
    let stopping = s.stopping.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(upgraded) => Some(TokioIo::new(upgraded)),
            Err(e) => {
                tracing::info!("the attach stream's client left before it was upgraded: {e}");
                None
            }
        };
        started.attach(io, stopping).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .unwrap_or_default()
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/run", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body = RunRequest,
    description = "Runs a command in a one-off container of the App's serving deploy (or of the deploy `release`, or of `image`), with its environment, limits and network and no route. Send `Connection: Upgrade` and `Upgrade: molt-attach`; the answer is 101 and the connection then carries frames (1 byte kind, 4 bytes big-endian length, payload): client to server 0 = stdin, 4 = end of stdin; server to client 1 = stdout, 2 = stderr, 3 = exit (JSON `{exit_code, message}`, last). The container is removed when the command ends, the client disconnects or `timeout_secs` is reached (exit 124). The run is recorded (`GET /api/v1/apps/{name}/runs`).",
    responses(
        (status = 101, description = "Switching to the attach stream"),
        (status = 400, description = "An empty command, a bad reference or variable, a pull that failed, or no upgrade asked", body = molt_core::api::ApiError),
        (status = 404, description = "No such App or deploy", body = molt_core::api::ApiError),
        (status = 409, description = "The App has no serving version yet", body = molt_core::api::ApiError)
    ))]
pub async fn run(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    wants_upgrade(&headers)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body_req: RunRequest = body(req).await?;
    let (deployer, who) = (s.deployer.clone(), triggered_by(&headers));
    // On a task of its own: a client that leaves while the container is
    // being created must not cancel this half-way; the `Started` it ends
    // with, dropped unused, removes the container.
    let started =
        tokio::spawn(async move { oneoff::start_run(&deployer, &name, body_req, who).await })
            .await
            .map_err(|e| anyhow::anyhow!("starting the run failed: {e}"))??;
    Ok(upgrade(&s, on_upgrade, started))
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/exec", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body = ExecRequest,
    description = "Runs a command inside a serving container of the App (replica `replica`, default 0), through the engine's exec. The same upgrade and frames as `/run`.",
    responses(
        (status = 101, description = "Switching to the attach stream"),
        (status = 400, description = "An empty command, the engine refusing it, or no upgrade asked", body = molt_core::api::ApiError),
        (status = 404, description = "No such App or replica", body = molt_core::api::ApiError),
        (status = 409, description = "The App has no serving container yet", body = molt_core::api::ApiError)
    ))]
pub async fn exec(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    wants_upgrade(&headers)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body_req: ExecRequest = body(req).await?;
    let started = oneoff::start_exec(&s.deployer, &name, body_req).await?;
    Ok(upgrade(&s, on_upgrade, started))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/runs", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    responses(
        (status = 200, description = "The App's `molt run`s, newest first: who, what command, exit code, duration (never the output)", body = Vec<RunView>),
        (status = 404, body = molt_core::api::ApiError)
    ))]
pub async fn list_runs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiFailure> {
    if s.deployer.store.get_app(&name)?.is_none() {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no App named `{}`: see `molt apps list`",
                name.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(Json(s.deployer.store.list_runs(&name)?))
}
