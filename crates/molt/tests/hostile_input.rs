//! Generated hostile input against every API endpoint listed in the OpenAPI
//! document: malformed and mistyped JSON, path tricks, control characters,
//! huge and deeply nested values. Every answer must be a 4xx JSON error (or
//! a success), never a 5xx, and the server must stay up. Generated values
//! never name a reachable host: registries and images point at 127.0.0.1:1
//! or are invalid, so no test traffic leaves the machine.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// A small deterministic generator (xorshift), so a failure is repeatable.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn string(&mut self) -> String {
        let choices = [
            String::new(),
            "web".into(),
            "../../etc/passwd".into(),
            "a".repeat(5000),
            "with space".into(),
            "nul\0byte".into(),
            "line\nbreak".into(),
            "ünïcödé-名前".into(),
            "%2e%2e%2f".into(),
            "127.0.0.1:1/none:latest".into(),
            "UPPER/Case:tag".into(),
            "x@sha256:zz".into(),
            "1BAD=value".into(),
            "KEY=value".into(),
            "<script>alert(1)</script>".into(),
            "-rf".into(),
        ];
        self.pick(&choices).clone()
    }

    fn value(&mut self, depth: u32) -> Value {
        match self.next() % if depth > 3 { 6 } else { 9 } {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(2)),
            2 => json!(self.next() as i64),
            3 => json!(-1),
            4 => json!(1e308),
            5 => Value::String(self.string()),
            6 => Value::Array(
                (0..self.next() % 4)
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            7 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.next() % 4 {
                    m.insert(self.string(), self.value(depth + 1));
                }
                Value::Object(m)
            }
            _ => self.body_for_known_fields(depth + 1),
        }
    }

    /// Objects with the API's real field names and wrong or hostile values.
    fn body_for_known_fields(&mut self, depth: u32) -> Value {
        let fields = [
            "name",
            "image",
            "port",
            "health_path",
            "health_timeout",
            "domains",
            "env",
            "memory",
            "cpus",
            "gpus",
            "replicas",
            "strategy",
            "from",
            "with_secrets",
            "host",
            "username",
            "password",
            "deploy_id",
            "with_config",
            "hard",
            "set",
            "unset",
            "apply",
            "key",
            "value",
            "secret",
        ];
        let mut m = serde_json::Map::new();
        for _ in 0..(1 + self.next() % 6) {
            let field = *self.pick(&fields);
            let value = match field {
                // Never a host that could resolve elsewhere.
                "host" => json!(self
                    .pick(&["127.0.0.1:1", "bad host", "", "a/b", "[::1]:0"])
                    .to_string()),
                "image" => json!(self
                    .pick(&["127.0.0.1:1/x:y", "", "UPPER/x", "a//b", "x:-"])
                    .to_string()),
                _ => self.value(depth),
            };
            m.insert(field.to_string(), value);
        }
        Value::Object(m)
    }
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread")]
async fn no_generated_input_gets_a_5xx() {
    let server = MoltServer::start(None);
    let client = proxy_client(Duration::from_secs(30));
    let base = server.api_url();
    let doc: Value = client
        .get(format!("{base}/api/v1/openapi.json"))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"]
        .as_object()
        .expect("the document lists paths")
        .clone();
    let mut g = Gen(0x5eed_1234_abcd_ef01);
    let mut sent = 0;
    for (path, ops) in &paths {
        for (method, _) in ops.as_object().unwrap() {
            // Following streams never end; they get their own bounded check.
            let streams = path.ends_with("/events") || path.ends_with("/logs");
            for case in 0..30 {
                let mut concrete = path.clone();
                for param in ["{name}", "{id}", "{host}"] {
                    let raw = g.string();
                    let encoded: String = url_encode(&raw);
                    concrete =
                        concrete.replace(param, if encoded.is_empty() { "x" } else { &encoded });
                }
                let body = match case % 5 {
                    0 => "{not json".to_string(),
                    1 => nested(200),
                    2 => g.value(0).to_string(),
                    _ => g.body_for_known_fields(0).to_string(),
                };
                let mut req = client
                    .request(
                        method.to_uppercase().parse().unwrap(),
                        format!("{base}{concrete}"),
                    )
                    .bearer_auth(server.token())
                    .timeout(Duration::from_secs(if streams { 3 } else { 30 }));
                if method != "get" && method != "delete" {
                    req = req
                        .header("content-type", "application/json")
                        .body(body.clone());
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) if streams && e.is_timeout() => continue,
                    Err(e) => panic!("{method} {concrete}: {e}"),
                };
                let status = resp.status();
                sent += 1;
                assert!(
                    status.as_u16() < 500,
                    "{method} {concrete} with {} answered {status}: {}",
                    &body[..body.len().min(200)],
                    resp.text().await.unwrap_or_default()
                );
            }
        }
    }
    eprintln!(
        "{sent} generated requests across {} paths, no 5xx",
        paths.len()
    );
    assert!(sent > 300);
    let (status, _) = (
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 200, "the server is still up");
    // Whatever got created by a lucky valid body is still consistent.
    let apps = molt(&server, &["apps", "list", "--json"]);
    assert_eq!(apps.status, 0, "{apps}");
}

fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
