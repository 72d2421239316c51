//! Upgrading the proxy in place with the real `molt` binary: while clients
//! keep sending (keep-alive and fresh connections), a second
//! `molt proxy --takeover` takes the listening socket over from the running
//! one. No request may fail or be refused; the old process exits by itself;
//! the new one owns the admin socket, the pid file and the routes.
//!
//! Plain processes and sockets only (no Docker): the upstream is a tiny
//! HTTP/1.1 responder in the test, and the clients speak raw HTTP/1.1 so
//! that every failure is counted, none retried away. All traffic goes to
//! 127.0.0.1; every loop is bounded in time and count.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_proxy::admin::{Route, Target, PID_FILE};
use molt_proxy::AdminClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "up.test";
/// Every wait for a condition is bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the clients keep sending, in all.
const LOAD_FOR: Duration = Duration::from_secs(3);
/// Per client task, whatever the time.
const MAX_REQUESTS_PER_TASK: usize = 50_000;

/// A `molt proxy` process, killed on drop if still running.
struct ProxyProcess(Child);

impl ProxyProcess {
    fn start(dir: &Path, listen: SocketAddr, takeover: bool, log: &str) -> ProxyProcess {
        let log = std::fs::File::create(dir.join(log)).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_molt"));
        cmd.arg("proxy")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if takeover {
            cmd.arg("--takeover");
        }
        ProxyProcess(cmd.spawn().expect("start molt proxy"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `PATIENCE`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 App: answers every request `ok`, keep-alive.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                loop {
                    // One request: lines up to the empty one (GETs only).
                    loop {
                        line.clear();
                        match read.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One GET on `conn`; returns whether the proxy asked to close.
async fn get(conn: &mut BufReader<TcpStream>) -> anyhow::Result<bool> {
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        anyhow::bail!("connection closed before the status line");
    }
    if !line.starts_with("HTTP/1.1 200 ") {
        anyhow::bail!("status line `{}`", line.trim_end());
    }
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            anyhow::bail!("connection closed in the headers");
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>()?);
        }
        if header.starts_with("connection:") && header.contains("close") {
            close = true;
        }
    }
    let Some(length) = length else {
        anyhow::bail!("no content-length");
    };
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    if body != b"ok" {
        anyhow::bail!("body `{}`", String::from_utf8_lossy(&body));
    }
    Ok(close)
}

#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    failed: AtomicUsize,
    /// Keep-alive connections the proxy closed cleanly (`Connection: close`
    /// on a response): how the old proxy moves its clients on.
    closed_by_proxy: AtomicUsize,
    /// The first few failures, to explain an assertion.
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, e: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 10 {
            errors.push(format!("{e:#}"));
        }
    }
}

/// Sends GETs until `stop`, on one keep-alive connection (reopened when the
/// proxy says `Connection: close`) or on a fresh connection each.
async fn client(proxy: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    for _ in 0..MAX_REQUESTS_PER_TASK {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tally.sent.fetch_add(1, Ordering::SeqCst);
        let mut stream = match conn.take() {
            Some(stream) => stream,
            None => match TcpStream::connect(proxy).await {
                Ok(stream) => BufReader::new(stream),
                Err(e) => {
                    tally.fail(anyhow::anyhow!("connect: {e}"));
                    continue;
                }
            },
        };
        match get(&mut stream).await {
            Ok(false) if keep_alive => conn = Some(stream),
            Ok(true) if keep_alive => {
                tally.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => tally.fail(e.context(if keep_alive { "keep-alive" } else { "fresh" })),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_under_load_loses_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let upstream = upstream().await;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("addr")
    };

    let old = ProxyProcess::start(dir, listen, false, "proxy-old.log");
    let old_pid = old.pid();
    let admin = wait_for("the first proxy to answer", || async {
        let admin = AdminClient::connect(dir).await.ok()?;
        let ping = admin.ping().await.ok()?;
        (ping.pid == old_pid).then_some(admin)
    })
    .await;
    let route = Route {
        app: "up".into(),
        hosts: vec![HOST.into()],
        targets: vec![Target {
            addr: upstream.to_string(),
            id: "upstream".into(),
        }],
        upstream_timeout_ms: 5_000,
        drain_timeout_ms: 5_000,
        tunnel_idle_timeout_ms: None,
        max_body_bytes: None,
        https_redirect: None,
        hsts_max_age_secs: None,
        console: false,
    };
    admin.set_route(route.clone()).await.expect("set route");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let clients: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| tokio::spawn(client(listen, keep_alive, stop.clone(), tally.clone())))
        .collect();
    wait_for("traffic through the first proxy", || async {
        (tally.sent.load(Ordering::SeqCst) >= 200).then_some(())
    })
    .await;

    let new = ProxyProcess::start(dir, listen, true, "proxy-new.log");
    let new_pid = new.pid();
    let at_takeover = tally.sent.load(Ordering::SeqCst);
    let new_info = wait_for("the new proxy to own the admin socket", || async {
        let ping = AdminClient::at(dir.join(molt_proxy::admin::SOCKET_FILE))
            .ping()
            .await
            .ok()?;
        (ping.pid == new_pid).then_some(ping)
    })
    .await;
    let mut old = old;
    let old_status = wait_for("the old proxy to exit", || {
        let exited = old.0.try_wait().expect("wait for the old proxy");
        async move { exited }
    })
    .await;

    // Keep the load going past the handover, then stop it.
    let remaining = LOAD_FOR.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(PATIENCE, c)
            .await
            .expect("client tasks stop")
            .expect("client task");
    }

    let sent = tally.sent.load(Ordering::SeqCst);
    let failed = tally.failed.load(Ordering::SeqCst);
    let moved = tally.closed_by_proxy.load(Ordering::SeqCst);
    eprintln!(
        "proxy upgrade under load: {sent} requests ({at_takeover} before the takeover started), \
         {failed} failed, {moved} keep-alive connections closed cleanly by the old proxy; \
         old pid {old_pid} exited {old_status}, new pid {new_pid}"
    );
    let errors = tally
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(failed, 0, "{failed} of {sent} requests failed: {errors:#?}");
    assert!(
        sent > at_takeover + 100,
        "too little traffic after the takeover: {sent} in all, {at_takeover} before"
    );
    assert!(
        old_status.success(),
        "the old proxy exited with {old_status}"
    );
    assert!(new_info.exe_id.is_some());

    let admin = AdminClient::connect(dir).await.expect("admin");
    assert_eq!(admin.ping().await.expect("ping").pid, new_pid);
    assert_eq!(admin.list_routes().await.expect("routes"), vec![route]);
    let pid = std::fs::read_to_string(dir.join(PID_FILE)).expect("pid file");
    assert_eq!(pid.trim(), new_pid.to_string());
    let mut conn = BufReader::new(TcpStream::connect(listen).await.expect("connect"));
    get(&mut conn).await.expect("served by the new proxy");
    drop(new);
}
