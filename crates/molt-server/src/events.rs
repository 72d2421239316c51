//! Live progress of a deploy as server-sent events: one `event: progress`
//! per timeline entry, then `event: end` with the finished deploy.

use crate::api::{ApiFailure, ApiState};
use crate::ops::views::deploy_view;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// How often the stream looks for new timeline entries.
const POLL: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    after: i64,
}

/// Live progress of a deploy (`text/event-stream`).
#[utoipa::path(get, path = "/api/v1/apps/{name}/deploys/{id}/events", tag = "deploys", params(("name" = String, Path, description = "App name"), ("id" = String, Path, description = "Deploy id"), ("after" = Option<i64>, Query, description = "Resume after this sequence number")), responses((status = 200, description = "`progress` events with a DeployEvent each, then one `end` event with the DeployView", content_type = "text/event-stream"), (status = 404, body = molt_core::api::ApiError)))]
pub async fn deploy_events(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    let found = s.engine.store.get_deploy(&id)?.filter(|d| d.app == name);
    if found.is_none() {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no deploy `{}` for the App `{}`",
                id.chars().take(40).collect::<String>(),
                name.chars().take(80).collect::<String>()
            ),
        ));
    }
    let store = s.engine.store.clone();
    let stream = futures_util::stream::unfold((q.after, false), move |(after, done)| {
        let store = store.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let events = store.events(&id, after).unwrap_or_default();
                if let Some(e) = events.into_iter().next() {
                    let view = molt_core::api::DeployEvent {
                        seq: e.seq,
                        at: e.at,
                        status: e.status,
                        message: e.message,
                    };
                    let data = serde_json::to_string(&view).unwrap_or_default();
                    let event = Event::default()
                        .event("progress")
                        .id(view.seq.to_string())
                        .data(data);
                    return Some((Ok(event), (view.seq, false)));
                }
                match store.get_deploy(&id) {
                    Ok(Some(d)) if d.status.is_terminal() => {
                        let data =
                            serde_json::to_string(&deploy_view(&d, Vec::new())).unwrap_or_default();
                        return Some((Ok(Event::default().event("end").data(data)), (after, true)));
                    }
                    Ok(Some(_)) => tokio::time::sleep(POLL).await,
                    _ => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
