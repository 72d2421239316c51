//! HTTPS end to end: `molt server --https`, an App's own certificate added
//! with `molt certs add`, served by SNI and verified by curl against the
//! test CA; bad certificates refused with the reason; the proxy pushed its
//! certificates again after it restarted (it keeps keys in memory only);
//! nothing stored in clear.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A test CA, and certificates it signs written as PEM files.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Molt Test CA");
        let cert = params.self_signed(&key).expect("ca");
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `NAME.crt` (leaf then CA) and `NAME.key` under `dir` for a
    /// certificate naming `names`, valid `days` from now (negative: it
    /// expired).
    fn issue(&self, dir: &Path, file: &str, names: &[&str], days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            params.not_before = now + time::Duration::days(days * 2);
        } else {
            params.not_before = now - time::Duration::hours(1);
        }
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let crt = dir.join(format!("{file}.crt"));
        let k = dir.join(format!("{file}.key"));
        std::fs::write(&crt, format!("{}{}", cert.pem(), self.cert.pem())).expect("write crt");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (
            crt.to_string_lossy().into_owned(),
            k.to_string_lossy().into_owned(),
        )
    }

    fn write_ca(&self, dir: &Path) -> String {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.cert.pem()).expect("write ca");
        path.to_string_lossy().into_owned()
    }
}

