//! A second `molt proxy`, started by a test as a peer of the server
//! (`--admin-listen`, `--admin-token-file`), for traffic on every node.

use super::{free_ports, wait_until_sync};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Bound of the wait for the peer to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `molt proxy` on its own data dir serving the admin protocol over TCP;
/// killed on drop.
pub struct PeerProxy {
    child: Option<Child>,
    /// Its data dir (`routes.json`, `peer.log`).
    pub dir: PathBuf,
    /// Where it serves HTTP, HTTPS, and the admin protocol.
    pub listen: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// The token file it and the server share.
    pub token_file: PathBuf,
}

impl PeerProxy {
    /// Writes a token to `DIR/peer-token` and starts the proxy on
    /// `DIR/peer`, on three free ports of 127.0.0.1.
    pub fn start(dir: &Path) -> PeerProxy {
        let token_file = dir.join("peer-token");
        std::fs::write(&token_file, format!("{}\n", "7e".repeat(24))).expect("token file");
        let data = dir.join("peer");
        std::fs::create_dir_all(&data).expect("peer dir");
        let [listen, https, admin] = free_ports::<3>();
        let mut peer = PeerProxy {
            child: None,
            dir: data,
            listen: SocketAddr::from(([127, 0, 0, 1], listen)),
            https: SocketAddr::from(([127, 0, 0, 1], https)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            token_file,
        };
        peer.spawn();
        peer
    }

    /// Starts it (again: same ports, same data dir) and waits until its
    /// admin address listens.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("peer.log"))
            .expect("peer log file");
        let child = Command::new(env!("CARGO_BIN_EXE_molt"))
            .arg("proxy")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--https")
            .arg(self.https.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .arg("--admin-token-file")
            .arg(&self.token_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start the peer molt proxy");
        self.child = Some(child);
        assert!(
            wait_until_sync(START_TIMEOUT, || std::net::TcpStream::connect(self.admin)
                .is_ok()),
            "the peer never listened on {}; its log:\n{}",
            self.admin,
            self.log()
        );
    }

    /// Kills it at once, as a node that goes down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("peer.log")).unwrap_or_default()
    }

    /// Freezes it (SIGSTOP) or thaws it (SIGCONT): a node that stops
    /// answering without closing anything.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id();
        let pid = i32::try_from(pid).expect("pid");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.kill();
    }
}
