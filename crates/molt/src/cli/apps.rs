//! `molt apps ...`: create, list, show, scale and delete Apps.

use super::client::{usage, Client, OK};
use super::follow;
use super::output::{key_values, or_none, short_digest, short_time, table, NONE};
use anyhow::Result;
use clap::{Args, Subcommand};
use molt_core::api::{AppView, CreateAppRequest, DeployStarted, UpdateAppRequest};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an App and deploy its first version.
    Create(Box<CreateArgs>),
    /// List the Apps.
    List(JsonFlag),
    /// Show one App.
    Show(ShowArgs),
    /// Change an App's settings. A new port, health check or resources start
    /// new containers through the health-checked swap (the App keeps its
    /// old settings if they fail); domains, timeouts and the strategy move
    /// only the route, at once.
    Update(Box<UpdateArgs>),
    /// Change how many containers serve an App, with no downtime: new ones
    /// are health-checked before they take requests, removed ones drain first.
    Scale(ScaleArgs),
    /// Delete an App: its containers stop and its routes go away.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    pub name: String,
    /// How many containers should serve the App (1 to 100).
    #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub replicas: u32,
    /// Return once the scale has started instead of following it.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The App's name: lowercase letters, digits and `-`; it serves at NAME.localhost.
    pub name: String,
    /// The image to run, e.g. `nginx:1.27` or `ghcr.io/acme/web@sha256:...`.
    #[arg(long, value_name = "REF", required_unless_present = "from")]
    pub image: Option<String>,
    /// The port the container listens on.
    #[arg(long, value_name = "PORT", required_unless_present = "from")]
    pub port: Option<u16>,
    /// HTTP path that answers 2xx when healthy (else a TCP connect is the check).
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Seconds a deploy waits for the new version to become healthy.
    #[arg(long, value_name = "SECS")]
    pub health_timeout: Option<u64>,
    /// Seconds after a container starts during which failed health checks
    /// do not count (default 0); the health timeout runs after it, and
    /// autoheal leaves the container alone meanwhile.
    #[arg(long, value_name = "SECS")]
    pub start_period: Option<u64>,
    /// A host routed to the App besides NAME.localhost (repeatable).
    #[arg(long = "domain", value_name = "HOST")]
    pub domains: Vec<String>,
    /// An environment variable (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit, e.g. `512m` or `2g`.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit, e.g. `0.5`.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// GPUs to give each container.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// How many containers serve the App.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// How a new version replaces the old one.
    #[arg(long, value_parser = ["auto", "bluegreen", "recreate", "rolling"])]
    pub strategy: Option<String>,
    /// How long an old version keeps its in-flight requests and open
    /// WebSockets after a swap before they are closed (default 30).
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// How long the proxy waits for the App's answer before a 504
    /// (default 60).
    #[arg(long, value_name = "SECS")]
    pub upstream_timeout: Option<u64>,
    /// Keep serving plain HTTP once the App's domain has a certificate
    /// (by default plain HTTP is redirected to HTTPS).
    #[arg(long)]
    pub no_redirect: bool,
    /// Send `Strict-Transport-Security: max-age=SECS` over HTTPS, e.g.
    /// 31536000 (a year); browsers then refuse plain HTTP for that long.
    #[arg(long, value_name = "SECS")]
    pub hsts: Option<u64>,
    /// The largest request body the proxy passes on, e.g. `10m`; larger
    /// ones get a 413 (default 100m).
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Close a WebSocket (any upgraded connection) with no byte either way
    /// for this long (default 300).
    #[arg(long, value_name = "SECS")]
    pub tunnel_idle_timeout: Option<u64>,
    /// Copy the settings of an existing App (a template): its image by
    /// digest, port, health check, resources, replicas, strategy and plain
    /// environment. Flags given here override the copied values.
    #[arg(long, value_name = "APP")]
    pub from: Option<String>,
    /// With --from: copy the App's secret variables too.
    #[arg(long, requires = "from")]
    pub with_secrets: bool,
    /// An App this one may reach, by its name (repeatable): this App's
    /// containers join that App's network. Every other App is unreachable.
    #[arg(long = "link", value_name = "APP")]
    pub links: Vec<String>,
    /// A Linux capability to add to the default set, which lacks NET_RAW
    /// (repeatable), e.g. `--cap-add NET_RAW` for ping.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// The most processes (threads included) a container may run (default 1024).
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u32>,
    /// Run with a read-only root filesystem; `/tmp` stays writable (a tmpfs).
    #[arg(long)]
    pub read_only: bool,
    /// A Swarm placement constraint (repeatable), e.g.
    /// `node.labels.gpu==true`; on a single host it is ignored.
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraints: Vec<String>,
    /// Return once the deploy has started instead of following it.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    /// The port the container listens on.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// HTTP path that answers 2xx when healthy.
    #[arg(long, value_name = "PATH", conflicts_with = "no_health_path")]
    pub health_path: Option<String>,
    /// Check with a TCP connect to the port instead of an HTTP path.
    #[arg(long)]
    pub no_health_path: bool,
    /// Seconds a deploy waits for a new container to become healthy.
    #[arg(long, value_name = "SECS")]
    pub health_timeout: Option<u64>,
    /// Milliseconds between health checks (10 to 60000).
    #[arg(long, value_name = "MS")]
    pub health_interval: Option<u64>,
    /// Seconds after start during which failed health checks do not count.
    #[arg(long, value_name = "SECS")]
    pub start_period: Option<u64>,
    /// Memory limit, e.g. `512m` or `2g`.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit, e.g. `0.5`.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// GPUs to give each container.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Route this host to the App too (repeatable).
    #[arg(long = "add-domain", value_name = "HOST")]
    pub add_domains: Vec<String>,
    /// Stop routing this host to the App (repeatable); NAME.localhost stays.
    #[arg(long = "remove-domain", value_name = "HOST")]
    pub remove_domains: Vec<String>,
    /// Seconds an old container keeps its in-flight requests after a swap.
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Seconds the proxy waits for the App's answer before a 504.
    #[arg(long, value_name = "SECS")]
    pub upstream_timeout: Option<u64>,
    /// Serve plain HTTP even once the domain has a certificate.
    #[arg(long, conflicts_with = "redirect")]
    pub no_redirect: bool,
    /// Redirect plain HTTP to HTTPS once the domain has a certificate (the
    /// default; undoes --no-redirect).
    #[arg(long)]
    pub redirect: bool,
    /// Send `Strict-Transport-Security: max-age=SECS` over HTTPS; 0 stops
    /// sending it.
    #[arg(long, value_name = "SECS")]
    pub hsts: Option<u64>,
    /// The largest request body the proxy passes on, e.g. `10m`.
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Close a WebSocket with no byte either way for this long.
    #[arg(long, value_name = "SECS")]
    pub tunnel_idle_timeout: Option<u64>,
    /// How later deploys replace the serving version.
    #[arg(long, value_parser = ["auto", "bluegreen", "recreate", "rolling"])]
    pub strategy: Option<String>,
    /// How many containers serve the App.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// A Swarm placement constraint (repeatable); the ones given replace
    /// the App's, e.g. `--constraint node.labels.gpu==true`.
    #[arg(
        long = "constraint",
        value_name = "EXPR",
        conflicts_with = "no_constraints"
    )]
    pub constraints: Vec<String>,
    /// Remove every placement constraint.
    #[arg(long)]
    pub no_constraints: bool,
    /// Go ahead when the change must stop the serving version first (new
    /// memory or GPUs that do not fit beside it: a recreate, requests held).
    #[arg(long)]
    pub yes: bool,
    /// Return once the change has started instead of following it.
    #[arg(long)]
    pub detach: bool,
}

