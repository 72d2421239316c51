//! Memory sizes as users write them (`512m`, `2g`, `1073741824`).

/// Parses a size with an optional `k`, `m`, `g` or `t` suffix (binary units,
/// as the Docker engine reads them) into bytes.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (digits, shift) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 10),
        Some('m') => (&s[..s.len() - 1], 20),
        Some('g') => (&s[..s.len() - 1], 30),
        Some('t') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}` is not a size: write it like `512m` or `2g`"))?;
    n.checked_mul(1u64 << shift)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("`{raw}` is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1kb").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
