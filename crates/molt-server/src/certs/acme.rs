//! ACME: Molt orders the certificate of every App domain that is not
//! `*.localhost` and has no certificate of a person's own, renews it at two
//! thirds of its lifetime, and records how ordering goes per domain (the
//! ACME server's problem detail on failure) so the App shows it. Failures
//! are retried with a growing backoff and never touch plain HTTP.
//!
//! Challenges are answered by the proxy: HTTP-01 on its HTTP listener,
//! TLS-ALPN-01 on its HTTPS listener; attempts alternate between the two
//! (when HTTPS is on), so one that cannot reach this host does not block
//! the other.

use super::inspect;
use crate::deploy::Deployer;
use crate::proxy_link::ProxyLink;
use crate::store::{AcmeOrderRow, CertRow};
use anyhow::{Context, Result};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use molt_proxy::tls::{normalize_domain, TlsCert};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Let's Encrypt's production directory (`--acme-directory`'s documented
/// value).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory, for trying things out.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How often the Apps' domains are looked at.
const TICK: Duration = Duration::from_secs(2);
/// The longest wait between two failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// How long one order may take, start to certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// `molt server --acme-*`.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    /// The account's contact, if any.
    pub email: Option<String>,
    /// A CA to trust for the directory's own HTTPS (a private ACME server).
    pub ca_file: Option<PathBuf>,
    /// The wait after a first failure; it doubles with each failure in a
    /// row, up to six hours.
    pub backoff: Duration,
    /// The share of a certificate's lifetime after which it is renewed:
    /// `DEFAULT_RENEW_AT` (two thirds); tests set it lower.
    pub renew_at: f64,
}

impl AcmeConfig {
    /// Refuses, before the server starts, a directory that is not an HTTPS
    /// URL or an `--acme-ca` that is not a readable PEM certificate: else
    /// the mistake would only show as failed orders, App by App.
    pub fn check(&self) -> Result<(), String> {
        let https = reqwest::Url::parse(&self.directory)
            .is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
        if !https {
            return Err(format!(
                "--acme-directory `{}` is not an https:// URL: give the ACME server's directory, e.g. {LETS_ENCRYPT}",
                self.directory
            ));
        }
        if let Some(file) = &self.ca_file {
            let pem = std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "cannot read --acme-ca {}: {e}; give the PEM file of the CA that signed the ACME server's HTTPS certificate",
                    file.display()
                )
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--acme-ca {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA certificate the ACME server's HTTPS is signed by",
                    file.display()
                ));
            }
        }
        Ok(())
    }
}

/// Renewal starts at two thirds of a certificate's lifetime.
pub const DEFAULT_RENEW_AT: f64 = 2.0 / 3.0;

/// Order states.
pub const ORDERING: &str = "ordering";
pub const VALID: &str = "valid";
pub const FAILED: &str = "failed";

pub struct Acme {
    config: AcmeConfig,
    deployer: Arc<Deployer>,
    proxy: Arc<ProxyLink>,
    /// The proxies on other nodes (`--proxy-peer`): they answer challenges
    /// too, since the ACME server may reach the domain at any node.
    peers: Vec<molt_proxy::AdminClient>,
    /// Whether the proxy serves HTTPS (TLS-ALPN-01 needs it).
    tls_alpn: bool,
    account: tokio::sync::Mutex<Option<Account>>,
}

/// Whether Molt orders a certificate for `domain`: a public-looking name,
/// not `localhost` or under it, not an address.
pub fn wants_certificate(domain: &str) -> bool {
    domain != "localhost"
        && !domain.ends_with(".localhost")
        && domain.parse::<std::net::IpAddr>().is_err()
        && !domain.starts_with("*.")
        && normalize_domain(domain).is_ok()
}

/// Whether a certificate is past `renew_at` of its lifetime.
pub fn due_for_renewal(not_before: i64, not_after: i64, now: i64, renew_at: f64) -> bool {
    let lifetime = (not_after - not_before).max(0) as f64;
    now >= not_before + (lifetime * renew_at.clamp(0.0, 1.0)) as i64
}

/// The wait after `failures` failures in a row.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The ACME problem type of a rate limit (RFC 8555, 6.7).
const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
/// The least wait after a rate limit that names no time: Let's Encrypt's
/// windows are hours to a week long, so a retry within the minute only
/// counts against the limit again.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// The wait a failure asks for beyond the backoff: for a rate limit, until
/// the time its detail names ("retry after 2026-12-01 05:00:00 UTC", as
/// Let's Encrypt words it; the client library does not hand the
/// `Retry-After` header of an error over), else at least an hour.
pub fn rate_limit_wait(problem: &str, now: i64) -> Option<Duration> {
    if !problem.contains(RATE_LIMITED) {
        return None;
    }
    let named = problem
        .find("retry after ")
        .map(|at| &problem[at + "retry after ".len()..])
        .and_then(|rest| rest.get(..19))
        .map(|stamp| unix(&format!("{}Z", stamp.replacen(' ', "T", 1))))
        .filter(|at| *at > 0);
    Some(match named {
        Some(at) if at > now => Duration::from_secs((at - now) as u64),
        _ => RATE_LIMIT_WAIT,
    })
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// What an ACME error says, for people: the server's problem detail and
/// type when it answered with one.
fn problem(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_text(&p),
        other => other.to_string(),
    }
}

