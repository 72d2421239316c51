//! Image references (`[registry/]repository[:tag][@digest]`), parsed and
//! normalised the way the Docker engine does it, so that a bad reference is
//! refused before anything talks to a registry.

use std::fmt;

/// The registry an unqualified reference (`nginx`) points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference. `registry` and `repository` are normalised
/// (`nginx` is `docker.io/library/nginx`); a reference with neither tag nor
/// digest gets the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not a valid image reference: {reason}")]
pub struct RefError {
    pub reference: String,
    pub reason: String,
}

impl ImageRef {
    pub fn parse(raw: &str) -> Result<Self, RefError> {
        let err = |reason: &str| RefError {
            reference: raw.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        if raw.is_empty() {
            return Err(err(
                "it is empty; give one such as `registry.example.com/team/app:1.2`",
            ));
        }
        if raw.len() > 512 {
            return Err(err("it is longer than 512 characters"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains white space"));
        }
        let (rest, digest) = match raw.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest).map_err(|r| err(&r))?)),
            None => (raw, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| err(&r))?;
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            validate_registry(registry).map_err(|r| err(&r))?;
        }
        if path.is_empty() {
            return Err(err("the repository name is missing"));
        }
        for component in path.split('/') {
            validate_component(component).map_err(|r| err(&r))?;
        }
        let registry = match registry {
            None | Some("index.docker.io") | Some("registry-1.docker.io") => DEFAULT_REGISTRY,
            Some(r) => r,
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Self {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name the engine keys digests by.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to a digest: `repo@sha256:…`.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is used
    /// (as the Docker engine does for 127.0.0.0/8 and localhost).
    pub fn registry_is_local(&self) -> bool {
        registry_is_local(&self.registry)
    }
}

/// Whether a registry host (with optional port) is on the loopback interface:
/// `localhost` or a loopback IP address. Only these are spoken to over plain
/// HTTP, so the host is parsed as an address, never matched by prefix
/// (`127.example.com` is a name anyone can register).
pub fn registry_is_local(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host_is_loopback(host)
}

/// Whether a bare host (no port; IPv6 without brackets) is `localhost` or a
/// loopback IP address.
pub fn host_is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || registry.starts_with('[') => (h, Some(p)),
        _ => (registry, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("the registry port `{port}` is not a port number"));
        }
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!("the registry host `{host}` is not a host name"))
    }
}

fn validate_component(component: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "the repository part `{component}` must be lowercase letters and digits, \
             separated by `.`, `_`, `__` or hyphens"
        )
    };
    if component.is_empty() {
        return Err("the repository name has an empty part (`//` or a trailing `/`)".into());
    }
    let bytes = component.as_bytes();
    if !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit() {
        return Err(bad());
    }
    if !bytes[bytes.len() - 1].is_ascii_lowercase() && !bytes[bytes.len() - 1].is_ascii_digit() {
        return Err(bad());
    }
    // Separators between alphanumeric runs: '.', '_', '__', or any run of '-'.
    let mut sep = String::new();
    for &b in bytes {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            if !(sep.is_empty()
                || sep == "."
                || sep == "_"
                || sep == "__"
                || sep.bytes().all(|c| c == b'-'))
            {
                return Err(bad());
            }
            sep.clear();
        } else if b == b'.' || b == b'_' || b == b'-' {
            sep.push(b as char);
        } else {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the tag `{tag}` must be at most 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}

fn parse_digest(digest: &str) -> Result<String, String> {
    let bad =
        || format!("the digest `{digest}` must look like `sha256:` followed by 64 hex digits");
    let (algo, hex) = digest.split_once(':').ok_or_else(bad)?;
    let ok = match algo {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => false,
    } && hex
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if ok {
        Ok(digest.to_string())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_docker_hub_names() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        let r = ImageRef::parse("team/app:1.2").unwrap();
        assert_eq!(r.repository, "team/app");
    }

    #[test]
    fn keeps_registry_port_and_tag_apart() {
        let r = ImageRef::parse("127.0.0.1:5000/testapp:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "testapp");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.registry_is_local());
        let r = ImageRef::parse("localhost:5000/a/b/c").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("ghcr.io/org/app@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = ImageRef::parse(&format!("ghcr.io/org/app:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(ImageRef::parse("app@sha256:abc").is_err());
        let pinned = ImageRef::parse("reg.io/app:v1").unwrap().with_digest(D);
        assert_eq!(pinned.to_string(), format!("reg.io/app@{D}"));
    }

    #[test]
    fn rejects_bad_references_with_reasons() {
        for bad in [
            "",
            "UPPER/app",
            "app:",
            "app:-x",
            "a//b",
            "app/",
            "reg.io:99999/app",
            "with space",
            "app!x",
            "a..b",
            "-app",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn separators_in_components() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a___b", "a._b", "a-.b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_registries() {
        assert!(registry_is_local("localhost"));
        assert!(registry_is_local("127.0.0.1:5000"));
        assert!(registry_is_local("[::1]:5000"));
        assert!(!registry_is_local("ghcr.io"));
        // Parsed as an address, not matched by prefix.
        assert!(registry_is_local("127.1.2.3:5000"));
        assert!(!registry_is_local("127.example.com"));
        assert!(!registry_is_local("127.0.0.1.nip.io:5000"));
        assert!(!registry_is_local("localhost.example.com"));
        assert!(!registry_is_local("[::2]:5000"));
        assert!(!registry_is_local("10.0.0.1:5000"));
    }
}
