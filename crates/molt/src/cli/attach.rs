//! `molt run` and `molt exec`: a command of the App's, attached to this
//! terminal over the API's attach stream (see `molt_core::attach`), so it
//! works against a remote server. The exit code is the command's.

use super::client::{usage, Client, FAILED};
use anyhow::Result;
use clap::Args;
use molt_core::attach::{self as wire, ExecRequest, Exit, RunRequest};
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Args)]
pub struct RunArgs {
    pub name: String,
    /// Run the version of this deploy of the App (its digest and its
    /// environment) instead of the serving one; see `molt deploys NAME`.
    #[arg(long, value_name = "ID", conflicts_with = "image")]
    pub release: Option<String>,
    /// Run this image instead, with the App's current environment.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// A variable for this run only (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Pass this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Kill the command after this many seconds (exit 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// The command, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub name: String,
    /// Which serving replica (default 0).
    #[arg(long, value_name = "N")]
    pub replica: Option<u32>,
    /// Pass this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn need_command(command: &[String], what: &str) -> Result<()> {
    if command.is_empty() {
        return Err(usage(format!(
            "no command given: put it after `--`, e.g. `molt {what} NAME -- ./migrate`"
        )));
    }
    Ok(())
}

pub async fn run(client: &Client, a: RunArgs) -> Result<u8> {
    need_command(&a.command, "run")?;
    let req = RunRequest {
        command: a.command,
        release: a.release,
        image: a.image,
        env: a.env,
        stdin: a.interactive,
        tty: a.tty,
        size: a.tty.then(term::size).flatten(),
        timeout_secs: a.timeout,
    };
    let url = client.url(&["apps", &a.name, "run"]);
    let io = client
        .upgrade(url, &serde_json::to_value(&req)?, wire::PROTOCOL)
        .await?;
    attach(io, a.interactive, a.tty).await
}

pub async fn exec(client: &Client, a: ExecArgs) -> Result<u8> {
    need_command(&a.command, "exec")?;
    let req = ExecRequest {
        command: a.command,
        replica: a.replica,
        stdin: a.interactive,
        tty: a.tty,
        size: a.tty.then(term::size).flatten(),
    };
    let url = client.url(&["apps", &a.name, "exec"]);
    let io = client
        .upgrade(url, &serde_json::to_value(&req)?, wire::PROTOCOL)
        .await?;
    attach(io, a.interactive, a.tty).await
}

/// Pumps stdin to the stream (with `-i`) and the stream's frames to
/// stdout and stderr until the exit frame; its code is ours.
async fn attach(io: reqwest::Upgraded, stdin: bool, tty: bool) -> Result<u8> {
    let (mut rd, mut wr) = tokio::io::split(io);
    // A terminal in raw mode passes keys as they are typed (and ^C to the
    // command); it is restored when the guard drops.
    let _raw = (tty && stdin).then(term::RawMode::enter).flatten();
    let input = async move {
        if !stdin {
            return std::future::pending::<()>().await;
        }
        // A thread of its own: a blocked read of a terminal must not keep
        // the process from exiting once the command ended.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut local = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match local.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        while let Some(chunk) = rx.recv().await {
            if wr
                .write_all(&wire::frame(wire::STDIN, &chunk))
                .await
                .is_err()
            {
                return std::future::pending().await;
            }
            let _ = wr.flush().await;
        }
        let _ = wr.write_all(&wire::frame(wire::STDIN_EOF, b"")).await;
        let _ = wr.flush().await;
        // Keep the write half open: closing it would tell the server we left.
        std::future::pending().await
    };
    let output = async move {
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        loop {
            let mut head = [0u8; 5];
            if rd.read_exact(&mut head).await.is_err() {
                return None;
            }
            let (kind, len) = wire::parse_head(head).ok()?;
            let mut payload = vec![0u8; len];
            rd.read_exact(&mut payload).await.ok()?;
            match kind {
                wire::STDOUT => {
                    let _ = out.write_all(&payload).and_then(|_| out.flush());
                }
                wire::STDERR => {
                    let _ = err.write_all(&payload).and_then(|_| err.flush());
                }
                wire::EXIT => return serde_json::from_slice::<Exit>(&payload).ok(),
                _ => {}
            }
        }
    };
    let exit = tokio::select! {
        exit = output => exit,
        _ = input => None,
    };
    drop(_raw);
    match exit {
        Some(exit) => {
            if let Some(message) = &exit.message {
                eprintln!("molt: {message}");
            }
            Ok(u8::try_from(exit.exit_code).unwrap_or(FAILED))
        }
        None => Err(anyhow::anyhow!(
            "the server closed the command's stream before it ended: the server may have stopped; see its log"
        )),
    }
}

/// The local terminal, with `-t`.
mod term {
    /// This terminal's size (columns, rows), when stdout is one.
    pub fn size() -> Option<(u16, u16)> {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the pointer given.
        let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
        (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
    }

    /// Stdin in raw mode while it lives.
    pub struct RawMode(libc::termios);

    impl RawMode {
        /// `None` when stdin is no terminal (piped input stays as it is).
        pub fn enter() -> Option<RawMode> {
            // SAFETY: plain termios calls on fd 0 with owned structs.
            unsafe {
                if libc::isatty(libc::STDIN_FILENO) != 1 {
                    return None;
                }
                let mut old: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(libc::STDIN_FILENO, &mut old) != 0 {
                    return None;
                }
                let mut raw = old;
                libc::cfmakeraw(&mut raw);
                if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                    return None;
                }
                Some(RawMode(old))
            }
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            // SAFETY: restores the settings read in `enter`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
            }
        }
    }
}
