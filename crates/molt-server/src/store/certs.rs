//! HTTPS certificates by domain; the private key only ever sealed.

use super::*;

/// A stored certificate.
#[derive(Clone)]
pub struct CertRow {
    pub domain: String,
    /// `custom` (added by a person) or `acme` (ordered by Molt).
    pub source: String,
    pub chain_pem: String,
    pub key_sealed: Vec<u8>,
    pub issuer: String,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for CertRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRow")
            .field("domain", &self.domain)
            .field("source", &self.source)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn cert_from_row(r: &Row) -> rusqlite::Result<CertRow> {
    Ok(CertRow {
        domain: r.get("domain")?,
        source: r.get("source")?,
        chain_pem: r.get("chain_pem")?,
        key_sealed: r.get("key_sealed")?,
        issuer: r.get("issuer")?,
        not_before: r.get("not_before")?,
        not_after: r.get("not_after")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

impl Store {
    /// Saves a domain's certificate, replacing the one it had.
    pub fn upsert_cert(&self, cert: &CertRow) -> Result<()> {
        self.blocking(|| {
            let at = now();
            self.conn().execute(
                "INSERT INTO certs (domain, source, chain_pem, key_sealed, issuer, not_before,
                    not_after, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT(domain) DO UPDATE SET source = excluded.source,
                    chain_pem = excluded.chain_pem, key_sealed = excluded.key_sealed,
                    issuer = excluded.issuer, not_before = excluded.not_before,
                    not_after = excluded.not_after, updated_at = excluded.updated_at",
                params![
                    cert.domain,
                    cert.source,
                    cert.chain_pem,
                    cert.key_sealed,
                    cert.issuer,
                    cert.not_before,
                    cert.not_after,
                    at
                ],
            )?;
            Ok(())
        })
    }

    pub fn get_cert(&self, domain: &str) -> Result<Option<CertRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM certs WHERE domain = ?",
                [domain],
                cert_from_row,
            )
            .optional()?)
    }

    pub fn list_certs(&self) -> Result<Vec<CertRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM certs ORDER BY domain")?;
            let rows = stmt.query_map([], cert_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Removes a domain's certificate; false when there was none.
    pub fn remove_cert(&self, domain: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM certs WHERE domain = ?", [domain])?
            > 0)
    }
}

/// How ordering a domain's certificate from the ACME server goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrderRow {
    pub domain: String,
    pub app: String,
    /// `ordering`, `valid` or `failed`.
    pub state: String,
    /// The ACME server's problem detail (or why it could not be asked) of
    /// the last failure.
    pub problem: Option<String>,
    /// Failures in a row (the backoff grows with them).
    pub attempts: u32,
    /// Unix seconds before which no new order is placed.
    pub next_attempt: i64,
    pub updated_at: String,
}

fn acme_order_from_row(r: &Row) -> rusqlite::Result<AcmeOrderRow> {
    Ok(AcmeOrderRow {
        domain: r.get("domain")?,
        app: r.get("app")?,
        state: r.get("state")?,
        problem: r.get("problem")?,
        attempts: r.get("attempts")?,
        next_attempt: r.get("next_attempt")?,
        updated_at: r.get("updated_at")?,
    })
}

impl Store {
    pub fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT credentials_sealed FROM acme_accounts WHERE directory = ?",
                [directory],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn save_acme_account(&self, directory: &str, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO acme_accounts (directory, credentials_sealed, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(directory) DO UPDATE SET credentials_sealed = excluded.credentials_sealed",
            params![directory, sealed, now()],
        )?;
        Ok(())
    }

    pub fn acme_order(&self, domain: &str) -> Result<Option<AcmeOrderRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM acme_orders WHERE domain = ?",
                [domain],
                acme_order_from_row,
            )
            .optional()?)
    }

    pub fn list_acme_orders(&self) -> Result<Vec<AcmeOrderRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM acme_orders ORDER BY domain")?;
            let rows = stmt.query_map([], acme_order_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn save_acme_order(&self, row: &AcmeOrderRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO acme_orders (domain, app, state, problem, attempts, next_attempt, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(domain) DO UPDATE SET app = excluded.app, state = excluded.state,
                problem = excluded.problem, attempts = excluded.attempts,
                next_attempt = excluded.next_attempt, updated_at = excluded.updated_at",
            params![
                row.domain,
                row.app,
                row.state,
                row.problem,
                row.attempts,
                row.next_attempt,
                now()
            ],
        )?;
        Ok(())
    }

    /// Forgets order states of domains no App has any more.
    pub fn forget_acme_orders_except(&self, domains: &[String]) -> Result<()> {
        let all = self.list_acme_orders()?;
        for row in all.iter().filter(|r| !domains.contains(&r.domain)) {
            self.conn()
                .execute("DELETE FROM acme_orders WHERE domain = ?", [&row.domain])?;
        }
        Ok(())
    }
}
