//! The data dir: where the database, the admin token, the sealing key and
//! the proxy's files live. Everything secret in it is created with mode 0600.

use anyhow::{Context, Result};
use rand::RngCore;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "admin-token";
pub const KEY_FILE: &str = "secret.key";
pub const INSTANCE_FILE: &str = "instance-id";
pub const DATABASE_FILE: &str = "molt.db";

/// The data dir a command uses: `--data-dir`, else `$MOLT_DATA_DIR`, else
/// `~/.local/share/molt`.
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("MOLT_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".local/share/molt")
        })
}

/// Creates the data dir (0700) and checks that it is writable, so that a
/// bad location fails at start with a clear message rather than mid-deploy.
pub fn prepare(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data dir {}: choose another with --data-dir",
            dir.display()
        )
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on the data dir {}", dir.display()))?;
    let probe = dir.join(".write-test");
    fs::write(&probe, b"ok").with_context(|| {
        format!("the data dir {} is not writable: fix its permissions or choose another with --data-dir", dir.display())
    })?;
    let _ = fs::remove_file(probe);
    Ok(())
}

/// Reads a file holding one secret line, creating it (0600) with `make()`
/// the first time.
pub fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            let mode = fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            }
            Ok(s.trim().to_string())
        }
        _ => {
            let value = make();
            let tmp = path.with_extension("tmp");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            writeln!(f, "{value}")?;
            f.sync_all()?;
            fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(value)
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        let a = read_or_create_secret(&p, || "abc".into()).unwrap();
        let b = read_or_create_secret(&p, || "other".into()).unwrap();
        assert_eq!(a, "abc");
        assert_eq!(b, "abc");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