/// The request body for `apps update`, from the flags.
pub fn update_request(args: &UpdateArgs) -> Result<UpdateAppRequest> {
    let req = UpdateAppRequest {
        port: args.port,
        health_path: args.health_path.clone(),
        no_health_path: args.no_health_path,
        health_timeout: args.health_timeout,
        health_interval_ms: args.health_interval,
        start_period: args.start_period,
        memory: args.memory.clone(),
        cpus: args.cpus,
        gpus: args.gpus,
        add_domains: args.add_domains.clone(),
        remove_domains: args.remove_domains.clone(),
        drain_timeout_secs: args.drain_timeout,
        upstream_timeout_secs: args.upstream_timeout,
        https_redirect: match (args.redirect, args.no_redirect) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        hsts_max_age_secs: args.hsts,
        max_body: args.max_body.clone(),
        tunnel_idle_timeout_secs: args.tunnel_idle_timeout,
        strategy: args.strategy.clone(),
        replicas: args.replicas,
        constraints: args.constraints.clone(),
        no_constraints: args.no_constraints,
        yes: args.yes,
    };
    if req.is_empty() {
        return Err(usage(format!(
            "nothing to change: give at least one setting, e.g. `molt apps update {} --port 8080` (see `molt apps update --help`)",
            args.name
        )));
    }
    Ok(req)
}

