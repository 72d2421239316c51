//! Releases: what a deploy runs (an image pinned by digest, the App's whole
//! settings, its environment by version) and what one release changed
//! against another. The one place that compares them: the API's
//! `changes`, `molt deploys show` and the dashboard's deploy page all show
//! what [`diff`] returns. Secrets are compared by their sealed value's
//! fingerprint, never opened.

use crate::capacity::human_bytes;
use crate::store::{AppSettings, DeployRow, EnvEntry};
use molt_core::health::HealthCheck;
use molt_core::release::{EnvChange, EnvChangeKind, ReleaseDiff, SettingChange, ValueChange};

/// What a deploy runs.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The deploy that recorded it.
    pub id: &'a str,
    pub image: &'a str,
    /// Pinned once the image was pulled (or given by digest).
    pub digest: Option<&'a str>,
    /// `None` for deploys recorded before releases were.
    pub settings: Option<&'a AppSettings>,
    /// Secrets stay sealed.
    pub env: &'a [EnvEntry],
}

impl<'a> Release<'a> {
    /// The release a deploy runs.
    pub fn of(deploy: &'a DeployRow) -> Self {
        Self {
            id: &deploy.id,
            image: &deploy.image,
            digest: deploy.digest.as_deref(),
            settings: deploy.config.as_ref(),
            env: &deploy.env,
        }
    }
}

/// What `after` changed against `before`.
pub fn diff(before: &Release, after: &Release) -> ReleaseDiff {
    let image = (before.image != after.image).then(|| ValueChange {
        from: before.image.to_string(),
        to: after.image.to_string(),
    });
    let digest = match (before.digest, after.digest) {
        (Some(a), Some(b)) if a != b => Some(ValueChange {
            from: a.to_string(),
            to: b.to_string(),
        }),
        _ => None,
    };
    let (settings, settings_unknown) = match (before.settings, after.settings) {
        (Some(a), Some(b)) => (setting_changes(a, b), false),
        _ => (Vec::new(), true),
    };
    ReleaseDiff {
        against: before.id.to_string(),
        image,
        digest,
        settings,
        env: env_changes(before.env, after.env),
        settings_unknown,
    }
}

/// What differs between two settings, one change per setting (domains one
/// per domain added or removed), shown as a user gives them.
pub fn setting_changes(old: &AppSettings, new: &AppSettings) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut changed = |setting: &str, a: String, b: String| {
        if a != b {
            out.push(SettingChange {
                setting: setting.to_string(),
                from: Some(a),
                to: Some(b),
            });
        }
    };
    let path = |h: &HealthCheck| h.path.clone().unwrap_or_else(|| "none (TCP)".into());
    let mem = |m: Option<u64>| m.map(human_bytes).unwrap_or_else(|| "default".into());
    let cpus = |c: Option<f64>| {
        c.map(|c| c.to_string())
            .unwrap_or_else(|| "no limit".into())
    };
    let secs = |s: u64| format!("{s} s");
    changed("port", old.port.to_string(), new.port.to_string());
    changed("health path", path(&old.health), path(&new.health));
    changed(
        "health timeout",
        secs(old.health.deploy_timeout_secs),
        secs(new.health.deploy_timeout_secs),
    );
    changed(
        "health interval",
        format!("{} ms", old.health.interval_ms),
        format!("{} ms", new.health.interval_ms),
    );
    changed(
        "start period",
        secs(old.health.start_period_ms / 1000),
        secs(new.health.start_period_ms / 1000),
    );
    changed("memory", mem(old.memory_bytes), mem(new.memory_bytes));
    changed("cpus", cpus(old.cpus), cpus(new.cpus));
    changed("gpus", old.gpus.to_string(), new.gpus.to_string());
    changed(
        "replicas",
        old.replicas.to_string(),
        new.replicas.to_string(),
    );
    changed("strategy", old.strategy.clone(), new.strategy.clone());
    changed(
        "drain timeout",
        secs(old.drain_timeout_secs),
        secs(new.drain_timeout_secs),
    );
    changed(
        "upstream timeout",
        secs(old.upstream_timeout_secs),
        secs(new.upstream_timeout_secs),
    );
    let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
    changed(
        "HTTPS redirect",
        on_off(old.https_redirect),
        on_off(new.https_redirect),
    );
    let hsts = |age: Option<u64>| age.map_or_else(|| "off".to_string(), secs);
    changed(
        "HSTS",
        hsts(old.hsts_max_age_secs),
        hsts(new.hsts_max_age_secs),
    );
    let body = |b: Option<u64>| {
        b.map(human_bytes)
            .unwrap_or_else(|| "default (100 MiB)".into())
    };
    changed(
        "max body",
        body(old.max_body_bytes),
        body(new.max_body_bytes),
    );
    let idle = |s: Option<u64>| s.map_or_else(|| "default (300 s)".to_string(), secs);
    changed(
        "tunnel idle timeout",
        idle(old.tunnel_idle_timeout_secs),
        idle(new.tunnel_idle_timeout_secs),
    );
    let placement = |c: &[String]| {
        if c.is_empty() {
            "any node".to_string()
        } else {
            c.join(", ")
        }
    };
    changed(
        "constraints",
        placement(&old.constraints),
        placement(&new.constraints),
    );
    for d in new.domains.iter().filter(|d| !old.domains.contains(d)) {
        out.push(SettingChange {
            setting: "domain".into(),
            from: None,
            to: Some(d.clone()),
        });
    }
    for d in old.domains.iter().filter(|d| !new.domains.contains(d)) {
        out.push(SettingChange {
            setting: "domain".into(),
            from: Some(d.clone()),
            to: None,
        });
    }
    out
}

