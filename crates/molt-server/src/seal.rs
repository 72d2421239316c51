//! Secrets at rest: sealed with XChaCha20-Poly1305 under a key kept in the
//! data dir (0600) or given as `MOLT_SECRET_KEY`. The associated data binds
//! each sealed value to what it is for, so values cannot be swapped around.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::path::Path;

const NONCE_LEN: usize = 24;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Kept to derive sub-keys (`derive`) from.
    key: [u8; 32],
}

impl Sealer {
    /// Uses `MOLT_SECRET_KEY` (64 hex digits or base64 of 32 bytes) when
    /// set, else the key file in the data dir, made on first start.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let key = match std::env::var("MOLT_SECRET_KEY") {
            Ok(v) if !v.trim().is_empty() => decode_key(v.trim())
                .context("MOLT_SECRET_KEY must be 64 hex digits or the base64 of 32 bytes")?,
            _ => {
                let path = data_dir.join(crate::datadir::KEY_FILE);
                let hex_key = crate::datadir::read_or_create_secret(&path, || {
                    crate::datadir::random_hex(32)
                })?;
                decode_key(&hex_key)
                    .with_context(|| {
                        format!(
                            "the key file {} is damaged: restore it from a backup; Molt never \
                             replaces it, since a new key cannot open the secrets sealed with the old one",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Self::from_key(&key))
    }

    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            key: *key,
        }
    }

    /// A sealer under a key of its own for `label`: HMAC-SHA256 of the
    /// label under this key. What it seals (login links handed to browsers,
    /// say) never shares a key with the secrets at rest, so a flaw in how
    /// one is used cannot open the other. Values this sealer sealed stay
    /// readable: its own key is unchanged.
    pub fn derive(&self, label: &str) -> Sealer {
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
        let tag = ring::hmac::sign(&mac, format!("molt sub-key: {label}").as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        Sealer::from_key(&key)
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("a sealed secret is truncated");
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow!("a stored secret cannot be opened: the secret key changed (MOLT_SECRET_KEY or the data dir's secret.key)")
            })
    }
}

/// Compares two secrets (tokens, CSRF values) in constant time, so the
/// time an answer takes says nothing about how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn decode_key(raw: &str) -> Result<[u8; 32]> {
    let bytes = if raw.len() == 64 && raw.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(raw)?
    } else {
        base64::engine::general_purpose::STANDARD.decode(raw)?
    };
    bytes
        .try_into()
        .map_err(|_| anyhow!("the key is not 32 bytes long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::from_key(&[7; 32]);
        let sealed = s.seal("registry:a", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open("registry:a", &sealed).unwrap(), b"hunter2");
        assert!(s.open("registry:b", &sealed).is_err());
        assert!(Sealer::from_key(&[8; 32])
            .open("registry:a", &sealed)
            .is_err());
        assert!(s.open("registry:a", &sealed[..10]).is_err());
    }

    #[test]
    fn derived_keys_are_separate() {
        let s = Sealer::from_key(&[7; 32]);
        let links = s.derive("dashboard-link");
        let sealed = links.seal("p", b"value").unwrap();
        assert_eq!(links.open("p", &sealed).unwrap(), b"value");
        assert_eq!(
            s.derive("dashboard-link").open("p", &sealed).unwrap(),
            b"value"
        );
        assert!(
            s.open("p", &sealed).is_err(),
            "the main key opens a sub-key's value"
        );
        assert!(s.derive("other").open("p", &sealed).is_err());
        // What the main key sealed stays readable by it.
        let secret = s.seal("env:web:K", b"v").unwrap();
        assert_eq!(s.open("env:web:K", &secret).unwrap(), b"v");
        assert!(links.open("env:web:K", &secret).is_err());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
    }

    #[test]
    fn keys_decode() {
        assert!(decode_key(&"ab".repeat(32)).is_ok());
        assert!(decode_key("short").is_err());
    }
}
