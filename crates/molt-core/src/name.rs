//! App names: they become host names (`NAME.localhost`) and container names,
//! so they follow DNS label rules.

use std::fmt;

/// A validated App name: lowercase letters, digits and hyphens, starting with
/// a letter, not ending with a hyphen, at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the App name is empty: give a name such as `web`")]
    Empty,
    #[error("the App name `{0}` is longer than 63 characters")]
    TooLong(String),
    #[error("the App name `{0}` must start with a lowercase letter")]
    BadStart(String),
    #[error("the App name `{0}` must not end with a hyphen")]
    BadEnd(String),
    #[error(
        "the App name `{name}` contains `{ch}`: use lowercase letters, digits and hyphens only"
    )]
    BadChar { name: String, ch: char },
}

impl AppName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let shown: String = raw.chars().take(80).collect();
        let Some(first) = raw.chars().next() else {
            return Err(NameError::Empty);
        };
        if raw.len() > Self::MAX_LEN {
            return Err(NameError::TooLong(shown));
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart(shown));
        }
        if let Some(ch) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar { name: shown, ch });
        }
        if raw.ends_with('-') {
            return Err(NameError::BadEnd(shown));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name every App answers on.
    pub fn default_domain(&self) -> String {
        format!("{}.localhost", self.0)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates an extra domain for an App: a DNS name made of labels of
/// letters, digits and hyphens. Returns it lowercased. IP addresses and
/// `localhost` are refused: the proxy would answer for the machine itself
/// (and the API's own address) rather than for one App.
pub fn parse_domain(raw: &str) -> Result<String, String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad =
        || format!("`{raw}` is not a valid domain: use a host name such as `app.example.com`");
    if d.is_empty() || d.len() > 253 {
        return Err(bad());
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(bad());
        }
    }
    if looks_like_ipv4(&d) {
        return Err(format!(
            "`{raw}` is an IP address, not a domain: an App answers on host names such as `app.example.com`"
        ));
    }
    if d == "localhost" {
        return Err(format!(
            "`{raw}` names this machine, not an App: use a host name such as `app.example.com` (every App already answers on `NAME.localhost`)"
        ));
    }
    Ok(d)
}

/// Whether browsers and resolvers read this host as an IPv4 address: its
/// last label is a number (decimal, or hex with `0x`), as in `127.0.0.1`,
/// `2130706433` or `0x7f.1`.
fn looks_like_ipv4(d: &str) -> bool {
    let last = d.rsplit('.').next().unwrap_or(d);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    hex || last.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "api-2", "x1-y2-z3", &"a".repeat(63)] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        assert_eq!(AppName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            AppName::parse("1web"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(
            AppName::parse("-web"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(AppName::parse("Web"), Err(NameError::BadStart(_))));
        assert!(matches!(AppName::parse("web-"), Err(NameError::BadEnd(_))));
        assert!(matches!(
            AppName::parse("we_b"),
            Err(NameError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            AppName::parse("../etc"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(
            AppName::parse("a/b"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            AppName::parse(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn default_domain_is_localhost() {
        assert_eq!(
            AppName::parse("web").unwrap().default_domain(),
            "web.localhost"
        );
    }

    #[test]
    fn domains() {
        assert_eq!(parse_domain("App.Example.com.").unwrap(), "app.example.com");
        assert!(parse_domain("bad..com").is_err());
        assert!(parse_domain("-x.com").is_err());
        assert!(parse_domain("a b.com").is_err());
    }

    #[test]
    fn domains_are_not_addresses_or_this_machine() {
        for bad in [
            "127.0.0.1",
            "10.0.0.1.",
            "2130706433",
            "0x7f.1",
            "1.2.3",
            "localhost",
            "LOCALHOST.",
            "[::1]",
            "::1",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
        assert!(parse_domain("127.0.0.1")
            .unwrap_err()
            .contains("IP address"));
        assert!(parse_domain("localhost")
            .unwrap_err()
            .contains("this machine"));
        for ok in ["web.localhost", "1.example.com", "app.0x7f.dev", "x1.io"] {
            assert!(parse_domain(ok).is_ok(), "{ok}");
        }
    }
}
