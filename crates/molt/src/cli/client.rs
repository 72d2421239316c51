//! The HTTP client of the API, and the mapping of everything that can go
//! wrong into the exit codes of the contract: 0 done, 1 failed (a deploy
//! failed, or the server broke), 2 bad usage or a refused request.

use anyhow::{Context, Result};
use clap::Args;
use molt_core::api::ApiError;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The command did what was asked.
pub const OK: u8 = 0;
/// The command ran but what it waited for failed (a deploy), or the server
/// failed (5xx).
pub const FAILED: u8 = 1;
/// Bad usage, a refused request, or no server to talk to.
pub const USAGE: u8 = 2;

/// How a request may take at most: creating an App checks its registry
/// before answering, which can take a while on a slow network.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of every command that talks to a server.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The Molt server's API (client commands).
    #[arg(
        long,
        global = true,
        env = "MOLT_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub server: String,
    /// The API token (client commands); by default the admin token in the data dir.
    #[arg(
        long,
        global = true,
        env = "MOLT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The data dir: where the server keeps its state and the admin token
    /// clients read when no --token is given (else $MOLT_DATA_DIR, else
    /// ~/.local/share/molt).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// An error that carries its exit code. Everything else exits with 1.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// No answer came (the server is down or restarting): worth retrying
    /// while following a deploy.
    pub unreachable: bool,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            unreachable: false,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A usage error or a refused request: exit 2.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError::new(USAGE, message).into()
}

/// The exit code for an error: the first [`CliError`] in its chain says;
/// anything unforeseen is a failure (1).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .map_or(FAILED, |e| e.code)
}

/// Exit code for an HTTP error status: refusals (4xx) are the caller's to
/// fix (2); server errors are failures (1).
pub fn exit_code_for_status(status: u16) -> u8 {
    if (400..500).contains(&status) {
        USAGE
    } else {
        FAILED
    }
}

/// Turns an error response into a message that says what to do.
pub fn api_failure(status: u16, body: &[u8]) -> CliError {
    let code = exit_code_for_status(status);
    let message = match serde_json::from_slice::<ApiError>(body) {
        Ok(ApiError { error }) => {
            let mut m = error.message;
            // The server's refusal may say already where the token is.
            if status == 401 && !m.contains("MOLT_TOKEN") {
                m.push_str(
                    ": check --token or $MOLT_TOKEN (the admin token is in the server's data dir, file admin-token)",
                );
            }
            if let Some(id) = error.deploy_id.filter(|id| !m.contains(id.as_str())) {
                m.push_str(&format!(
                    " (deploy {id} is in progress: wait for it, or `molt cancel` the App)"
                ));
            }
            m
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let text: String = text.chars().take(300).collect();
            if status == 401 {
                "the server refused the token: check --token or $MOLT_TOKEN".to_string()
            } else if text.is_empty() {
                format!("the server answered HTTP {status}")
            } else {
                format!("the server answered HTTP {status}: {text}")
            }
        }
    };
    CliError::new(code, message)
}

/// `http://HOST:PORT` from what users type: a bare `HOST:PORT` is taken as
/// plain HTTP, and a trailing slash is dropped.
pub fn normalize_server(raw: &str) -> Result<Url> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| {
        usage(format!(
            "`{raw}` is not a server URL ({e}): write it like http://127.0.0.1:7700"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage(format!(
            "`{raw}` is not an http:// or https:// URL: write it like http://127.0.0.1:7700"
        )));
    }
    Ok(url)
}

