//! Credentials for Molt's registry, issued by the server and expiring: one
//! per external build (push and pull of its App's repository), and short
//! ones for the server's own pulls. Kept in memory only, as hashes: a
//! restarted server has issued none, and nothing of them is on disk.

use super::token::Grant;
use crate::datadir::random_hex;
use ring::digest::{digest, SHA256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A credential as handed out: the password is shown once.
#[derive(Debug, Clone)]
pub struct Issued {
    pub username: String,
    pub password: String,
    pub expires_in: Duration,
}

struct Entry {
    password_hash: Vec<u8>,
    grant: Grant,
    expires: Instant,
}

#[derive(Default)]
pub struct Credentials {
    entries: Mutex<HashMap<String, Entry>>,
}

fn hash(password: &str) -> Vec<u8> {
    digest(&SHA256, password.as_bytes()).as_ref().to_vec()
}

impl Credentials {
    /// Issues a credential with `grant` that stops working after `ttl`.
    pub fn issue(&self, prefix: &str, grant: Grant, ttl: Duration) -> Issued {
        let username = format!("{prefix}-{}", random_hex(6));
        let password = random_hex(24);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.expires > now);
        entries.insert(
            username.clone(),
            Entry {
                password_hash: hash(&password),
                grant,
                expires: now + ttl,
            },
        );
        Issued {
            username,
            password,
            expires_in: ttl,
        }
    }

    /// What a username and password may do, while the credential lasts.
    pub fn check(&self, username: &str, password: &str) -> Result<(Grant, Duration), Refusal> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(username).ok_or(Refusal::Unknown)?;
        let given = hash(password);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_slice(),
            entry.password_hash.as_slice(),
        )) {
            return Err(Refusal::Unknown);
        }
        let left = entry.expires.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Expired);
        }
        Ok((entry.grant.clone(), left))
    }
}

/// Why a credential was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such username, or the wrong password.
    Unknown,
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_work_until_they_expire() {
        let c = Credentials::default();
        let grant = Grant::PushPull {
            repository: "web".into(),
        };
        let issued = c.issue("build", grant.clone(), Duration::from_secs(60));
        assert!(issued.username.starts_with("build-"));
        let (got, left) = c.check(&issued.username, &issued.password).unwrap();
        assert_eq!(got, grant);
        assert!(left <= Duration::from_secs(60));
        assert_eq!(c.check(&issued.username, "wrong"), Err(Refusal::Unknown));
        assert_eq!(c.check("nobody", &issued.password), Err(Refusal::Unknown));
        let short = c.issue("build", grant, Duration::ZERO);
        assert_eq!(
            c.check(&short.username, &short.password),
            Err(Refusal::Expired)
        );
    }
}
