//! How an App's containers are confined, beyond `no-new-privileges`: each
//! App on a network of its own (other Apps reachable only through an
//! explicit `--link`), Docker's default capabilities minus `NET_RAW` (so a
//! compromised App cannot forge packets on its network) unless it asks, a
//! process-count limit, and optionally a read-only root filesystem. The
//! checks here run at create, before anything is stored or started.

use crate::store::{AppRow, Store};
use molt_core::api::CreateAppRequest;

/// Processes (threads included) a container may run unless the App says
/// (`--pids-limit`): enough for thread-pooled servers, low enough that a
/// fork bomb cannot exhaust the host's process table.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

/// The most Apps one App may link to.
pub const MAX_LINKS: usize = 32;

/// The capabilities Linux knows (without `CAP_`), as `--cap-add` takes them.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `--cap-add` values as the engine takes them: upper case, without `CAP_`,
/// each once. Unknown names (and `ALL`) are refused with the reason.
pub fn parse_caps(raw: &[String]) -> Result<Vec<String>, String> {
    let mut caps: Vec<String> = Vec::new();
    for r in raw {
        let upper = r.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if name == "ALL" {
            return Err("--cap-add ALL is refused: name each capability the App needs, e.g. --cap-add NET_RAW".into());
        }
        if !CAPABILITIES.contains(&name) {
            return Err(format!(
                "unknown capability `{}`: use a Linux capability name such as NET_RAW, NET_ADMIN or SYS_PTRACE (see `man 7 capabilities`)",
                r.chars().take(40).collect::<String>()
            ));
        }
        if !caps.iter().any(|c| c == name) {
            caps.push(name.to_string());
        }
    }
    Ok(caps)
}

/// A `--pids-limit` the App can live with.
pub fn check_pids_limit(n: u32) -> Result<u32, String> {
    if (16..=4_194_304).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "--pids-limit {n} is out of range: give 16 to 4194304 processes (default {DEFAULT_PIDS_LIMIT})"
        ))
    }
}

/// `--link` values: existing Apps other than `app`, each once.
pub fn check_links(store: &Store, app: &str, raw: &[String]) -> Result<Vec<String>, String> {
    let mut links: Vec<String> = Vec::new();
    for l in raw {
        let l = l.trim();
        if l == app {
            return Err(format!(
                "--link {app}: an App always reaches itself; link other Apps"
            ));
        }
        if store.get_app(l).map_err(|e| e.to_string())?.is_none() {
            return Err(format!(
                "--link {}: no App has that name; create it first (see `molt apps list`)",
                l.chars().take(80).collect::<String>()
            ));
        }
        if !links.iter().any(|x| x == l) {
            links.push(l.to_string());
        }
    }
    if links.len() > MAX_LINKS {
        return Err(format!("at most {MAX_LINKS} --link per App"));
    }
    Ok(links)
}

/// The links, added capabilities and process limit of a new App.
pub struct Confinement {
    pub links: Vec<String>,
    pub cap_add: Vec<String>,
    pub pids_limit: Option<u32>,
}

impl Confinement {
    /// Checks a create request's values; a template's (`base`) are kept
    /// where the request gives none. The error is an API code and message.
    pub fn of(
        store: &Store,
        req: &CreateAppRequest,
        name: &str,
        base: Option<&AppRow>,
    ) -> Result<Self, (&'static str, String)> {
        let links = if req.links.is_empty() {
            base.map(|b| b.links.clone()).unwrap_or_default()
        } else {
            check_links(store, name, &req.links).map_err(|e| ("invalid_link", e))?
        };
        let cap_add = if req.cap_add.is_empty() {
            base.map(|b| b.cap_add.clone()).unwrap_or_default()
        } else {
            parse_caps(&req.cap_add).map_err(|e| ("invalid_capability", e))?
        };
        let pids_limit = match req.pids_limit {
            Some(n) => Some(check_pids_limit(n).map_err(|e| ("invalid_pids_limit", e))?),
            None => base.and_then(|b| b.pids_limit),
        };
        Ok(Self {
            links,
            cap_add,
            pids_limit,
        })
    }
}

/// The process-count limit an App's containers run with.
pub fn pids_limit(app: &AppRow) -> u32 {
    app.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)
}

/// The memory limit of an App without `--memory`: three quarters of what the
/// host offers Apps, so that one App cannot take the memory the control
/// plane, the proxy and the engine need. `None` when that is unknown.
pub fn default_memory(host_offers: u64) -> Option<u64> {
    (host_offers > 0).then(|| host_offers / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let caps = parse_caps(&["net_raw".into(), "CAP_NET_ADMIN".into(), "NET_RAW".into()]);
        assert_eq!(caps.unwrap(), vec!["NET_RAW", "NET_ADMIN"]);
        assert!(parse_caps(&["ALL".into()])
            .unwrap_err()
            .contains("name each"));
        assert!(parse_caps(&["FLY".into()]).unwrap_err().contains("unknown"));
    }

    #[test]
    fn limits() {
        assert!(check_pids_limit(0).is_err());
        assert_eq!(check_pids_limit(100), Ok(100));
        assert_eq!(default_memory(4 << 30), Some(3 << 30));
        assert_eq!(default_memory(0), None);
    }
}
