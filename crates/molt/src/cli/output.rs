//! Human output: aligned tables, `key: value` blocks and the short forms of
//! digests and timestamps. Pure functions, so the layout is unit-tested and
//! stays the same for every command.

use molt_core::api::DeployEvent;

/// What a missing value looks like in tables and blocks.
pub const NONE: &str = "-";

/// Lays out `rows` under `headers` in columns separated by two spaces. The
/// last column is not padded, so lines carry no trailing whitespace.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < widths.len() {
                line.push_str(&" ".repeat(widths[i] - width(cell)));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&format!("{key:<w$}  {v}").replace('\n', &format!("\n{:w$}  ", "")));
        out.push('\n');
    }
    out
}

/// Characters, not bytes: values are mostly ASCII, and `…` must count as one.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// The first 12 hex digits of a digest (`sha256:` dropped), as `docker`
/// shows image ids.
pub fn short_digest(digest: Option<&str>) -> String {
    match digest {
        Some(d) => {
            let hex = d.split_once(':').map_or(d, |(_, h)| h);
            hex.chars().take(12).collect()
        }
        None => NONE.to_string(),
    }
}

/// `2025-01-02 10:11:12` from an RFC 3339 timestamp (the API's, in UTC).
pub fn short_time(rfc3339: &str) -> String {
    let s = rfc3339.replacen('T', " ", 1);
    let s = s.split('.').next().unwrap_or(&s);
    s.trim_end_matches('Z').chars().take(19).collect()
}

/// `10:11:12` from an RFC 3339 timestamp: enough for a deploy's timeline.
pub fn clock(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((_, t)) => t.chars().take(8).collect(),
        None => rfc3339.to_string(),
    }
}

/// The first line of a possibly long error, for table cells.
pub fn first_line(s: Option<&str>) -> String {
    match s.and_then(|s| s.lines().next()) {
        Some(l) if !l.trim().is_empty() => l.trim().to_string(),
        _ => NONE.to_string(),
    }
}

/// One timeline line: `HH:MM:SS  status  message`. The status column is
/// as wide as the longest status, so messages line up.
pub fn event_line(e: &DeployEvent) -> String {
    format!("{}  {:<15}  {}", clock(&e.at), e.status.as_str(), e.message)
}

/// Re-indents valid JSON text two spaces a level, keeping its fields in the
/// server's order (a parsed `serde_json::Value` would sort them).
pub fn pretty_json(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|n| matches!(n, '}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

pub fn or_none(s: Option<&str>) -> String {
    s.map_or_else(|| NONE.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_core::DeployStatus;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let t = table(
            &["NAME", "STATUS", "IMAGE"],
            &[
                vec!["web".into(), "running".into(), "nginx:1".into()],
                vec!["api-server".into(), "failed".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        STATUS   IMAGE\n\
             web         running  nginx:1\n\
             api-server  failed\n"
        );
    }

    #[test]
    fn tables_with_no_rows_print_the_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn key_values_align_and_indent_continuations() {
        let kv = key_values(&[("name", "web".into()), ("error", "a\nb".into())]);
        assert_eq!(kv, "name:   web\nerror:  a\n        b\n");
    }

    #[test]
    fn digests_and_times_shorten() {
        assert_eq!(
            short_digest(Some("sha256:0123456789abcdef0123")),
            "0123456789ab"
        );
        assert_eq!(short_digest(None), "-");
        assert_eq!(
            short_time("2025-01-02T10:11:12.345678Z"),
            "2025-01-02 10:11:12"
        );
        assert_eq!(short_time("2025-01-02T10:11:12Z"), "2025-01-02 10:11:12");
        assert_eq!(clock("2025-01-02T10:11:12.5Z"), "10:11:12");
        assert_eq!(first_line(Some("boom\nmore")), "boom");
        assert_eq!(first_line(None), "-");
    }

    #[test]
    fn json_is_reindented_in_its_own_order() {
        let raw = r#"{"name":"web","n":[1,2],"e":[],"o":{},"s":"a,b:{\"c\"}"}"#;
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            "{\n  \"name\": \"web\",\n  \"n\": [\n    1,\n    2\n  ],\n  \"e\": [],\n  \"o\": {},\n  \"s\": \"a,b:{\\\"c\\\"}\"\n}"
        );
        let a: serde_json::Value = serde_json::from_str(raw).unwrap();
        let b: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn event_lines_are_time_status_message() {
        let e = DeployEvent {
            seq: 1,
            at: "2025-01-02T10:11:12Z".into(),
            status: DeployStatus::Pulling,
            message: "pulling nginx".into(),
        };
        assert_eq!(event_line(&e), "10:11:12  pulling          pulling nginx");
    }
}
