//! The load generator: C keep-alive HTTP/1.1 connections, each a loop of
//! `GET`s, bounded by a request count and a duration.
//!
//! It counts every request exactly. A request is *ok* when it got a 2xx
//! response with its whole body; it *failed* when the connection could not be
//! made, broke before the whole response arrived (reset, closed), took longer
//! than the request timeout, or answered non-2xx. Each request is kept as a
//! [`Sample`] (start offset, latency, outcome), so any time window (e.g.
//! "while deploy 7 ran") can be summarised after the run.
//!
//! Raw `hyper::client::conn::http1` is used rather than a pooled client: each
//! task owns exactly one connection, so "keep-alive connection broken by a
//! swap" is observed as such and never hidden by a pool's retry.
//!
//! A connection the server closes *between* requests (after a complete
//! response, before the next was sent) loses no request: it is counted as an
//! idle close and the task reconnects. After a failed connect the task waits
//! `reconnect_backoff` before trying again, as a real client would, so a dead
//! target does not turn into a busy loop of millions of refused connects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Outcome codes of a [`Sample`]; HTTP statuses other than 2xx are stored as
/// the status itself (100..=599).
pub const OK: u16 = 0;
pub const CONNECT: u16 = 1;
pub const CLOSED: u16 = 2;
pub const TIMEOUT: u16 = 3;
pub const OTHER: u16 = 4;

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (Molt routes by it).
    pub host: String,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub connections: usize,
    pub max_requests: u64,
    pub max_duration: Duration,
    pub request_timeout: Duration,
    pub reconnect_backoff: Duration,
}

/// One request. 12 bytes, so a few million fit easily.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, in µs since the run started.
    pub start_us: u32,
    pub latency_us: u32,
    pub outcome: u16,
}

impl Sample {
    pub fn end_us(&self) -> u64 {
        u64::from(self.start_us) + u64::from(self.latency_us)
    }
}

/// A connection saw a different `X-Testapp-Version` than in its previous
/// response: the first responses of each new version show up here.
#[derive(Debug, Clone)]
pub struct VersionChange {
    pub version: String,
    /// When the request that got it was sent and when its response arrived.
    pub sent: Instant,
    pub received: Instant,
}

struct Shared {
    target: Target,
    cfg: LoadConfig,
    start: Instant,
    deadline: Instant,
    issued: AtomicU64,
    stop: AtomicBool,
    versions: Mutex<Vec<VersionChange>>,
    /// Messages of failures that are not an HTTP status, counted (at most
    /// 20 distinct), to say *why* requests failed.
    errors: Mutex<BTreeMap<String, u64>>,
}

#[derive(Default)]
struct ConnStats {
    samples: Vec<Sample>,
    connects: u64,
    idle_closes: u64,
}

/// A load run in progress.
pub struct LoadRun {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<ConnStats>>,
    start_wall: SystemTime,
}

/// A finished run: every request, in start order.
pub struct LoadResult {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
    /// Connections opened (including reconnects).
    pub connects: u64,
    /// Connections the server closed between two requests (no request lost).
    pub idle_closes: u64,
    pub versions: Vec<VersionChange>,
    pub errors: BTreeMap<String, u64>,
    pub start: Instant,
    pub start_wall: SystemTime,
}

impl LoadRun {
    /// Starts `cfg.connections` connection tasks on `rt` (the load
    /// generator's own runtime, so its threads are fixed whatever runs it).
    pub fn start(rt: &Handle, target: Target, cfg: LoadConfig) -> LoadRun {
        let start = Instant::now();
        let start_wall = SystemTime::now();
        let shared = Arc::new(Shared {
            deadline: start + cfg.max_duration,
            target,
            cfg,
            start,
            issued: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            versions: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
        });
        let tasks = (0..shared.cfg.connections)
            .map(|_| rt.spawn(connection_loop(shared.clone())))
            .collect();
        LoadRun {
            shared,
            tasks,
            start_wall,
        }
    }

    /// Now, in µs since the run started: marks the edges of time windows.
    pub fn now_us(&self) -> u32 {
        to_us(self.shared.start.elapsed())
    }

    /// Whether the run hit its duration or request bound.
    pub fn is_exhausted(&self) -> bool {
        Instant::now() >= self.shared.deadline
            || self.shared.issued.load(Ordering::Relaxed) >= self.shared.cfg.max_requests
    }

    /// The first response of `version` whose request was sent at or after
    /// `since`, if one arrived yet.
    pub fn first_response_of(&self, version: &str, since: Instant) -> Option<VersionChange> {
        first_of(&self.shared.versions.lock().unwrap(), version, since)
    }