/// `curl` over HTTPS to `host` at the proxy's HTTPS port on 127.0.0.1,
/// verifying against `ca`: (exit code, body, HTTP version).
fn curl(https: u16, host: &str, path: &str, ca: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca, "--resolve"])
        .arg(format!("{host}:{https}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{host}:{https}{path}"))
        .output()
        .expect("running curl (scripts/test-deps installs it)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every file under `dir`, for "no key in clear" checks.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn own_certificates_are_checked_served_by_sni_and_survive_a_proxy_restart() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let https = free_port();
    let https_addr = format!("127.0.0.1:{https}");
    let server = MoltServer::start_with(None, &["--https", &https_addr], &[]);
    create_app(&server, "web", &v1, &["--domain", "web.example.test"]);

    let pems = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = ca.write_ca(pems.path());

    // No certificate yet: the handshake is refused.
    let (code, out) = curl(https, "web.example.test", "/", &ca_file, &[]);
    assert_ne!(code, 0, "{out}");

    // Refused with the reason: a key of another certificate, an expired
    // certificate, one that names another domain.
    let (good_crt, good_key) = ca.issue(pems.path(), "good", &["web.example.test"], 90);
    let (_, other_key) = ca.issue(pems.path(), "other", &["web.example.test"], 90);
    let out = molt(
        &server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            &good_crt,
            "--key",
            &other_key,
        ],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(
        out.stderr.contains("does not belong to the certificate"),
        "{out}"
    );
    let (old_crt, old_key) = ca.issue(pems.path(), "old", &["web.example.test"], -3);
    let out = molt(
        &server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            &old_crt,
            "--key",
            &old_key,
        ],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("expired"), "{out}");
    let (elsewhere_crt, elsewhere_key) =
        ca.issue(pems.path(), "elsewhere", &["api.example.test"], 90);
    let out = molt(
        &server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            &elsewhere_crt,
            "--key",
            &elsewhere_key,
        ],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(
        out.stderr.contains("does not cover web.example.test"),
        "{out}"
    );
    assert!(out.stderr.contains("api.example.test"), "{out}");
    assert!(molt(&server, &["certs", "list", "--json"])
        .json()
        .as_array()
        .expect("list")
        .is_empty());

    // A good one: curl verifies it by SNI, over HTTP/2, and the App hears
    // that the client came over HTTPS.
    let out = ok(molt(
        &server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            &good_crt,
            "--key",
            &good_key,
        ],
    ));
    assert!(out.stdout.contains("Molt Test CA"), "{out}");
    let (code, body) = curl(
        https,
        "web.example.test",
        "/",
        &ca_file,
        &["-w", "\nhttp/%{http_version}"],
    );
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("testapp v1"), "{body}");
    assert!(body.ends_with("http/2"), "{body}");
    let (code, body) = curl(
        https,
        "web.example.test",
        "/headers",
        &ca_file,
        &["--http1.1"],
    );
    assert_eq!(code, 0, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{body}"
    );
    // Another name gets no certificate (none leaks the App's names).
    let (code, out) = curl(https, "web.localhost", "/", &ca_file, &["-k"]);
    assert_ne!(code, 0, "{out}");
    // Plain HTTP to a domain with a certificate is redirected to HTTPS;
    // the App's other domain (no certificate) is served as before.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", "Host: web.example.test"])
        .arg(format!("http://{}/a?b=1", server.proxy_addr()))
        .output()
        .expect("curl");
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        seen,
        format!("301 https://web.example.test:{https}/a?b=1"),
        "{seen}"
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await.trim(),
        "testapp v1"
    );

    // A wildcard, and one that expires soon: listed with a warning.
    let (wild_crt, wild_key) = ca.issue(pems.path(), "wild", &["*.apps.example.test"], 10);
    ok(molt(
        &server,
        &[
            "certs",
            "add",
            "*.apps.example.test",
            "--cert",
            &wild_crt,
            "--key",
            &wild_key,
        ],
    ));
    let out = ok(molt(&server, &["certs", "list"]));
    assert!(out.stdout.contains("DOMAIN"), "{out}");
    assert!(out.stdout.contains("web.example.test"), "{out}");
    assert!(out.stdout.contains("*.apps.example.test"), "{out}");
    assert!(out.stdout.contains("custom"), "{out}");
    assert!(
        out.stderr
            .contains("warning: the certificate for *.apps.example.test expires in"),
        "{out}"
    );
    assert!(!out.stderr.contains("web.example.test"), "{out}");
    let listed = molt(&server, &["certs", "list", "--json"]).json();
    assert_eq!(listed[1]["domain"], "web.example.test", "{listed}");
    assert_eq!(listed[1]["issuer"], "Molt Test CA", "{listed}");
    assert_eq!(listed[1]["expires_soon"], false, "{listed}");
    assert_eq!(listed[0]["expires_soon"], true, "{listed}");

    // The proxy keeps certificates in memory only: killed, restarted by
    // the server, it gets them pushed again.
    let old_pid = server.proxy_pid().expect("proxy pid");
    Command::new("kill")
        .args(["-KILL", &old_pid.to_string()])
        .status()
        .expect("kill");
    let back = wait_until(Duration::from_secs(30), || async {
        server.proxy_pid().is_some_and(|p| p != old_pid)
            && curl(https, "web.example.test", "/", &ca_file, &[]).0 == 0
    })
    .await;
    assert!(
        back,
        "HTTPS did not come back after the proxy restarted; log:\n{}",
        server.log()
    );

    // No private key in clear anywhere in the data dir.
    let key_pem = std::fs::read_to_string(&good_key).expect("key");
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let needle = &key_body[..40];
    for file in files_under(server.data_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(needle),
            "{} holds the private key in clear",
            file.display()
        );
    }

    // Removed: HTTPS for the domain stops.
    ok(molt(&server, &["certs", "remove", "web.example.test"]));
    let gone = wait_until(Duration::from_secs(10), || async {
        curl(https, "web.example.test", "/", &ca_file, &[]).0 != 0
    })
    .await;
    assert!(gone, "the removed certificate is still served");
    let out = molt(&server, &["certs", "remove", "web.example.test"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(
        out.stderr.contains("no certificate for web.example.test"),
        "{out}"
    );
    // A wildcard is removed by its name too.
    ok(molt(&server, &["certs", "remove", "*.apps.example.test"]));
    let left = molt(&server, &["certs", "list", "--json"]).json();
    assert!(left.as_array().expect("list").is_empty(), "{left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restarted_with_https_gets_a_proxy_that_serves_it() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let mut server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--domain", "web.example.test"]);
    let pems = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = ca.write_ca(pems.path());
    let (crt, key) = ca.issue(pems.path(), "web", &["web.example.test"], 90);
    ok(molt(
        &server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            &crt,
            "--key",
            &key,
        ],
    ));
    let old_proxy = server.proxy_pid().expect("proxy pid");

    // The proxy outlives the server; the server comes back with --https.
    let https = free_port();
    server.restart_with(&["--https", &format!("127.0.0.1:{https}")]);
    let served = wait_until(Duration::from_secs(30), || async {
        curl(https, "web.example.test", "/", &ca_file, &[]).0 == 0
    })
    .await;
    assert!(served, "no HTTPS after the restart; log:\n{}", server.log());
    assert_ne!(
        server.proxy_pid(),
        Some(old_proxy),
        "the proxy was restarted in place"
    );
    // HTTP still serves, on the same socket.
    assert_eq!(served_http(&server).await, "testapp v1");
}

