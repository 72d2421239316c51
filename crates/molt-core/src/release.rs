//! What one release changed against the one before it, as the API returns
//! it (`changes` of `molt deploys show --json`) and as the command line and
//! the dashboard phrase it, line for line the same.
//!
//! A release is what a deploy runs: an image (pinned by digest), the App's
//! whole settings and its environment by version. A secret appears only by
//! reference (a fingerprint of its sealed value, which changes each time the
//! secret is set), never by value.

use serde::{Deserialize, Serialize};

/// The changes of a release against the release before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseDiff {
    /// The deploy compared with: the one that served when this one began.
    pub against: String,
    /// The image reference, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ValueChange>,
    /// The pinned digest, when it changed (both known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<ValueChange>,
    /// Changed settings, in a stable order (port, health check, resources,
    /// replicas, strategy, timeouts, then domains).
    #[serde(default)]
    pub settings: Vec<SettingChange>,
    /// Variables added, removed or changed, by key.
    #[serde(default)]
    pub env: Vec<EnvChange>,
    /// The release before recorded no settings (a deploy older than
    /// releases), so settings could not be compared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settings_unknown: bool,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValueChange {
    pub from: String,
    pub to: String,
}

/// One setting before and after, as shown (`8080`, `/healthz`, `512 MiB`).
/// A domain added has no `from`, one removed no `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingChange {
    /// `port`, `health path`, `memory`, `domain`, ...
    pub setting: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// How a variable changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvChangeKind {
    Added,
    Removed,
    Changed,
}

/// One variable before and after. A plain variable shows its values; a
/// secret shows only its version (`sealed:` and a fingerprint), so a
/// changed secret is visible without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvChange {
    pub key: String,
    pub change: EnvChangeKind,
    /// Whether the variable is (or, when removed, was) a secret.
    pub secret: bool,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl ReleaseDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.digest.is_none()
            && self.settings.is_empty()
            && self.env.is_empty()
    }

    /// One phrase per change, e.g. `port 8080 → 9090`,
    /// `env DB_PASSWORD changed (secret, sealed:1a2b → sealed:3c4d)`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.image {
            out.push(format!("image {} → {}", c.from, c.to));
        }
        if let Some(c) = &self.digest {
            out.push(format!("digest {} → {}", short(&c.from), short(&c.to)));
        }
        for s in &self.settings {
            out.push(match (&s.from, &s.to) {
                (Some(a), Some(b)) => format!("{} {a} → {b}", s.setting),
                (None, Some(b)) => format!("{} {b} added", s.setting),
                (Some(a), None) => format!("{} {a} removed", s.setting),
                (None, None) => s.setting.clone(),
            });
        }
        if self.settings_unknown {
            out.push("settings: not recorded by the deploy before, not compared".into());
        }
        for e in &self.env {
            let what = if e.secret { "secret, " } else { "" };
            let v = |v: &Option<String>| v.clone().unwrap_or_default();
            out.push(match e.change {
                EnvChangeKind::Added => format!("env {} added ({what}{})", e.key, v(&e.to)),
                EnvChangeKind::Removed => format!("env {} removed", e.key),
                EnvChangeKind::Changed => format!(
                    "env {} changed ({what}{} → {})",
                    e.key,
                    v(&e.from),
                    v(&e.to)
                ),
            });
        }
        out
    }
}

/// `sha256:` and the first 12 hex digits of a digest.
fn short(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_diff_has_no_lines() {
        let d = ReleaseDiff {
            against: "d1".into(),
            ..Default::default()
        };
        assert!(d.is_empty());
        assert!(d.lines().is_empty());
    }

    #[test]
    fn every_change_is_one_line() {
        let d = ReleaseDiff {
            against: "d1".into(),
            image: Some(ValueChange {
                from: "app:1".into(),
                to: "app:2".into(),
            }),
            digest: Some(ValueChange {
                from: format!("sha256:{}", "a".repeat(64)),
                to: format!("sha256:{}", "b".repeat(64)),
            }),
            settings: vec![
                SettingChange {
                    setting: "port".into(),
                    from: Some("8080".into()),
                    to: Some("9090".into()),
                },
                SettingChange {
                    setting: "domain".into(),
                    from: None,
                    to: Some("www.example.com".into()),
                },
                SettingChange {
                    setting: "domain".into(),
                    from: Some("old.example.com".into()),
                    to: None,
                },
            ],
            env: vec![
                EnvChange {
                    key: "MODE".into(),
                    change: EnvChangeKind::Changed,
                    secret: false,
                    from: Some("a".into()),
                    to: Some("b".into()),
                },
                EnvChange {
                    key: "TOKEN".into(),
                    change: EnvChangeKind::Changed,
                    secret: true,
                    from: Some("sealed:1111".into()),
                    to: Some("sealed:2222".into()),
                },
                EnvChange {
                    key: "NEW".into(),
                    change: EnvChangeKind::Added,
                    secret: false,
                    from: None,
                    to: Some("x".into()),
                },
                EnvChange {
                    key: "GONE".into(),
                    change: EnvChangeKind::Removed,
                    secret: true,
                    from: Some("sealed:3333".into()),
                    to: None,
                },
            ],
            settings_unknown: false,
        };
        assert!(!d.is_empty());
        assert_eq!(
            d.lines(),
            vec![
                "image app:1 → app:2",
                "digest sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb",
                "port 8080 → 9090",
                "domain www.example.com added",
                "domain old.example.com removed",
                "env MODE changed (a → b)",
                "env TOKEN changed (secret, sealed:1111 → sealed:2222)",
                "env NEW added (x)",
                "env GONE removed",
            ]
        );
    }

    #[test]
    fn the_json_names_the_change_kinds() {
        let e = EnvChange {
            key: "K".into(),
            change: EnvChangeKind::Added,
            secret: false,
            from: None,
            to: Some("v".into()),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["change"], "added");
        let back: EnvChange = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