    /// Stops every connection after its current request (bounded by the
    /// request timeout) and returns what was measured.
    pub async fn stop(self) -> LoadResult {
        self.shared.stop.store(true, Ordering::Relaxed);
        let elapsed = self.shared.start.elapsed();
        let bound = self.shared.cfg.request_timeout + Duration::from_secs(5);
        let mut result = LoadResult {
            samples: Vec::new(),
            elapsed,
            connects: 0,
            idle_closes: 0,
            versions: Vec::new(),
            errors: BTreeMap::new(),
            start: self.shared.start,
            start_wall: self.start_wall,
        };
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(bound, task).await {
                Ok(Ok(stats)) => {
                    result.samples.extend(stats.samples);
                    result.connects += stats.connects;
                    result.idle_closes += stats.idle_closes;
                }
                Ok(Err(e)) => eprintln!("warning: a load connection task failed: {e}"),
                Err(_) => {
                    abort.abort();
                    eprintln!("warning: a load connection did not stop within {bound:?}; its samples are lost");
                }
            }
        }
        result.samples.sort_unstable_by_key(|s| s.start_us);
        result.versions = std::mem::take(&mut *self.shared.versions.lock().unwrap());
        result.versions.sort_by_key(|v| v.received);
        result.errors = std::mem::take(&mut *self.shared.errors.lock().unwrap());
        result
    }
}

fn first_of(changes: &[VersionChange], version: &str, since: Instant) -> Option<VersionChange> {
    changes
        .iter()
        .filter(|c| c.version == version && c.sent >= since)
        .min_by_key(|c| c.received)
        .cloned()
}

fn to_us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

type Sender = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// What went wrong with a request that got no response.
fn classify(e: &hyper::Error) -> u16 {
    if e.is_timeout() {
        return TIMEOUT;
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return CLOSED;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof => CLOSED,
                TimedOut => TIMEOUT,
                _ => OTHER,
            };
        }
        source = s.source();
    }
    OTHER
}

fn note_error(shared: &Shared, message: String) {
    let mut errors = shared.errors.lock().unwrap();
    let n = errors.len();
    if let Some(c) = errors.get_mut(&message) {
        *c += 1;
    } else if n < 20 {
        errors.insert(message, 1);
    }
}

async fn connection_loop(shared: Arc<Shared>) -> ConnStats {
    let mut stats = ConnStats {
        samples: Vec::with_capacity(4096),
        ..ConnStats::default()
    };
    let cfg = &shared.cfg;
    let target = &shared.target;
    let mut sender: Option<Sender> = None;
    let mut last_version: Option<Bytes> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= shared.deadline {
            break;
        }
        // An established connection the server closed since the last
        // response lost nothing: reconnect before taking a request number.
        if let Some(s) = sender.as_mut() {
            if s.ready().await.is_err() {
                stats.idle_closes += 1;
                sender = None;
            }
        }
        if shared.issued.fetch_add(1, Ordering::Relaxed) >= cfg.max_requests {
            break;
        }
        let t0 = Instant::now();
        let start_us = to_us(t0 - shared.start);
        let record = |outcome: u16, stats: &mut ConnStats| {
            stats.samples.push(Sample {
                start_us,
                latency_us: to_us(t0.elapsed()),
                outcome,
            });
        };
        if sender.is_none() {
            match tokio::time::timeout(cfg.request_timeout, connect(target.addr)).await {
                Ok(Ok(s)) => {
                    stats.connects += 1;
                    sender = Some(s);
                }
                Ok(Err(msg)) => {
                    record(CONNECT, &mut stats);
                    note_error(&shared, msg);
                    tokio::time::sleep(cfg.reconnect_backoff).await;
                    continue;
                }
                Err(_) => {
                    record(CONNECT, &mut stats);
                    note_error(&shared, "connect: timed out".into());
                    tokio::time::sleep(cfg.reconnect_backoff).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let req = Request::get(target.path.as_str())
            .header(http::header::HOST, target.host.as_str())
            .body(Empty::<Bytes>::new())
            .expect("a GET with a valid path and host");
        let exchange = async {
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            let version = resp
                .headers()
                .get("x-testapp-version")
                .map(|v| Bytes::copy_from_slice(v.as_bytes()));
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, version))
        };
        match tokio::time::timeout(cfg.request_timeout, exchange).await {
            Ok(Ok((status, version))) => {
                let received = Instant::now();
                let outcome = if (200..300).contains(&status) {
                    OK
                } else {
                    status
                };
                record(outcome, &mut stats);
                if version.is_some() && version != last_version {
                    let v = version.clone().unwrap_or_default();
                    shared.versions.lock().unwrap().push(VersionChange {
                        version: String::from_utf8_lossy(&v).into_owned(),
                        sent: t0,
                        received,
                    });
                    last_version = version;
                }
            }
            Ok(Err(e)) => {
                let kind = classify(&e);
                record(kind, &mut stats);
                note_error(&shared, format!("request: {e}"));
                sender = None;
            }
            Err(_) => {
                record(TIMEOUT, &mut stats);
                note_error(
                    &shared,
                    format!("request: no response within {:?}", cfg.request_timeout),
                );
                sender = None;
            }
        }
    }
    stats
}