/// The token: the one given (flag or $MOLT_TOKEN), else the admin token the
/// server wrote into its data dir.
pub fn resolve_token(given: Option<&str>, data_dir: &Path) -> Result<String> {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let path = data_dir.join(molt_server::datadir::TOKEN_FILE);
    let how = format!(
        "pass --token or set $MOLT_TOKEN, or point --data-dir / $MOLT_DATA_DIR at the data dir of \
         `molt server` (it writes DATA_DIR/{} on first start)",
        molt_server::datadir::TOKEN_FILE
    );
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(usage(format!(
            "no API token: {} is empty; {how}",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage(format!(
            "no API token: {} does not exist; {how}",
            path.display()
        ))),
        Err(e) => Err(usage(format!(
            "no API token: cannot read {} ({e}); run as the user that runs `molt server`, or {how}",
            path.display()
        ))),
    }
}

/// A connection to one server with one token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    pub fn new(opts: &ClientOpts) -> Result<Client> {
        let base = normalize_server(&opts.server)?;
        let data_dir = molt_server::datadir::resolve(opts.data_dir.clone());
        let token = resolve_token(opts.token.as_deref(), &data_dir)?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-molt-client",
            reqwest::header::HeaderValue::from_static("cli"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("molt-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// `BASE/api/v1/SEGMENTS...`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    /// Sends a request; any error status becomes a [`CliError`].
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(timeout.unwrap_or(REQUEST_TIMEOUT));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_failure(status.as_u16(), &body).into())
    }

    /// Sends a request and keeps the answer's body (empty for 204).
    pub async fn json(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Answer> {
        let resp = self.send(method, url, body, None).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Answer(Vec::new()));
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        Ok(Answer(bytes.to_vec()))
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Answer> {
        self.json(Method::GET, self.url(segments), None).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Answer> {
        self.json(Method::POST, self.url(segments), Some(body))
            .await
    }

    pub async fn patch(&self, segments: &[&str], body: &Value) -> Result<Answer> {
        self.json(Method::PATCH, self.url(segments), Some(body))
            .await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<()> {
        self.send(Method::DELETE, self.url(segments), None, None)
            .await?;
        Ok(())
    }

    /// POSTs the file at `path` as the body (a build's context), streamed
    /// from disk, with `headers`; the answer, or the API's refusal.
    pub async fn upload(
        &self,
        url: Url,
        path: &Path,
        headers: &[(&str, String)],
    ) -> Result<Answer> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().await?.len();
        let mut req = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .header(reqwest::header::CONTENT_LENGTH, len)
            // A large context on a slow link.
            .timeout(Duration::from_secs(3600))
            .body(reqwest::Body::from(file));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Answer(body.to_vec()));
        }
        Err(api_failure(status.as_u16(), &body).into())
    }

    /// POSTs `body` asking to switch to the attach stream (`molt run`,
    /// `molt exec`); the upgraded connection, or the API's refusal.
    pub async fn upgrade(
        &self,
        url: Url,
        body: &Value,
        protocol: &str,
    ) -> Result<reqwest::Upgraded> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, protocol)
            // Starting may pull an image first.
            .timeout(Duration::from_secs(3600))
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return resp.upgrade().await.map_err(|e| self.transport(e));
        }
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Err(CliError::new(
                FAILED,
                "the server answered without switching to the command's stream: is it an older Molt, or is a proxy in front of it dropping `Upgrade`?",
            )
            .into());
        }
        Err(api_failure(status.as_u16(), &body).into())
    }

    /// Why a request got no answer, with what to check.
    pub fn transport(&self, e: reqwest::Error) -> anyhow::Error {
        // The innermost cause says what happened ("Connection refused").
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        let server = self.base.as_str().trim_end_matches('/');
        let message = if e.is_timeout() {
            format!("the Molt server at {server} did not answer in time ({detail})")
        } else if e.is_connect() || e.is_request() {
            format!(
                "cannot reach the Molt server at {server}: is `molt server` running? ({detail})"
            )
        } else {
            format!("lost the connection to the Molt server at {server} ({detail})")
        };
        CliError {
            code: USAGE,
            message,
            unreachable: true,
        }
        .into()
    }
}

/// A successful answer's JSON body, kept as the server wrote it so that
/// `--json` prints exactly that (fields in the server's order).
#[derive(Debug, Clone)]
pub struct Answer(pub Vec<u8>);

impl Answer {
    /// Reads the answer into its type, saying which answer did not fit.
    pub fn decode<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.0).with_context(|| {
            format!("the server's answer is not {what}: is it a different version of Molt?")
        })
    }

    pub fn value(&self) -> Result<Value> {
        self.decode("JSON")
    }

    /// Prints the answer for `--json`: pretty, in the server's order.
    pub fn print(&self) -> Result<()> {
        self.value()?; // only valid JSON is re-indented
        outln!(
            "{}",
            super::output::pretty_json(&String::from_utf8_lossy(&self.0))
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_exit_codes() {
        for s in [400, 401, 404, 409, 413, 422] {
            assert_eq!(exit_code_for_status(s), USAGE, "{s}");
        }
        for s in [500, 502, 503] {
            assert_eq!(exit_code_for_status(s), FAILED, "{s}");
        }
    }

    #[test]
    fn exit_code_follows_the_error_chain() {
        let e = usage("bad").context("while doing x");
        assert_eq!(exit_code(&e), USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), FAILED);
    }

    #[test]
    fn api_errors_keep_the_server_message_and_name_the_deploy() {
        let body =
            br#"{"error":{"code":"conflict","message":"web is deploying","deploy_id":"abc"}}"#;
        let e = api_failure(409, body);
        assert_eq!(e.code, USAGE);
        assert!(e.message.starts_with("web is deploying"), "{}", e.message);
        assert!(e.message.contains("abc"), "{}", e.message);

        let e = api_failure(500, b"oops");
        assert_eq!(e.code, FAILED);
        assert_eq!(e.message, "the server answered HTTP 500: oops");
        assert!(api_failure(401, b"").message.contains("token"));
    }

    #[test]
    fn a_refused_token_is_explained_once() {
        let body = br#"{"error":{"code":"unauthorized","message":"a valid admin token is required: pass --token or set MOLT_TOKEN"}}"#;
        let e = api_failure(401, body);
        assert_eq!(e.message.matches("MOLT_TOKEN").count(), 1, "{}", e.message);
        let body = br#"{"error":{"code":"unauthorized","message":"no token"}}"#;
        let e = api_failure(401, body);
        assert!(e.message.contains("$MOLT_TOKEN"), "{}", e.message);
    }

    #[test]
    fn token_comes_from_the_flag_then_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_token(Some(" t1 "), dir.path()).unwrap(), "t1");

        let missing = resolve_token(None, dir.path()).unwrap_err();
        assert_eq!(exit_code(&missing), USAGE);
        assert!(missing.to_string().contains("--token"), "{missing}");

        std::fs::write(dir.path().join("admin-token"), "secret\n").unwrap();
        assert_eq!(resolve_token(None, dir.path()).unwrap(), "secret");
        assert_eq!(resolve_token(Some(""), dir.path()).unwrap(), "secret");
    }

    #[test]
    fn server_urls_are_normalized() {
        assert_eq!(
            normalize_server("127.0.0.1:7700").unwrap().as_str(),
            "http://127.0.0.1:7700/"
        );
        assert_eq!(
            normalize_server("https://molt.example.com/")
                .unwrap()
                .as_str(),
            "https://molt.example.com/"
        );
        assert!(normalize_server("ftp://x").is_err());
    }
}
