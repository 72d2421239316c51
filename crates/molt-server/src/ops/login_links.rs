//! One-time login links (`molt dashboard-link`): the API issues them, the
//! dashboard redeems them. A link seals its expiry under a key derived from
//! the server's secret key for links alone; it logs a browser in once,
//! within five minutes. Used links are remembered in the database until
//! they expire, so a restart does not make a used link work again.

use crate::deploy::Deployer;
use base64::Engine as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
const PURPOSE: &str = "dashboard-link";

/// The sealer of links: a key of its own, derived from the secret key, so
/// tokens handed to browsers are never sealed with the key of the secrets.
fn link_sealer(sealer: &crate::seal::Sealer) -> crate::seal::Sealer {
    sealer.derive(PURPOSE)
}

/// What the database keeps of a used token: its SHA-256, so it holds no
/// token that could be replayed elsewhere.
fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Marks a token used, in the database; false if it was already (or the
/// database cannot say, so a link never works twice by accident).
fn first_use(store: &crate::store::Store, token: &str, expires: u64) -> bool {
    match store.use_link(&token_hash(token), expires, now_secs()) {
        Ok(first) => first,
        Err(e) => {
            tracing::error!("cannot record a used dashboard link: {e:#}");
            false
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new link token: the sealed expiry (the seal's random nonce makes every
/// token unique).
pub fn issue(sealer: &crate::seal::Sealer) -> anyhow::Result<(String, u64)> {
    let expires = now_secs() + LINK_LIFETIME.as_secs();
    let sealed = link_sealer(sealer).seal(PURPOSE, &expires.to_be_bytes())?;
    Ok((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
        expires,
    ))
}

/// Why a link does not log in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Invalid,
    Expired,
    Used,
}

/// Redeems a link token: it logs in once, before it expires.
pub fn redeem(deployer: &Deployer, token: &str) -> Result<(), Refused> {
    let expires = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|sealed| link_sealer(&deployer.sealer).open(PURPOSE, &sealed).ok())
        .and_then(|plain| <[u8; 8]>::try_from(plain.as_slice()).ok())
        .map(u64::from_be_bytes)
        .ok_or(Refused::Invalid)?;
    if expires < now_secs() {
        return Err(Refused::Expired);
    }
    if !first_use(&deployer.store, token, expires) {
        return Err(Refused::Used);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::path::PathBuf, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("molt.db");
        let store = crate::store::Store::open(&path).unwrap();
        (dir, path, store)
    }

    #[test]
    fn links_work_once() {
        let (_dir, _, used) = store();
        assert!(first_use(&used, "a", now_secs() + 10));
        assert!(!first_use(&used, "a", now_secs() + 10));
        assert!(first_use(&used, "b", now_secs() + 10));
    }

    /// A used link stays used when the server restarts (the database is
    /// opened again), until it expires.
    #[test]
    fn used_links_survive_a_restart() {
        let (_dir, path, used) = store();
        assert!(first_use(&used, "a", now_secs() + 60));
        drop(used);
        let reopened = crate::store::Store::open(&path).unwrap();
        assert!(!first_use(&reopened, "a", now_secs() + 60));
        // Expired entries are forgotten on the next use.
        assert!(reopened.use_link("old", 5, 1).unwrap());
        assert!(!reopened.use_link("old", 5, 2).unwrap());
        assert!(reopened.use_link("new", 100, 20).unwrap());
        assert!(reopened.use_link("old", 5, 20).unwrap(), "kept past expiry");
    }

    #[test]
    fn tokens_are_unique_and_sealed() {
        let sealer = crate::seal::Sealer::from_key(&[3; 32]);
        let (a, _) = issue(&sealer).unwrap();
        let (b, _) = issue(&sealer).unwrap();
        assert_ne!(a, b);
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a)
            .unwrap();
        let links = link_sealer(&sealer);
        assert!(links.open(PURPOSE, &sealed).is_ok());
        assert!(links.open("other", &sealed).is_err());
        // The key of the secrets at rest does not open a link.
        assert!(sealer.open(PURPOSE, &sealed).is_err());
    }
}