async fn update(client: &Client, args: UpdateArgs) -> Result<u8> {
    let body = serde_json::to_value(update_request(&args)?)?;
    let answer = client.patch(&["apps", &args.name], &body).await?;
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, args.detach).await
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub name: String,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
    /// Delete without asking.
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(client: &Client, command: AppsCommand) -> Result<u8> {
    match command {
        AppsCommand::Create(args) => create(client, *args).await,
        AppsCommand::List(args) => list(client, args.json).await,
        AppsCommand::Show(args) => show(client, &args.name, args.json).await,
        AppsCommand::Update(args) => update(client, *args).await,
        AppsCommand::Scale(args) => scale(client, args).await,
        AppsCommand::Delete(args) => delete(client, &args.name, args.yes).await,
    }
}

async fn scale(client: &Client, args: ScaleArgs) -> Result<u8> {
    let body = serde_json::json!({ "replicas": args.replicas });
    let answer = client.post(&["apps", &args.name, "scale"], &body).await?;
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, args.detach).await
}

/// The request body for `apps create`, from the flags.
pub fn create_request(args: &CreateArgs) -> Result<CreateAppRequest> {
    if args.from.is_none() && (args.image.is_none() || args.port.is_none()) {
        return Err(usage(
            "give --image REF and --port PORT (or --from APP to copy an App)",
        ));
    }
    Ok(CreateAppRequest {
        name: args.name.clone(),
        image: args.image.clone().unwrap_or_default(),
        port: args.port.unwrap_or(0),
        from: args.from.clone(),
        with_secrets: args.with_secrets,
        health_path: args.health_path.clone(),
        health_timeout: args.health_timeout,
        start_period: args.start_period,
        domains: args.domains.clone(),
        env: args.env.clone(),
        memory: args.memory.clone(),
        cpus: args.cpus,
        gpus: args.gpus,
        replicas: args.replicas,
        strategy: args.strategy.clone(),
        drain_timeout_secs: args.drain_timeout,
        upstream_timeout_secs: args.upstream_timeout,
        no_redirect: args.no_redirect,
        hsts_max_age_secs: args.hsts,
        max_body: args.max_body.clone(),
        tunnel_idle_timeout_secs: args.tunnel_idle_timeout,
        links: args.links.clone(),
        cap_add: args.cap_add.clone(),
        pids_limit: args.pids_limit,
        read_only: args.read_only,
        constraints: args.constraints.clone(),
        ..CreateAppRequest::default()
    })
}

async fn create(client: &Client, args: CreateArgs) -> Result<u8> {
    let body = serde_json::to_value(create_request(&args)?)?;
    let answer = client.post(&["apps"], &body).await?;
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, args.detach).await
}

async fn list(client: &Client, json: bool) -> Result<u8> {
    let value = client.get(&["apps"]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let apps: Vec<AppView> = value.decode("a list of Apps")?;
    if apps.is_empty() {
        outln!("No Apps yet. Create one with: molt apps create NAME --image REF --port PORT");
        return Ok(OK);
    }
    out!("{}", apps_table(&apps));
    Ok(OK)
}

/// NAME STATUS IMAGE DIGEST REPLICAS LAST DEPLOY.
pub fn apps_table(apps: &[AppView]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.status.to_string(),
                a.image.clone(),
                short_digest(a.digest.as_deref()),
                a.replicas.to_string(),
                a.last_deploy.as_ref().map_or_else(
                    || NONE.to_string(),
                    |d| format!("{} {}, {}", d.kind, d.status, short_time(&d.created_at)),
                ),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATUS",
            "IMAGE",
            "DIGEST",
            "REPLICAS",
            "LAST DEPLOY",
        ],
        &rows,
    )
}

