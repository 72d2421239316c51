//! The shared secret that lets a `molt server` on another machine use a
//! proxy's admin protocol over TCP (`molt proxy --admin-listen`). The
//! operator writes the same token into a file on both sides; it is read
//! from that file only (never a flag, so it stays out of `ps`), never
//! logged, and compared in constant time.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// The shortest token taken: shorter ones are guessable over the network.
pub const MIN_TOKEN_LEN: usize = 32;

/// The first line of every TCP admin connection: `{"auth":"TOKEN"}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AuthLine {
    pub auth: String,
}

/// An admin token. Its `Debug` shows no byte of it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Reads the token from `path` (surrounding whitespace dropped).
    pub fn from_file(path: &Path) -> anyhow::Result<AdminToken> {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the admin token file {}: {e}; write the same token (at least {MIN_TOKEN_LEN} characters, e.g. `openssl rand -hex 32`) into it on the server and on the proxy",
                path.display()
            )
        })?;
        let token =
            AdminToken::new(raw.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the admin token file can be read by other users; restrict it with `chmod 600`");
            }
        }
        Ok(token)
    }

    /// A token from its text; refused when shorter than `MIN_TOKEN_LEN` or
    /// on several lines.
    pub fn new(token: &str) -> anyhow::Result<AdminToken> {
        if token.len() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "the admin token is {} characters long; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                token.len()
            );
        }
        if token.contains(['\n', '\r']) {
            anyhow::bail!("the admin token must be one line");
        }
        Ok(AdminToken(token.into()))
    }

    /// Whether `offered` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_itself_and_never_shows() {
        let token = AdminToken::new(&"a".repeat(40)).expect("long enough");
        assert!(token.matches(&"a".repeat(40)));
        assert!(!token.matches(&"a".repeat(39)));
        assert!(!token.matches(&format!("{}b", "a".repeat(39))));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("aaaa"));
    }

    #[test]
    fn short_or_multi_line_tokens_are_refused() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new(&format!("{}\n{}", "a".repeat(20), "b".repeat(20))).is_err());
    }
}