/// Latency and failure figures over a set of requests.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub total: u64,
    pub ok: u64,
    /// Failed requests by kind ("connect", "closed/reset", "timeout",
    /// "other", "HTTP 502", ...).
    pub failures: BTreeMap<String, u64>,
    /// Latency of ok requests.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Ok requests per second over the time the requests were taken from.
    pub throughput: f64,
}

impl Summary {
    pub fn failed(&self) -> u64 {
        self.total - self.ok
    }

    /// "connect 12, HTTP 502 3", or "none".
    pub fn failure_kinds(&self) -> String {
        if self.failures.is_empty() {
            return "none".into();
        }
        self.failures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn outcome_name(outcome: u16) -> String {
    match outcome {
        OK => "ok".into(),
        CONNECT => "connect".into(),
        CLOSED => "closed/reset".into(),
        TIMEOUT => "timeout".into(),
        OTHER => "other".into(),
        status => format!("HTTP {status}"),
    }
}

fn summarize<'a>(samples: impl Iterator<Item = &'a Sample>, span: Duration) -> Summary {
    let mut s = Summary::default();
    let mut lat: Vec<u32> = Vec::new();
    for sample in samples {
        s.total += 1;
        if sample.outcome == OK {
            s.ok += 1;
            lat.push(sample.latency_us);
        } else {
            *s.failures.entry(outcome_name(sample.outcome)).or_default() += 1;
        }
    }
    if !lat.is_empty() {
        lat.sort_unstable();
        let pick = |q: f64| {
            let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            Duration::from_micros(u64::from(lat[i]))
        };
        s.p50 = pick(0.50);
        s.p99 = pick(0.99);
        s.max = Duration::from_micros(u64::from(*lat.last().expect("not empty")));
    }
    if span > Duration::ZERO {
        s.throughput = s.ok as f64 / span.as_secs_f64();
    }
    s
}

impl LoadResult {
    /// Every request of the run.
    pub fn summary(&self) -> Summary {
        summarize(self.samples.iter(), self.elapsed)
    }

    /// Requests that started inside one of `windows` (µs offsets, start and
    /// end, not overlapping); the span is the windows' total length.
    pub fn summary_in(&self, windows: &[(u32, u32)]) -> Summary {
        let span: u64 = windows
            .iter()
            .map(|(a, b)| u64::from(b.saturating_sub(*a)))
            .sum();
        let mut picked: Vec<&Sample> = Vec::new();
        for &(a, b) in windows {
            let lo = self.samples.partition_point(|s| s.start_us < a);
            let hi = self.samples.partition_point(|s| s.start_us <= b);
            picked.extend(&self.samples[lo..hi]);
        }
        summarize(picked.into_iter(), Duration::from_micros(span))
    }

    /// Requests that started after `skip` from the start (a warm-up left out).
    pub fn summary_after(&self, skip: Duration) -> Summary {
        let from = to_us(skip);
        let lo = self.samples.partition_point(|s| s.start_us < from);
        summarize(self.samples[lo..].iter(), self.elapsed.saturating_sub(skip))
    }

    /// The longest stretch of the run in which no request completed ok:
    /// the outage a user of the App saw.
    pub fn longest_gap(&self) -> Duration {
        let mut ends: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.outcome == OK)
            .map(Sample::end_us)
            .collect();
        ends.sort_unstable();
        let gap = ends.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        Duration::from_micros(gap)
    }

    /// The first response of `version` whose request was sent at or after
    /// `since`.
    pub fn first_response_of(&self, version: &str, since: Instant) -> Option<VersionChange> {
        first_of(&self.versions, version, since)
    }

    /// An `Instant` of this run as Unix nanoseconds (wall clock), to compare
    /// with the server's event timestamps.
    pub fn unix_nanos(&self, at: Instant) -> i128 {
        let base = self
            .start_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        base + at.saturating_duration_since(self.start).as_nanos() as i128
            - self.start.saturating_duration_since(at).as_nanos() as i128
    }
}

/// One summary over several runs, each without its first `skip` (warm-up).
pub fn combined(runs: &[LoadResult], skip: Duration) -> Summary {
    let from = to_us(skip);
    let span = runs
        .iter()
        .map(|r| r.elapsed.saturating_sub(skip))
        .sum::<Duration>();
    summarize(
        runs.iter().flat_map(|r| {
            let lo = r.samples.partition_point(|s| s.start_us < from);
            r.samples[lo..].iter()
        }),
        span,
    )
}