async fn show(client: &Client, name: &str, json: bool) -> Result<u8> {
    let value = client.get(&["apps", name]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let app: AppView = value.decode("an App")?;
    out!("{}", app_details(&app));
    Ok(OK)
}

/// HTTPS per domain, in one line: `d1 valid (acme, until ...); d2 failed: ...`.
fn https_line(a: &AppView) -> String {
    if a.https.is_empty() {
        return "none".into();
    }
    a.https
        .iter()
        .map(|h| {
            let mut s = format!("{} {}", h.domain, h.state);
            if let (Some(source), Some(until)) = (&h.source, &h.not_after) {
                s.push_str(&format!(" ({source}, until {})", short_time(until)));
            }
            if let Some(problem) = &h.problem {
                s.push_str(&format!(", last order failed: {problem}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What plain HTTP gets, and HSTS: `redirected to HTTPS once a
/// certificate is in force; HSTS max-age 31536000 s`.
fn plain_http_line(a: &AppView) -> String {
    let redirect = if a.https_redirect {
        "redirected to HTTPS once a certificate is in force"
    } else {
        "served (no redirect to HTTPS)"
    };
    match a.hsts_max_age_secs {
        Some(age) => format!("{redirect}; HSTS max-age {age} s"),
        None => redirect.to_string(),
    }
}

/// `apps show` as `key: value` lines.
pub fn app_details(a: &AppView) -> String {
    let health = match (&a.health_check, &a.health.path) {
        (Some(check), _) => check.clone(),
        (None, Some(p)) => format!("GET {p} answers 2xx"),
        (None, None) => format!("TCP connect to port {}", a.port),
    };
    let mut pairs = vec![
        ("name", a.name.clone()),
        ("status", a.status.to_string()),
        ("image", a.image.clone()),
    ];
    // After a rollback the App serves an earlier image, pinned by digest,
    // while `image` is still what a redeploy would pull.
    if let Some(serving) = a.serving_image.as_ref().filter(|s| **s != a.image) {
        pairs.push((
            "serving",
            format!(
                "{serving} (a rollback: `molt redeploy {}` would deploy {} again)",
                a.name, a.image
            ),
        ));
    }
    pairs.extend([
        ("digest", or_none(a.digest.as_deref())),
        ("port", a.port.to_string()),
        (
            "health",
            match a.health.start_period_ms / 1000 {
                0 => format!("{health}, within {} s", a.health.deploy_timeout_secs),
                start => format!(
                    "{health}, within {} s after a start period of {start} s",
                    a.health.deploy_timeout_secs
                ),
            },
        ),
        ("domains", a.domains.join(", ")),
        ("https", https_line(a)),
        ("plain http", plain_http_line(a)),
        ("replicas", a.replicas.to_string()),
        ("containers", containers_line(a)),
        ("strategy", a.strategy.clone()),
        (
            "memory",
            a.memory_bytes.map_or_else(
                || "the default limit (3/4 of the memory the host offers Apps)".to_string(),
                format_bytes,
            ),
        ),
        (
            "cpus",
            a.cpus
                .map_or_else(|| "no limit".to_string(), |c| c.to_string()),
        ),
        ("gpus", a.gpus.to_string()),
        (
            "links",
            or_none(
                Some(&a.links.join(", "))
                    .filter(|l| !l.is_empty())
                    .map(String::as_str),
            ),
        ),
        (
            "capabilities",
            if a.cap_add.is_empty() {
                "Docker's default set without NET_RAW".to_string()
            } else {
                format!("Docker's default set, plus {}", a.cap_add.join(", "))
            },
        ),
        ("pids limit", a.pids_limit.to_string()),
        (
            "constraints",
            or_none(
                Some(&a.constraints.join(", "))
                    .filter(|c| !c.is_empty())
                    .map(String::as_str),
            ),
        ),
        (
            "root filesystem",
            if a.read_only {
                "read-only (/tmp writable)"
            } else {
                "writable"
            }
            .to_string(),
        ),
        ("drain timeout", format!("{} s", a.drain_timeout_secs)),
        (
            "limits",
            format!(
                "request bodies up to {}; an idle WebSocket closes after {} s",
                format_bytes(a.max_body_bytes),
                a.tunnel_idle_timeout_secs
            ),
        ),
        ("current deploy", or_none(a.current_deploy.as_deref())),
    ]);
    if let Some(d) = &a.last_deploy {
        pairs.push((
            "last deploy",
            format!(
                "{} {} {}, {}",
                d.id,
                d.kind,
                d.status,
                short_time(&d.created_at)
            ),
        ));
        if let Some(e) = &d.error {
            pairs.push(("last error", e.clone()));
        }
    }
    pairs.push(("created", short_time(&a.created_at)));
    pairs.push(("updated", short_time(&a.updated_at)));
    key_values(&pairs)
}

/// `0 1a2b3c4d5e6f 172.18.0.3:8080, 1 ... (out of rotation)`: the serving
/// containers by replica.
fn containers_line(a: &AppView) -> String {
    if a.containers.is_empty() {
        return NONE.to_string();
    }
    a.containers
        .iter()
        .map(|c| {
            format!(
                "{} {} {}{}",
                c.replica,
                &c.id[..c.id.len().min(12)],
                c.address.as_deref().unwrap_or(NONE),
                if c.in_rotation {
                    ""
                } else {
                    " (out of rotation)"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `512 MiB` rather than a long number of bytes.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {unit}", b / size);
        }
    }
    format!("{b} bytes")
}

async fn delete(client: &Client, name: &str, yes: bool) -> Result<u8> {
    if !yes {
        confirm_delete(name)?;
    }
    client.delete(&["apps", name]).await?;
    outln!("Deleted App {name}.");
    Ok(OK)
}

/// Asks on a terminal for the App's name; refuses without one, so a script
/// never deletes by accident.
fn confirm_delete(name: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "refusing to delete App {name} without confirmation: pass --yes"
        )));
    }
    eprint!(
        "Delete App {name}? Its containers stop and its domains stop answering. Type the name to confirm: "
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != name {
        return Err(usage(format!(
            "not deleted: the name typed was not `{name}`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        apps: AppsCommand,
    }

    fn create_args(argv: &[&str]) -> CreateArgs {
        let mut all = vec!["t", "create"];
        all.extend(argv);
        match T::try_parse_from(all).unwrap().apps {
            AppsCommand::Create(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_flags_become_the_request() {
        let a = create_args(&[
            "web",
            "--image",
            "nginx:1",
            "--port",
            "80",
            "--domain",
            "a.com",
            "--domain",
            "b.com",
            "--env",
            "A=1",
            "--strategy",
            "rolling",
            "--replicas",
            "2",
        ]);
        let r = create_request(&a).unwrap();
        assert_eq!(
            (r.name.as_str(), r.image.as_str(), r.port),
            ("web", "nginx:1", 80)
        );
        assert_eq!(r.domains, vec!["a.com", "b.com"]);
        assert_eq!(r.env, vec!["A=1"]);
        assert_eq!(r.strategy.as_deref(), Some("rolling"));
        assert_eq!(r.replicas, Some(2));
    }

    #[test]
    fn from_copies_an_app() {
        let a = create_args(&["web", "--from", "api", "--with-secrets"]);
        let r = create_request(&a).unwrap();
        assert_eq!(r.from.as_deref(), Some("api"));
        assert!(r.with_secrets);
        assert_eq!(r.port, 0);
    }

    #[test]
    fn scale_takes_a_count() {
        match T::try_parse_from(["t", "scale", "web", "3", "--detach"])
            .unwrap()
            .apps
        {
            AppsCommand::Scale(a) => {
                assert_eq!((a.name.as_str(), a.replicas, a.detach), ("web", 3, true))
            }
            _ => unreachable!(),
        }
        assert!(T::try_parse_from(["t", "scale", "web", "0"]).is_err());
        assert!(T::try_parse_from(["t", "scale", "web"]).is_err());
    }

    #[test]
    fn image_and_port_are_required() {
        assert!(T::try_parse_from(["t", "create", "web", "--port", "80"]).is_err());
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(2 << 30), "2 GiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }
}
