//! Small helpers every scenario needs: bounded external commands, free ports,
//! bounded polling, process signals.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs `program ARGS` with stdin closed and returns its output; fails if it
/// cannot be started, runs longer than `timeout` (it is killed), or exits
/// non-zero (the error carries its stderr).
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let out = run_status(program, args, timeout).await?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Like [`run`] but a non-zero exit is returned, not an error.
pub async fn run_status(program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timeout drops the future, which must not leave the process behind.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start `{program}`"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.with_context(|| format!("waiting for `{program}` failed")),
        Err(_) => bail!(
            "`{program} {}` did not finish within {timeout:?}",
            args.join(" ")
        ),
    }
}

/// The trimmed stdout of [`run`].
pub async fn run_stdout(program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let out = run(program, args, timeout).await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Synchronous, best-effort command for cleanup paths (`Drop`), bounded by
/// `timeout`; its result is ignored on purpose, cleanup goes on regardless.
pub fn run_sync_quiet(program: &str, args: &[&str], timeout: Duration) {
    let Ok(mut child) = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A port of 127.0.0.1 that was free a moment ago. The small race with other
/// programs is acceptable for a benchmark: a clash fails loudly at bind.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `check` every `every` until it yields `Some` or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Some(v)) = tokio::time::timeout(remaining, check()).await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Sends `sig` (e.g. "TERM") to `pid` with kill(1): no libc binding needed.
pub fn signal(pid: u32, sig: &str) {
    run_sync_quiet(
        "kill",
        &[&format!("-{sig}"), &pid.to_string()],
        Duration::from_secs(5),
    );
}

/// Whether `pid` is alive (not a zombie) and its command line contains
/// `needle`: pid files can be stale and numbers reused.
pub fn process_matches(pid: u32, needle: &str) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    });
    alive
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(needle))
}

/// Waits (bounded) until `pid` is gone, then SIGKILLs it if it is not.
pub fn terminate(pid: u32, needle: &str, grace: Duration) {
    if !process_matches(pid, needle) {
        return;
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && process_matches(pid, needle) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_matches(pid, needle) {
        signal(pid, "KILL");
    }
}

/// Finds `name` on PATH (and in /usr/sbin, where Debian puts nginx even for
/// users whose PATH lacks it).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The workspace root: found from the current directory upwards (the one whose
/// Cargo.toml has `[workspace]`), so the binary works from `target/`.
pub fn workspace_root() -> Result<PathBuf> {
    let start = std::env::current_dir()?;
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|s| s.contains("[workspace]"))
            && dir.join("fixtures/testapp").is_dir()
        {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "run molt-bench from inside the Molt repository (no Cargo workspace with fixtures/testapp above {})",
        start.display()
    )
}

/// Milliseconds with one decimal, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}