/// Variables added, removed or changed, by key. A secret is shown by its
/// version only (see [`version`]).
pub fn env_changes(before: &[EnvEntry], after: &[EnvEntry]) -> Vec<EnvChange> {
    let mut keys: Vec<&str> = before.iter().chain(after).map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let find = |env: &'_ [EnvEntry], key: &str| env.iter().find(|e| e.key == key).cloned();
    keys.into_iter()
        .filter_map(|key| {
            let (a, b) = (find(before, key), find(after, key));
            let change = match (&a, &b) {
                (None, Some(_)) => EnvChangeKind::Added,
                (Some(_), None) => EnvChangeKind::Removed,
                (Some(a), Some(b)) if version(a) != version(b) => EnvChangeKind::Changed,
                _ => return None,
            };
            Some(EnvChange {
                key: key.to_string(),
                change,
                secret: b.as_ref().or(a.as_ref()).is_some_and(|e| e.secret),
                from: a.as_ref().map(version),
                to: b.as_ref().map(version),
            })
        })
        .collect()
}

/// A variable's version as it may be shown: a plain value itself; for a
/// secret, `sealed:` and the first 12 hex digits of the SHA-256 of its
/// sealed bytes. Sealing draws a fresh nonce, so the fingerprint changes
/// whenever the secret is set and says nothing about the value.
pub fn version(e: &EnvEntry) -> String {
    if e.secret {
        let sealed = e.sealed.as_deref().unwrap_or_default();
        let hash = ring::digest::digest(&ring::digest::SHA256, sealed);
        format!("sealed:{}", &hex::encode(hash.as_ref())[..12])
    } else {
        e.value.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AppRow;

    fn settings() -> AppSettings {
        let mut app = AppRow::named("web");
        app.port = 8080;
        app.health.path = Some("/healthz".into());
        app.domains = vec!["www.example.com".into()];
        AppSettings::of(&app)
    }

    fn plain(key: &str, value: &str) -> EnvEntry {
        EnvEntry {
            key: key.into(),
            secret: false,
            value: Some(value.into()),
            sealed: None,
        }
    }

    fn secret(key: &str, sealed: &[u8]) -> EnvEntry {
        EnvEntry {
            key: key.into(),
            secret: true,
            value: None,
            sealed: Some(sealed.to_vec()),
        }
    }

    fn release<'a>(
        id: &'a str,
        image: &'a str,
        digest: Option<&'a str>,
        settings: Option<&'a AppSettings>,
        env: &'a [EnvEntry],
    ) -> Release<'a> {
        Release {
            id,
            image,
            digest,
            settings,
            env,
        }
    }

    #[test]
    fn the_same_release_changes_nothing() {
        let s = settings();
        let env = vec![plain("MODE", "a"), secret("TOKEN", b"sealed-1")];
        let r = release("d1", "app:1", Some("sha256:1"), Some(&s), &env);
        let d = diff(&r, &r);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.against, "d1");
    }

    #[test]
    fn image_digest_and_settings_changes() {
        let old = settings();
        let mut new = old.clone();
        new.port = 9090;
        new.health.path = None;
        new.memory_bytes = Some(512 << 20);
        new.domains = vec!["api.example.com".into()];
        let d = diff(
            &release("d1", "app:1", Some("sha256:1"), Some(&old), &[]),
            &release("d2", "app:2", Some("sha256:2"), Some(&new), &[]),
        );
        assert_eq!(d.against, "d1");
        assert_eq!(
            d.image,
            Some(ValueChange {
                from: "app:1".into(),
                to: "app:2".into()
            })
        );
        assert_eq!(d.digest.as_ref().map(|c| c.to.as_str()), Some("sha256:2"));
        assert_eq!(
            d.lines()[2..],
            [
                "port 8080 → 9090",
                "health path /healthz → none (TCP)",
                "memory default → 512 MiB",
                "domain api.example.com added",
                "domain www.example.com removed",
            ]
        );
    }

    #[test]
    fn an_unknown_digest_is_no_change_and_unrecorded_settings_are_said() {
        let s = settings();
        let d = diff(
            &release("d1", "app:1", None, None, &[]),
            &release("d2", "app:1", Some("sha256:2"), Some(&s), &[]),
        );
        assert!(d.digest.is_none());
        assert!(d.settings_unknown);
        assert!(d.settings.is_empty());
    }

    #[test]
    fn env_changes_show_plain_values_and_secret_versions_only() {
        let before = vec![
            plain("GONE", "x"),
            plain("MODE", "a"),
            secret("SAME", b"s0"),
            secret("TOKEN", b"sealed-one"),
        ];
        let after = vec![
            plain("MODE", "b"),
            plain("NEW", "n"),
            secret("SAME", b"s0"),
            secret("TOKEN", b"sealed-two"),
        ];
        let changes = env_changes(&before, &after);
        let keys: Vec<(&str, EnvChangeKind)> =
            changes.iter().map(|c| (c.key.as_str(), c.change)).collect();
        assert_eq!(
            keys,
            [
                ("GONE", EnvChangeKind::Removed),
                ("MODE", EnvChangeKind::Changed),
                ("NEW", EnvChangeKind::Added),
                ("TOKEN", EnvChangeKind::Changed),
            ]
        );
        let token = &changes[3];
        assert!(token.secret);
        let (from, to) = (token.from.clone().unwrap(), token.to.clone().unwrap());
        assert!(from.starts_with("sealed:") && to.starts_with("sealed:"));
        assert_ne!(from, to);
        // No sealed bytes (and of course no value) appear in what is shown.
        let shown = serde_json::to_string(&changes).unwrap();
        assert!(!shown.contains("sealed-one") && !shown.contains("sealed-two"));
        assert_eq!(changes[1].from.as_deref(), Some("a"));
        assert_eq!(changes[1].to.as_deref(), Some("b"));
    }

    #[test]
    fn a_variable_that_becomes_secret_is_a_change() {
        let changes = env_changes(&[plain("K", "v")], &[secret("K", b"x")]);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].secret);
        assert_eq!(changes[0].from.as_deref(), Some("v"));
        assert!(changes[0].to.as_deref().unwrap().starts_with("sealed:"));
    }
}
