//! One proxy per data dir: an exclusive lock on `proxy.lock` held for the
//! process's life (the kernel releases it if we die), and `proxy.pid` so a
//! second proxy can say which process is in the way.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::admin::{LOCK_FILE, PID_FILE};

/// Held while the proxy runs; dropping it releases the lock and removes
/// the pid file.
pub struct Instance {
    _lock: File,
    pid_file: PathBuf,
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
        let pid_file = data_dir.join(PID_FILE);
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&pid_file)
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
        fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", pid_file.display()))?;
        Ok(Instance {
            _lock: lock,
            pid_file,
        })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}
