//! Live progress of a deploy as server-sent events: one `event: progress`
//! per timeline entry, then `event: end` with the finished deploy.

use super::{ApiFailure, ApiState};
use crate::feed::Feed;
use crate::ops::views::deploy_view;
use crate::store::{DeployRow, EventRow, Store};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the stream waits for the store's feed to announce a change
/// before it reads anyway: a change the feed missed costs at most this.
const FALLBACK: Duration = Duration::from_secs(2);

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
    let found = s.deployer.store.get_deploy(&id)?.filter(|d| d.app == name);
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
    let stream = progress(
        s.deployer.store.clone(),
        id,
        q.after,
        FALLBACK,
        s.stopping.clone(),
    )
    .map(|p| {
        Ok(match p {
            Progress::Event(e) => {
                let view = molt_core::api::DeployEvent {
                    seq: e.seq,
                    at: e.at,
                    status: e.status,
                    message: e.message,
                };
                let data = serde_json::to_string(&view).unwrap_or_default();
                Event::default()
                    .event("progress")
                    .id(view.seq.to_string())
                    .data(data)
            }
            Progress::End(d) => Event::default()
                .event("end")
                .data(serde_json::to_string(&deploy_view(&d, Vec::new())).unwrap_or_default()),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What a deploy's progress stream yields.
#[derive(Debug)]
pub enum Progress {
    /// A timeline entry, in order.
    Event(EventRow),
    /// The deploy, once terminal and every entry sent; nothing follows.
    End(Box<DeployRow>),
}

struct Follow {
    store: Arc<Store>,
    id: String,
    after: i64,
    pending: VecDeque<EventRow>,
    feed: tokio::sync::broadcast::Receiver<crate::feed::DeployChange>,
    done: bool,
}

/// A deploy's timeline after `after`, then its end. It waits on the store's
/// feed between reads (or `fallback`, whichever comes first), reads on a
/// blocking thread so SQLite never stalls the async workers, and ends early
/// when the deploy vanishes or `stopping` is cancelled.
pub fn progress(
    store: Arc<Store>,
    id: String,
    after: i64,
    fallback: Duration,
    stopping: CancellationToken,
) -> impl Stream<Item = Progress> {
    let feed = store.subscribe();
    let state = Follow {
        store,
        id,
        after,
        pending: VecDeque::new(),
        feed,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| {
        let stopping = stopping.clone();
        async move {
            loop {
                if st.done {
                    return None;
                }
                if let Some(e) = st.pending.pop_front() {
                    st.after = e.seq;
                    return Some((Progress::Event(e), st));
                }
                let (store, id, after) = (Arc::clone(&st.store), st.id.clone(), st.after);
                // The status first: a terminal one read before the events
                // means those events include the last one.
                let read = tokio::task::spawn_blocking(move || {
                    anyhow::Ok((store.get_deploy(&id)?, store.events(&id, after)?))
                })
                .await;
                let Ok(Ok((Some(deploy), events))) = read else {
                    return None;
                };
                if !events.is_empty() {
                    st.pending = events.into();
                } else if deploy.status.is_terminal() {
                    st.done = true;
                    return Some((Progress::End(Box::new(deploy)), st));
                } else {
                    let id = &st.id;
                    tokio::select! {
                        _ = Feed::wait(&mut st.feed, fallback, |c| &c.deploy_id == id) => {}
                        _ = stopping.cancelled() => return None,
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::web;
    use molt_core::DeployStatus;

    #[tokio::test]
    async fn the_stream_follows_a_deploy_woken_by_the_feed() {
        let (_dir, store) = web();
        // A fallback far longer than the test: only the feed can wake it.
        let stream = progress(
            Arc::clone(&store),
            "d1".into(),
            0,
            Duration::from_secs(600),
            CancellationToken::new(),
        );
        let mut stream = Box::pin(stream);
        let wait = Duration::from_secs(10);
        let first = tokio::time::timeout(wait, stream.next()).await.unwrap();
        assert!(matches!(first, Some(Progress::Event(e)) if e.seq == 1));
        let writer = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer
                .advance("d1", DeployStatus::Pulling, "pulling")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            writer
                .finish_deploy("d1", DeployStatus::Failed, None, "failed")
                .unwrap();
        });
        let mut seen = Vec::new();
        while let Some(p) = tokio::time::timeout(wait, stream.next())
            .await
            .expect("woken by the feed")
        {
            seen.push(match p {
                Progress::Event(e) => e.message,
                Progress::End(d) => format!("end {}", d.status),
            });
        }
        assert_eq!(seen, ["pulling", "failed", "end failed"]);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_server_stops() {
        let (_dir, store) = web();
        let stopping = CancellationToken::new();
        let stream = progress(
            store,
            "d1".into(),
            1,
            Duration::from_secs(600),
            stopping.clone(),
        );
        stopping.cancel();
        let all: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
            .await
            .unwrap();
        assert!(all.is_empty());
    }
}