fn problem_text(p: &instant_acme::Problem) -> String {
    let mut text = p.detail.clone().unwrap_or_else(|| "no detail given".into());
    if let Some(kind) = &p.r#type {
        text.push_str(&format!(" ({kind})"));
    }
    for sub in &p.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str(&format!("; {detail}"));
        }
    }
    text
}

/// What the proxy answers for one challenge, to withdraw afterwards.
enum Answer {
    Http01(String),
    Alpn01(String),
}

impl Acme {
    /// `peers`: the admin clients of the proxies on other nodes
    /// (`--proxy-peer`), which answer challenges too.
    pub fn new(
        config: AcmeConfig,
        deployer: Arc<Deployer>,
        proxy: Arc<ProxyLink>,
        peers: Vec<molt_proxy::AdminClient>,
        tls_alpn: bool,
    ) -> Arc<Acme> {
        Arc::new(Acme {
            config,
            deployer,
            proxy,
            peers,
            tls_alpn,
            account: tokio::sync::Mutex::new(None),
        })
    }

    /// Has every peer answer (or stop answering) a challenge as this
    /// node's proxy does. A peer that fails is logged and left out: the
    /// order fails only if the ACME server asks that very node.
    async fn on_peers(&self, request: &molt_proxy::admin::Request) {
        let calls = self.peers.iter().map(|peer| async move {
            if let Err(e) = peer.call(request, crate::proxy_peers::PEER_CALL_TIMEOUT).await {
                tracing::warn!(peer = %peer.socket_path().display(), "ACME: a proxy peer did not take a challenge change: {e}");
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Looks at the Apps' domains every two seconds for the life of the
    /// server.
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    tracing::warn!("ACME: {e:#}");
                }
                tokio::time::sleep(TICK).await;
            }
        });
    }

    /// Orders what is missing or due, one domain at a time.
    async fn tick(&self) -> Result<()> {
        let store = &self.deployer.store;
        let mut wanted = Vec::new();
        for app in store.list_apps()? {
            for domain in &app.domains {
                if wants_certificate(domain) {
                    wanted.push((app.name.clone(), domain.clone()));
                }
            }
        }
        if let Some(domain) = self.deployer.console_domain() {
            if wants_certificate(domain) {
                wanted.push((crate::console::ROUTE.to_string(), domain.to_string()));
            }
        }
        let domains: Vec<String> = wanted.iter().map(|(_, d)| d.clone()).collect();
        store.forget_acme_orders_except(&domains)?;
        let certs = store.list_certs()?;
        let now = super::unix_now();
        for (app, domain) in wanted {
            if self.covered_by_own(&certs, &domain) {
                continue;
            }
            if let Some(cert) = certs.iter().find(|c| c.domain == domain) {
                let (from, until) = (unix(&cert.not_before), unix(&cert.not_after));
                if !due_for_renewal(from, until, now, self.config.renew_at) {
                    continue;
                }
            }
            let last = store.acme_order(&domain)?;
            if last.as_ref().is_some_and(|o| o.next_attempt > now) {
                continue;
            }
            self.order(&app, &domain, last).await?;
        }
        Ok(())
    }

    /// A person's own certificate (for the name, or a wildcard over it)
    /// wins over ordering one.
    fn covered_by_own(&self, certs: &[CertRow], domain: &str) -> bool {
        certs.iter().any(|c| {
            c.source == super::SOURCE_CUSTOM
                && inspect::covers(std::slice::from_ref(&c.domain), domain)
        })
    }

    /// One attempt for one domain, recorded either way.
    async fn order(&self, app: &str, domain: &str, last: Option<AcmeOrderRow>) -> Result<()> {
        let store = &self.deployer.store;
        let failures = last.as_ref().map(|o| o.attempts).unwrap_or(0);
        let mut row = AcmeOrderRow {
            domain: domain.to_string(),
            app: app.to_string(),
            state: ORDERING.into(),
            problem: last.and_then(|o| o.problem),
            attempts: failures,
            next_attempt: 0,
            updated_at: String::new(),
        };
        store.save_acme_order(&row)?;
        // Alternate the challenge type with each failure, when both work.
        let alpn = self.tls_alpn && failures % 2 == 1;
        let kind = if alpn { "TLS-ALPN-01" } else { "HTTP-01" };
        tracing::info!(%app, %domain, challenge = kind, "ordering a certificate");
        let outcome = match tokio::time::timeout(ORDER_TIMEOUT, self.obtain(domain, alpn)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the ACME server did not finish the order within {} s",
                ORDER_TIMEOUT.as_secs()
            )),
        };
        let saved = match outcome {
            Ok(cert) => match inspect::facts(&cert.chain_pem) {
                Ok(facts) => super::save(&self.deployer, cert, super::SOURCE_ACME, &facts)
                    .await
                    .map_err(|e| format!("the certificate could not be kept: {e}")),
                Err(e) => Err(format!(
                    "the ACME server sent a certificate Molt cannot read: {e}"
                )),
            },
            Err(e) => Err(e),
        };
        match saved {
            Ok(cert) => {
                tracing::info!(%app, %domain, not_after = %cert.not_after, "certificate obtained");
                self.deployer.metrics.acme_order("issued");
                row.state = VALID.into();
                row.problem = None;
                row.attempts = 0;
                row.next_attempt = 0;
            }
            Err(why) => {
                row.attempts = failures + 1;
                let mut wait = backoff(self.config.backoff, row.attempts);
                if let Some(limited) = rate_limit_wait(&why, super::unix_now()) {
                    wait = wait.max(limited);
                }
                tracing::warn!(%app, %domain, challenge = kind, retry_in_s = wait.as_secs(), "ordering a certificate failed: {why}");
                self.deployer.metrics.acme_order("failed");
                row.state = FAILED.into();
                row.problem = Some(format!("{kind}: {why}"));
                row.next_attempt = super::unix_now() + wait.as_secs() as i64;
            }
        }
        store.save_acme_order(&row)?;
        Ok(())
    }

    /// The account: the stored one, else a new one (stored sealed).
    async fn account(&self) -> Result<Account> {
        let mut slot = self.account.lock().await;
        if let Some(account) = &*slot {
            return Ok(account.clone());
        }
        let dir = &self.config.directory;
        let builder = || match &self.config.ca_file {
            Some(file) => Account::builder_with_root(file),
            None => Account::builder(),
        };
        let purpose = format!("acme-account:{dir}");
        let store = &self.deployer.store;
        let account = match store.acme_account(dir)? {
            Some(sealed) => {
                let json = self.deployer.sealer.open(&purpose, &sealed)?;
                let credentials: AccountCredentials = serde_json::from_slice(&json)
                    .context("the stored ACME account cannot be read")?;
                builder()?.from_credentials(credentials).await?
            }
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(|c| c.as_str()).collect();
                let new = NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder()?.create(&new, dir.clone(), None).await?;
                let json = serde_json::to_vec(&credentials)?;
                store.save_acme_account(dir, &self.deployer.sealer.seal(&purpose, &json)?)?;
                tracing::info!(directory = %dir, "ACME account created");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Places an order for `domain`, answers its challenge through the
    /// proxy, and fetches the certificate. Errors are for people.
    async fn obtain(&self, domain: &str, alpn: bool) -> Result<TlsCert, String> {
        let account = self.account().await.map_err(|e| {
            format!(
                "the ACME directory {} cannot be used: {e:#}",
                self.config.directory
            )
        })?;
        let ids = [Identifier::Dns(domain.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(problem)?;
        let mut answers = Vec::new();
        let answered = self.answer(&mut order, domain, alpn, &mut answers).await;
        let ready = match answered {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
                .await
                .map_err(problem),
            Err(e) => Err(e),
        };
        for answer in answers {
            let request = match answer {
                Answer::Http01(token) => molt_proxy::admin::Request::RemoveHttp01 { token },
                Answer::Alpn01(domain) => molt_proxy::admin::Request::RemoveAlpn01 { domain },
            };
            let _ = self
                .proxy
                .admin()
                .call(&request, Duration::from_secs(10))
                .await;
            self.on_peers(&request).await;
        }
        match ready? {
            OrderStatus::Ready => {}
            _ => return Err(why_invalid(&mut order).await),
        }
        let key_pem = order.finalize().await.map_err(problem)?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(60)))
            .await
            .map_err(problem)?;
        Ok(TlsCert {
            domain: domain.to_string(),
            chain_pem,
            key_pem,
        })
    }

    /// Has the proxy answer each pending authorization's challenge, then
    /// tells the ACME server to validate.
    async fn answer(
        &self,
        order: &mut instant_acme::Order,
        domain: &str,
        alpn: bool,
        answers: &mut Vec<Answer>,
    ) -> Result<(), String> {
        let admin = self.proxy.admin();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(problem)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authorization for {domain} is {other:?}")),
            }
            let kind = if alpn {
                ChallengeType::TlsAlpn01
            } else {
                ChallengeType::Http01
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the ACME server offers no {kind:?} challenge"))?;
            let key_authorization = challenge.key_authorization();
            if alpn {
                let cert = alpn_certificate(domain, key_authorization.digest().as_ref())?;
                admin
                    .set_alpn01(cert.clone())
                    .await
                    .map_err(|e| format!("the proxy cannot answer the challenge: {e}"))?;
                answers.push(Answer::Alpn01(domain.to_string()));
                self.on_peers(&molt_proxy::admin::Request::SetAlpn01 { cert })
                    .await;
            } else {
                let token = challenge.token.clone();
                admin
                    .set_http01(&token, key_authorization.as_str())
                    .await
                    .map_err(|e| format!("the proxy cannot answer the challenge: {e}"))?;
                answers.push(Answer::Http01(token.clone()));
                self.on_peers(&molt_proxy::admin::Request::SetHttp01 {
                    token,
                    key_authorization: key_authorization.as_str().to_string(),
                })
                .await;
            }
            challenge.set_ready().await.map_err(problem)?;
        }
        Ok(())
    }
}

