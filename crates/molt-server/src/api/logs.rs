//! `GET /api/v1/apps/{name}/logs`: the output of every container of an App,
//! each line prefixed with the deploy it belongs to and its replica number. Following keeps going
//! across deploys: containers that appear later are picked up within a
//! second. Everything a follow holds (a task and an engine connection per
//! container) ends as soon as the client goes away, even while a container
//! prints nothing.

use super::{ApiFailure, ApiState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<u64>,
    /// How far back, e.g. `10m`, `2h`, `30s`.
    since: Option<String>,
}

/// Parses `30s`, `10m`, `2h`, `1d` into seconds.
pub fn parse_duration(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration: write it like `30s`, `10m` or `2h`"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{raw}` is not a duration: write it like `30s`, `10m` or `2h`"
            ))
        }
    };
    n.checked_mul(scale)
        .filter(|secs| i64::try_from(*secs).is_ok())
        .ok_or_else(|| {
            format!("`{raw}` is too long a duration to count: give something like `30d` or less")
        })
}

/// The unix time `raw` (a duration such as `10m`) reaches back to from
/// `now`. Refused when it does not fit: a huge value must be a 400, not a
/// wrapped timestamp (or a panic) deep in the engine call.
fn since_timestamp(raw: &str, now: i64) -> Result<i64, String> {
    let secs = parse_duration(raw)?;
    i64::try_from(secs)
        .ok()
        .and_then(|secs| now.checked_sub(secs))
        .filter(|t| *t >= 0)
        .ok_or_else(|| {
            format!("`{raw}` reaches back further than can be counted: give something like `30d` or less")
        })
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/logs", tag = "apps", params(("name" = String, Path, description = "App name"), ("follow" = Option<bool>, Query, description = "Keep streaming, across deploys"), ("tail" = Option<u64>, Query, description = "Start with the last N lines of each container"), ("since" = Option<String>, Query, description = "Only lines newer than this, e.g. 10m")), responses((status = 200, description = "Plain text, one line per output line, prefixed with `[DEPLOY]`", content_type = "text/plain"), (status = 404, body = molt_core::api::ApiError)))]
pub async fn app_logs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiFailure> {
    // The query first: a bad `since` is the same 400 for every App name.
    let since = match &q.since {
        Some(raw) => Some(
            since_timestamp(raw, time::OffsetDateTime::now_utc().unix_timestamp())
                .map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, "invalid_since", e))?,
        ),
        None => None,
    };
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
    let runtime = s.deployer.runtime.clone();
    let (tx, rx) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut first_round = true;
        loop {
            let containers = runtime.list(Some(&name)).await.unwrap_or_default();
            for c in containers {
                if !seen.insert(c.id.clone()) {
                    continue;
                }
                // Containers that appear while following start from their
                // beginning; the first ones honour tail and since.
                let (tail, since) = if first_round {
                    (q.tail, since)
                } else {
                    (None, None)
                };
                let prefix = match c.replica {
                    Some(r) => format!("[{} #{r}] ", c.deploy),
                    None => format!("[{}] ", c.deploy),
                };
                let lines = runtime.log_lines(&c.id, q.follow, tail, since);
                tokio::spawn(forward(lines, prefix, tx.clone()));
            }
            if !q.follow {
                break;
            }
            first_round = false;
            tokio::select! {
                _ = tx.closed() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiFailure::from(anyhow::Error::from(e)))
}

/// Sends a container's output to a client, line by line, prefixed. Ends when
/// the output ends or when the client is gone: a quiet container would
/// otherwise keep this task and its engine connection until it exits.
async fn forward(
    lines: impl futures_util::Stream<Item = String>,
    prefix: String,
    tx: mpsc::Sender<String>,
) {
    futures_util::pin_mut!(lines);
    loop {
        let chunk = tokio::select! {
            _ = tx.closed() => return,
            chunk = lines.next() => chunk,
        };
        let Some(chunk) = chunk else {
            return;
        };
        for line in chunk.lines() {
            if tx.send(format!("{prefix}{line}\n")).await.is_err() {
                return;
            }
        }
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<String>,
) -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower of a container that prints nothing ends (and drops the
    /// engine's stream) once the client has gone.
    #[tokio::test]
    async fn a_quiet_follower_ends_when_the_client_goes() {
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        // Like a followed container that is silent: never a line, never the end.
        let quiet = futures_util::stream::pending::<String>().map(move |l| {
            let _ = &guard;
            l
        });
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(forward(quiet, "[d #0] ".into(), tx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        drop(rx); // the client went away
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the follower outlived its client")
            .unwrap();
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }

    /// Values whose seconds overflow are refused, not wrapped around.
    #[test]
    fn overflowing_durations_are_refused() {
        let now = 1_700_000_000;
        for raw in [
            "18446744073709551615s",
            "10000000000000000000",
            "999999999999999999d",
            "9223372036854775807s",
            "99999999999999999999999s",
        ] {
            let err = since_timestamp(raw, now).unwrap_err();
            assert!(err.contains(raw), "{err}");
        }
        assert!(parse_duration("999999999999999999d").is_err());
        assert_eq!(since_timestamp("10m", now), Ok(now - 600));
        assert_eq!(since_timestamp("0s", now), Ok(now));
    }
}
