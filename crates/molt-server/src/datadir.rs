//! The data dir: where the database, the admin token, the sealing key and
//! the proxy's files live. One server holds it at a time (`claim`).
//! Everything secret in it is created with mode 0600, and only when absent.

use anyhow::{anyhow, bail, Context, Result};
use rand::RngCore;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "admin-token";
pub const KEY_FILE: &str = "secret.key";
pub const INSTANCE_FILE: &str = "instance-id";
pub const DATABASE_FILE: &str = "molt.db";
/// Locked (flock) by the running server for its whole life, and holding its
/// pid: two servers on one data dir would fight over containers and routes.
pub const LOCK_FILE: &str = "server.lock";

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

/// The data dir's lock; the kernel releases it when the process ends, however
/// it ends, so there is no stale lock to clean up after a crash.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates the data dir (0700), takes its lock, and checks that it is
/// writable, so that a second server or a bad location fails at start with a
/// clear message rather than mid-deploy.
pub fn claim(dir: &Path) -> Result<DataDirLock> {
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data dir {}: choose another with --data-dir",
            dir.display()
        )
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on the data dir {}", dir.display()))?;
    let lock = lock(dir)?;
    let probe = dir.join(".write-test");
    fs::write(&probe, b"ok").with_context(|| {
        format!("the data dir {} is not writable: fix its permissions or choose another with --data-dir", dir.display())
    })?;
    let _ = fs::remove_file(probe);
    Ok(lock)
}

/// Takes the data dir's lock without waiting, then writes our pid into the
/// lock file so that the next server can say who holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open the lock file {}: fix the data dir's permissions or choose another with --data-dir",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into());
            bail!(
                "the data dir {} is in use by a running molt server (pid {pid}): \
                 stop that server first, or start this one with another --data-dir",
                dir.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DataDirLock { _file: file })
}

/// Reads a file holding one secret line, creating it (0600) with `make()`
/// only when it does not exist. Any other failure refuses to start and
/// leaves the file alone: a new `secret.key` in place of one we could not
/// read would make every sealed secret unreadable.
pub fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    match fs::read(path) {
        Ok(bytes) => read_secret(path, &bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => match create_secret(path, &make())? {
            Some(value) => Ok(value),
            // Made by someone else between our read and our create.
            None => read_secret(path, &fs::read(path).map_err(|e| refuse(path, &e))?),
        },
        Err(e) => Err(refuse(path, &e)),
    }
}

fn read_secret(path: &Path, bytes: &[u8]) -> Result<String> {
    let value = std::str::from_utf8(bytes).map(str::trim);
    if value == Ok("") {
        return Err(refuse(path, &"the file is empty"));
    }
    let Some(value) = value
        .ok()
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
    else {
        return Err(refuse(path, &"the file is not one line of text"));
    };
    let mode = fs::metadata(path)
        .map_err(|e| refuse(path, &e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).with_context(|| {
            format!(
                "{} is readable by others and cannot be made private (0600)",
                path.display()
            )
        })?;
    }
    Ok(value.to_string())
}

/// Writes `value` to a new private file beside `path` and links it into
/// place, which fails if `path` exists: the file appears whole or not at all
/// (a crash cannot leave an empty one) and is never replaced. `None`: it
/// already existed.
fn create_secret(path: &Path, value: &str) -> Result<Option<String>> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".new");
    let tmp = PathBuf::from(name);
    // Left by a crash while creating it; nothing ever used it.
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            writeln!(f, "{value}")?;
            f.sync_all()
        })
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(Some(value.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot create {}: fix the data dir's permissions or choose another with --data-dir",
                path.display()
            )
        }),
    }
}

/// Why an existing secret file cannot be used, and what to do about it.
fn refuse(path: &Path, reason: &dyn std::fmt::Display) -> anyhow::Error {
    let fix = match path.file_name().and_then(|n| n.to_str()) {
        Some(KEY_FILE) => {
            "fix it (permissions, disk) or restore it from a backup; Molt never replaces it, \
             since a new key cannot open the secrets sealed with the old one"
        }
        Some(INSTANCE_FILE) => {
            "fix it (permissions, disk) or restore it from a backup; Molt never replaces it, \
             since its containers carry this id (the `molt.instance` label)"
        }
        _ => "fix it (permissions, disk), or remove it to have a new one made at the next start",
    };
    anyhow!("cannot use {}: {reason}; {fix}", path.display())
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

    fn never() -> String {
        panic!("an existing secret file must never be replaced")
    }

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

    #[test]
    fn a_secret_is_created_when_absent_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(KEY_FILE);
        assert_eq!(read_or_create_secret(&p, || "k1".into()).unwrap(), "k1");
        assert_eq!(fs::read_to_string(&p).unwrap(), "k1\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn an_existing_secret_is_read_and_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(TOKEN_FILE);
        fs::write(&p, "  feed\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_or_create_secret(&p, never).unwrap(), "feed");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_empty_or_malformed_secret_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(KEY_FILE);
        for (contents, reason) in [
            (&b""[..], "empty"),
            (b" \n", "empty"),
            (b"ab\ncd\n", "not one line"),
            (b"\xff\xfe", "not one line"),
        ] {
            fs::write(&p, contents).unwrap();
            let err = format!("{:#}", read_or_create_secret(&p, never).unwrap_err());
            assert!(err.contains(&p.display().to_string()), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(err.contains("restore it from a backup"), "{err}");
            assert_eq!(fs::read(&p).unwrap(), contents, "the file is left alone");
        }
    }

    #[test]
    fn an_unreadable_secret_is_refused_and_kept() {
        // A directory at the path: permissions cannot stop root, this can.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(TOKEN_FILE);
        fs::create_dir(&p).unwrap();
        let err = format!("{:#}", read_or_create_secret(&p, never).unwrap_err());
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.to_lowercase().contains("directory"), "{err}");
        assert!(p.is_dir());
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by a running molt server"), "{err}");
        assert!(
            err.contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        drop(held);
        lock(dir.path()).expect("free again once the holder is gone");
    }
}
