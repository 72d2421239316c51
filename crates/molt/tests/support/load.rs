//! Continuous load through the proxy: a few tasks, each with its own
//! keep-alive client (connections are reused across swaps, as real clients
//! do), sending `GET /` with a chosen `Host` until stopped. Every response
//! is counted: a 2xx is ok, anything else (a status or an error) failed.

use super::proxy_client;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bound for one request of [`Load::start`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Load::start`] runs at most if it is never finished.
const RUN_BOUND: Duration = Duration::from_secs(180);
/// How many failure messages a report keeps (all failures are counted).
const KEPT_ERRORS: usize = 50;

/// A running load; stop it and read what it saw with [`Load::finish`].
/// Dropped unfinished (a test that panicked), its tasks stop.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    bodies: Mutex<BTreeMap<String, u64>>,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests answered with a 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or not at all.
    pub failed: u64,
    /// Why requests failed (`STATUS: body` or the client's error), the first
    /// 50 of them.
    pub errors: Vec<String>,
    /// How often each (trimmed) body of a 2xx was seen: which versions
    /// answered.
    pub bodies: BTreeMap<String, u64>,
}

impl Load {
    /// `tasks` tasks sending `GET /` to `proxy` with `Host: host`, each
    /// request bounded to 30 s, the whole run to 180 s.
    pub fn start(proxy: SocketAddr, host: &str, tasks: usize) -> Load {
        Load::start_bounded(proxy, host, tasks, REQUEST_TIMEOUT, RUN_BOUND)
    }

    /// [`start`](Self::start) with chosen bounds for one request and for the
    /// whole run.
    pub fn start_bounded(
        proxy: SocketAddr,
        host: &str,
        tasks: usize,
        request_timeout: Duration,
        run_bound: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let url = format!("http://{proxy}/");
        let deadline = Instant::now() + run_bound;
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, seen, url, host) =
                    (stop.clone(), seen.clone(), url.clone(), host.to_string());
                tokio::spawn(async move {
                    let client = proxy_client(request_timeout);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let result = client
                            .get(&url)
                            .header(reqwest::header::HOST, &host)
                            .send()
                            .await;
                        match result {
                            Ok(r) if r.status().is_success() => {
                                let body = r.text().await.unwrap_or_default();
                                seen.ok.fetch_add(1, Ordering::Relaxed);
                                *seen
                                    .bodies
                                    .lock()
                                    .unwrap()
                                    .entry(body.trim().to_string())
                                    .or_insert(0) += 1;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                seen.fail(format!("{status}: {}", body.trim()));
                            }
                            // With its causes: "error sending request" alone says little.
                            Err(e) => seen.fail(format!("{:#}", anyhow::Error::from(e))),
                        }
                    }
                })
            })
            .collect();
        Load { stop, seen, tasks }
    }

    /// Requests answered with a 2xx so far (e.g. to let the load warm up
    /// with [`super::wait_until`]).
    pub fn ok(&self) -> u64 {
        self.seen.ok.load(Ordering::Relaxed)
    }

    /// Requests that failed so far.
    pub fn failed(&self) -> u64 {
        self.seen.failed.load(Ordering::Relaxed)
    }

    /// Stops the tasks, waits for their last requests, and reports.
    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.expect("a load task panicked");
        }
        LoadReport {
            ok: self.ok(),
            failed: self.seen.failed.load(Ordering::Relaxed),
            errors: self.seen.errors.lock().unwrap().clone(),
            bodies: self.seen.bodies.lock().unwrap().clone(),
        }
    }
}

impl Seen {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < KEPT_ERRORS {
            errors.push(why);
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ok, {} failed; answers: {:?}",
            self.ok, self.failed, self.bodies
        )?;
        if !self.errors.is_empty() {
            write!(f, "; failures: {:?}", self.errors)?;
        }
        Ok(())
    }
}