/// Why an order ended invalid: the failed challenge's problem, as the ACME
/// server put it.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(p) = &challenge.error {
                return problem_text(p);
            }
        }
    }
    "the ACME server marked the order invalid without saying why".into()
}

/// The self-signed certificate TLS-ALPN-01 validation expects (RFC 8737):
/// the domain, and the key authorization's digest in the acmeIdentifier
/// extension.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<TlsCert, String> {
    let failed = |e: rcgen::Error| format!("making the TLS-ALPN-01 certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(failed)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(TlsCert {
        domain: domain.to_string(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_not_https_or_a_ca_that_is_not_there_is_refused() {
        let config = |directory: &str, ca_file: Option<PathBuf>| AcmeConfig {
            directory: directory.into(),
            email: None,
            ca_file,
            backoff: Duration::from_secs(60),
            renew_at: DEFAULT_RENEW_AT,
        };
        assert_eq!(config(LETS_ENCRYPT, None).check(), Ok(()));
        for bad in ["notaurl", "http://acme.example.com/dir", "acme.example.com"] {
            let e = config(bad, None).check().unwrap_err();
            assert!(e.contains("not an https:// URL"), "{e}");
        }
        let e = config(LETS_ENCRYPT, Some("/nonexistent/ca.pem".into()))
            .check()
            .unwrap_err();
        assert!(
            e.contains("cannot read --acme-ca /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = config(LETS_ENCRYPT, Some(not_pem.clone()))
            .check()
            .unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        std::fs::write(
            &not_pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(config(LETS_ENCRYPT, Some(not_pem)).check(), Ok(()));
    }

    #[test]
    fn which_domains_get_a_certificate() {
        assert!(wants_certificate("app.example.com"));
        assert!(!wants_certificate("web.localhost"));
        assert!(!wants_certificate("localhost"));
        assert!(!wants_certificate("127.0.0.1"));
        assert!(!wants_certificate("*.example.com"));
    }

    #[test]
    fn renewal_starts_at_two_thirds_of_the_lifetime() {
        assert!(!due_for_renewal(0, 90, 59, DEFAULT_RENEW_AT));
        assert!(due_for_renewal(0, 90, 60, DEFAULT_RENEW_AT));
        assert!(due_for_renewal(0, 90, 0, 0.0));
    }

    #[test]
    fn a_rate_limit_waits_until_the_time_it_names() {
        let now = unix("2026-12-01T04:00:00Z");
        let limited = "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-01 05:30:00 UTC: see https://letsencrypt.org/docs/rate-limits/ (urn:ietf:params:acme:error:rateLimited)";
        assert_eq!(
            rate_limit_wait(limited, now),
            Some(Duration::from_secs(90 * 60))
        );
        let unnamed = "slow down (urn:ietf:params:acme:error:rateLimited)";
        assert_eq!(rate_limit_wait(unnamed, now), Some(RATE_LIMIT_WAIT));
        let past = limited.replace("2026-12-01 05:30:00", "2026-12-01 03:00:00");
        assert_eq!(rate_limit_wait(&past, now), Some(RATE_LIMIT_WAIT));
        let other = "connection refused (urn:ietf:params:acme:error:connection)";
        assert_eq!(rate_limit_wait(other, now), None);
    }

    #[test]
    fn backoff_doubles_up_to_six_hours() {
        let base = Duration::from_secs(60);
        assert_eq!(backoff(base, 1), Duration::from_secs(60));
        assert_eq!(backoff(base, 2), Duration::from_secs(120));
        assert_eq!(backoff(base, 3), Duration::from_secs(240));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }
}
