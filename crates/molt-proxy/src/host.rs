//! Host names as the routing table keys them: lowercase, no port, no
//! trailing dot, so `Web.Example.com:8080` and `web.example.com` match.

use std::borrow::Cow;

/// Normalizes a `Host` header value (or a configured host); `None` when
/// nothing usable is left.
pub fn normalize(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: `[::1]:8080` keys as `[::1]`.
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@' || b.is_ascii_control())
    {
        return None;
    }
    // Borrowed when already in key form (the usual case): no allocation
    // per request.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn strips_port_case_and_dot() {
        assert_eq!(
            normalize("Web.Example.COM:8080").as_deref(),
            Some("web.example.com")
        );
        assert_eq!(
            normalize("web.example.com.").as_deref(),
            Some("web.example.com")
        );
        assert_eq!(
            normalize("web.example.com:").as_deref(),
            Some("web.example.com")
        );
        assert_eq!(normalize("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize("[::1]").as_deref(), Some("[::1]"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(normalize(""), None);
        assert_eq!(normalize(":80"), None);
        assert_eq!(normalize("a b"), None);
        assert_eq!(normalize("a:b:c"), None);
        assert_eq!(normalize("[::1"), None);
        assert_eq!(normalize("x/y"), None);
    }
}
