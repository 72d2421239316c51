//! External builds over the API: push targets in Molt's own registry and
//! the registration of what was pushed as a release (with the admin
//! token), and the registry's token endpoint (with a credential the server
//! issued; the registry sends clients here).

use super::{find_app, ApiFailure, ApiState};
use crate::hosted_registry::credentials::Refusal;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use molt_core::api::{PushTarget, PushTargetRequest, RegisterReleaseRequest, ReleaseView};
use std::time::Duration;

/// How long a push credential lasts unless asked otherwise, and at most.
const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[utoipa::path(post, path = "/api/v1/apps/{name}/push-target", tag = "builds", params(("name" = String, Path, description = "App name")), request_body = PushTargetRequest, responses((status = 200, description = "Where an external build pushes the App's image, with a credential for that repository alone that expires", body = PushTarget), (status = 400, description = "No registry: the server runs without --registry", body = molt_core::api::ApiError), (status = 404, body = molt_core::api::ApiError)))]
pub async fn push_target(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PushTarget>, ApiFailure> {
    // The body is optional, and read whatever its content type says (a
    // `curl -d` sends none that says JSON).
    let req: PushTargetRequest = super::optional_json(&body)?;
    let app = find_app(&s.deployer, &name)?;
    let Some(registry) = s.deployer.hosted_registry() else {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "no_registry",
            "this server runs no registry: start it with `molt server --registry 127.0.0.1:5500` (or push to a registry of your own and deploy from there)",
        ));
    };
    let ttl = req
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .clamp(Duration::from_secs(1), MAX_TTL);
    let target = registry.push_target(&app.name, ttl);
    tracing::info!(app = %app.name, username = %target.credential.username, ttl_secs = ttl.as_secs(), "issued a push credential for Molt's registry");
    Ok(Json(PushTarget {
        registry: target.registry,
        repository: target.repository,
        username: target.credential.username,
        password: target.credential.password,
        expires_in_secs: target.credential.expires_in.as_secs(),
    }))
}

/// Registers an image pushed by an external build as a release, with the
/// App's settings and environment as they are now; nothing serving changes.
#[utoipa::path(post, path = "/api/v1/apps/{name}/releases", tag = "builds", params(("name" = String, Path, description = "App name")), request_body = RegisterReleaseRequest, responses((status = 201, description = "Registered; promote it to serve it", body = ReleaseView), (status = 400, body = molt_core::api::ApiError), (status = 404, body = molt_core::api::ApiError), (status = 422, description = "The registry does not have the image, or refused the credential", body = molt_core::api::ApiError)))]
pub async fn register_release(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    super::ApiJson(req): super::ApiJson<RegisterReleaseRequest>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiFailure> {
    let r = s.deployer.register_release(&name, &req.image).await?;
    // Retention counts external releases as it counts built ones.
    if let Err(e) = s.builds.prune(&name).await {
        tracing::warn!(app = %name, error = %format!("{e:#}"), "pruning old releases failed");
    }
    Ok((
        StatusCode::CREATED,
        Json(crate::build::release_view(r, false)),
    ))
}

/// `GET /api/v1/registry/token`: the Docker token-auth endpoint. Basic
/// auth with an issued credential; answers a signed token for the scopes
/// the credential allows (`docker login` asks for none).
pub async fn registry_token(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Some(registry) = s.deployer.hosted_registry() else {
        return (StatusCode::NOT_FOUND, "this server runs no registry\n").into_response();
    };
    let Some((username, password)) = basic_auth(&headers) else {
        return refuse(
            "a credential is required: get one with a push target (`molt build --external`)",
        );
    };
    let scopes: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    match registry.token(&username, &password, &scopes) {
        Ok(answer) => Json(answer).into_response(),
        Err(Refusal::Expired) => {
            tracing::info!(%username, "refused an expired credential for Molt's registry");
            refuse("this credential has expired: ask for a new push target")
        }
        Err(Refusal::Unknown) => refuse("unknown credential"),
    }
}

/// A 401 in the shape Docker clients print.
fn refuse(message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "code": "UNAUTHORIZED", "message": message }]
    });
    let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"molt-registry\""),
    );
    resp
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}
