//! One proxy per data dir: an exclusive lock on `proxy.lock` held for the
//! process's life (the kernel releases it if we die), and `proxy.pid` so a
//! second proxy can say which process is in the way.
//!
//! A handover passes the locked file itself to the successor: a `flock`
//! belongs to the open file, not to a process, so the lock never lapses
//! between the two. Files are only removed by the proxy that wrote them
//! (checked by inode), so the one that leaves cannot delete its successor's.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::admin::{LOCK_FILE, PID_FILE};

/// Held while the proxy runs; dropping it removes the pid file if it is
/// still ours, and closes our handle on the lock.
pub struct Instance {
    lock: File,
    pid_file: OwnFile,
}

impl Instance {
    pub fn claim(data_dir: &Path) -> anyhow::Result<Self> {
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(data_dir.join(PID_FILE))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "unknown".into());
                anyhow::bail!(
                    "a proxy already runs for this data dir {} (pid {pid})",
                    data_dir.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", lock_path.display())
            }
        }
        Self::with_lock(data_dir, lock)
    }

    /// Takes over the lock a previous proxy handed over (the same open
    /// file, so it is locked already; locking again only confirms it).
    pub fn adopt(data_dir: &Path, lock: File) -> anyhow::Result<Self> {
        match lock.try_lock() {
            Ok(()) => Self::with_lock(data_dir, lock),
            Err(fs::TryLockError::WouldBlock) => {
                anyhow::bail!("the handed-over lock file is not the lock the previous proxy held")
            }
            Err(fs::TryLockError::Error(e)) => anyhow::bail!("checking the handed-over lock: {e}"),
        }
    }

    fn with_lock(data_dir: &Path, lock: File) -> anyhow::Result<Self> {
        let path = data_dir.join(PID_FILE);
        let pid_file = OwnFile::write(&path, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(Instance { lock, pid_file })
    }

    /// The locked file, to hand over.
    pub fn lock(&self) -> &File {
        &self.lock
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.pid_file.remove_if_ours();
    }
}

/// A file (or socket) this process put at `path`, remembered by inode so we
/// can tell whether it is still ours before removing it.
#[derive(Debug, Clone)]
pub struct OwnFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl OwnFile {
    /// Writes `contents` next to `path` and renames it into place, so
    /// readers see the old file or the new one, and the inode is new.
    pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<Self> {
        let tmp = sibling(path, "tmp");
        fs::write(&tmp, contents)?;
        fs::rename(&tmp, path)?;
        Ok(Self::at(path))
    }

    /// Remembers what is at `path` now.
    pub fn at(path: &Path) -> Self {
        OwnFile {
            path: path.to_path_buf(),
            id: identity(path),
        }
    }

    pub fn is_ours(&self) -> bool {
        self.id.is_some() && identity(&self.path) == self.id
    }

    pub fn remove_if_ours(&self) {
        if self.is_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `path` with `.<pid>.<what>` appended: unique to this process.
pub fn sibling(path: &Path, what: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{}.{what}", std::process::id()));
    PathBuf::from(name)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Identifies the running binary: its size and modification time, read
/// through `/proc/self/exe` (the file we run, even if it was replaced on
/// disk since) once per process. Two processes started from the same file
/// agree; a rebuilt or upgraded binary differs.
pub fn exe_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let meta = fs::metadata("/proc/self/exe")
            .or_else(|_| std::env::current_exe().and_then(fs::metadata));
        match meta {
            Ok(m) => format!("{:x}-{:x}.{:x}", m.size(), m.mtime(), m.mtime_nsec()),
            // Unknowable: never equal to another's, so a server upgrades
            // rather than trusting a match it cannot check.
            Err(_) => format!("unknown-{}", std::process::id()),
        }
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_file_is_not_removed_once_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.pid");
        let first = OwnFile::write(&path, b"1\n").expect("write");
        let second = OwnFile::write(&path, b"2\n").expect("write");
        assert!(!first.is_ours());
        first.remove_if_ours();
        assert_eq!(fs::read_to_string(&path).expect("read"), "2\n");
        second.remove_if_ours();
        assert!(!path.exists());
    }

    #[test]
    fn exe_id_is_stable() {
        assert_eq!(exe_id(), exe_id());
        assert!(!exe_id().starts_with("unknown"));
    }
}