/// Plain HTTP to `host` at the proxy: `"CODE REDIRECT_URL"` (the redirect
/// empty when there is none).
fn plain_http(server: &MoltServer, host: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{redirect_url}"])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://{}{path}", server.proxy_addr()))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_and_hsts_per_app_and_the_console_over_https() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let [https, metrics] = free_ports::<2>();
    let server = MoltServer::start_with(
        None,
        &[
            "--https",
            &format!("127.0.0.1:{https}"),
            "--console-domain",
            "molt.example.test",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ],
        &[],
    );
    create_app(
        &server,
        "web",
        &v1,
        &["--domain", "web.example.test", "--hsts", "600"],
    );
    let shown = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(shown["https_redirect"], true, "{shown}");
    assert_eq!(shown["hsts_max_age_secs"], 600, "{shown}");
    let pems = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = ca.write_ca(pems.path());
    for (name, domain) in [
        ("web", "web.example.test"),
        ("console", "molt.example.test"),
    ] {
        let (crt, key) = ca.issue(pems.path(), name, &[domain], 90);
        ok(molt(
            &server,
            &["certs", "add", domain, "--cert", &crt, "--key", &key],
        ));
    }

    // HSTS over HTTPS only; plain HTTP is redirected.
    let (code, out) = curl(https, "web.example.test", "/", &ca_file, &["-i"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=600"),
        "{out}"
    );
    assert_eq!(
        plain_http(&server, "web.example.test", "/x"),
        format!("301 https://web.example.test:{https}/x")
    );

    // --no-redirect: plain HTTP is served; HSTS off with 0. No container
    // is replaced for either: they live in the route.
    let before = molt(&server, &["apps", "show", "web", "--json"]).json()["containers"].clone();
    ok(molt(
        &server,
        &["apps", "update", "web", "--no-redirect", "--hsts", "0"],
    ));
    assert_eq!(plain_http(&server, "web.example.test", "/"), "200");
    let (code, out) = curl(https, "web.example.test", "/", &ca_file, &["-i"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{out}"
    );
    let shown = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(shown["https_redirect"], false, "{shown}");
    assert!(shown["hsts_max_age_secs"].is_null(), "{shown}");
    assert_eq!(shown["containers"], before, "{shown}");
    let text = ok(molt(&server, &["apps", "show", "web"]));
    assert!(text.stdout.contains("no redirect to HTTPS"), "{text}");
    ok(molt(&server, &["apps", "update", "web", "--redirect"]));
    assert_eq!(
        plain_http(&server, "web.example.test", "/x"),
        format!("301 https://web.example.test:{https}/x")
    );
    let out = molt(&server, &["apps", "update", "web", "--hsts", "99999999999"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("--hsts must be"), "{out}");

    // The console domain is Molt's: no App may take it.
    let out = molt(
        &server,
        &["apps", "update", "web", "--add-domain", "molt.example.test"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("Molt's dashboard and API"), "{out}");

    // The API through the console domain, with the token.
    let auth = format!("Authorization: Bearer {}", server.token());
    let reached = wait_until(Duration::from_secs(10), || async {
        let (code, out) = curl(
            https,
            "molt.example.test",
            "/api/v1/apps",
            &ca_file,
            &["-H", &auth],
        );
        code == 0 && out.contains("\"web\"")
    })
    .await;
    assert!(
        reached,
        "the API is not served at the console domain; log:\n{}",
        server.log()
    );
    // Plain HTTP to the console goes to HTTPS.
    assert_eq!(
        plain_http(&server, "molt.example.test", "/login"),
        format!("301 https://molt.example.test:{https}/login")
    );

    // Logging in to the dashboard over HTTPS: the cookies are Secure and
    // `__Host-` prefixed, and the session works.
    let jar = pems.path().join("cookies");
    let jar = jar.to_str().expect("path");
    let (code, page) = curl(
        https,
        "molt.example.test",
        "/login",
        &ca_file,
        &["-i", "-c", jar, "-b", jar],
    );
    assert_eq!(code, 0, "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("set-cookie: __host-molt_login="), "{page}");
    assert!(lower.contains("; secure"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form's csrf field")
        .to_string();
    let form = form_body(&[("csrf", &csrf), ("token", server.token()), ("next", "/")]);
    let (code, answer) = curl(
        https,
        "molt.example.test",
        "/login",
        &ca_file,
        &["-i", "-c", jar, "-b", jar, "--data", &form],
    );
    assert_eq!(code, 0, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("set-cookie: __host-molt_session="),
        "{answer}"
    );
    assert!(
        lower
            .lines()
            .any(|l| l.starts_with("set-cookie: __host-molt_session=") && l.contains("; secure")),
        "{answer}"
    );
    let (code, home) = curl(
        https,
        "molt.example.test",
        "/",
        &ca_file,
        &["-i", "-b", jar],
    );
    assert_eq!(code, 0, "{home}");
    assert!(home.starts_with("HTTP/2 200"), "{home}");
    assert!(home.contains("web"), "{home}");
    // Molt's secure cookie never reaches an App.
    let (code, seen) = curl(
        https,
        "web.example.test",
        "/headers",
        &ca_file,
        &["-H", "Cookie: __Host-molt_session=abc; keep=1"],
    );
    assert_eq!(code, 0, "{seen}");
    assert!(!seen.contains("molt_session"), "{seen}");
    assert!(seen.contains("keep=1"), "{seen}");

    // Metrics: each certificate by its expiry.
    let metrics = http_get(SocketAddr::from(([127, 0, 0, 1], metrics)), "/metrics")
        .expect("metrics")
        .text();
    for domain in ["web.example.test", "molt.example.test"] {
        assert!(
            metrics.contains(&format!(
                "molt_certificate_expiry_seconds{{domain=\"{domain}\",source=\"custom\"}}"
            )),
            "{metrics}"
        );
    }
}

async fn served_http(server: &MoltServer) -> String {
    served(server.proxy_addr(), "web.localhost").await
}
