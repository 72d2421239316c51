//! `molt`: the command line of Molt. One binary runs the server, the proxy
//! and every client command. The command tree, flags, exit codes and JSON are
//! a contract (docs: "The command line"): scripts and tests depend on them.
//!
//! Exit codes: 0 done; 1 a deploy failed or the server broke; 2 bad usage,
//! a refused request (4xx) or no server to talk to.

/// `print!` that ignores a closed stdout (`molt apps list | head -1`)
/// instead of panicking as `print!` does.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `println!` that ignores a closed stdout; see [`out!`].
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod cli;

use clap::{Parser, Subcommand};
use cli::apps::AppsCommand;
use cli::certs::CertsCommand;
use cli::client::{exit_code, Client, ClientOpts};
use cli::deploys::{DeployArgs, DeploysArgs};
use cli::lifecycle::{EnvCommand, RedeployArgs, RestartArgs, RollbackArgs};
use cli::logs::{DebugArgs, LogsArgs};
use cli::registries::RegistriesCommand;
use cli::serve::{ProxyArgs, ServerArgs};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "molt",
    version,
    about = "Molt: zero-downtime deploys of container images on your own server."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: API, deployer, reconciler. Starts the
    /// proxy too if none runs.
    Server(Box<ServerArgs>),
    /// Run the data plane (the server starts it; rarely run by hand).
    Proxy(ProxyArgs),
    /// Create, list, show and delete Apps.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Deploy an image to an App with no downtime.
    Deploy {
        #[command(flatten)]
        args: DeployArgs,
    },
    /// Build an App's source into a release on the server (promote it
    /// with `molt releases promote`).
    Build {
        #[command(flatten)]
        args: cli::build::BuildArgs,
    },
    /// An App's releases (built from source), or promote one.
    Releases {
        #[command(flatten)]
        args: cli::build::ReleasesArgs,
    },
    /// Deploy the App's image reference again (picks up a moved tag).
    Redeploy {
        #[command(flatten)]
        args: RedeployArgs,
    },
    /// Replace the App's containers with fresh ones of the same version.
    Restart {
        #[command(flatten)]
        args: RestartArgs,
    },
    /// Go back to an earlier deploy's version.
    Rollback {
        #[command(flatten)]
        args: RollbackArgs,
    },
    /// Cancel the App's deploy in progress.
    Cancel { name: String },
    /// An App's deploy history, or one deploy's timeline (`deploys show`).
    Deploys {
        #[command(flatten)]
        args: DeploysArgs,
    },
    /// An App's environment variables.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Credentials for private registries.
    Registries {
        #[command(subcommand)]
        command: RegistriesCommand,
    },
    /// HTTPS certificates by domain.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// What an App's containers print.
    Logs {
        #[command(flatten)]
        args: LogsArgs,
    },
    /// Run a command in a one-off container of the App's version (its
    /// image and environment, no route), e.g. a migration.
    Run {
        #[command(flatten)]
        args: cli::attach::RunArgs,
    },
    /// An App's one-off commands (`molt run`): who ran what, the exit code
    /// and how long it took.
    Runs {
        #[command(flatten)]
        args: cli::runs::RunsArgs,
    },
    /// Run a command inside a serving container of the App.
    Exec {
        #[command(flatten)]
        args: cli::attach::ExecArgs,
    },
    /// Print a one-time login URL for the dashboard (valid 5 minutes).
    DashboardLink,
    /// What is wrong with an App: its latest failed deploy and its
    /// containers, each finding with a hint.
    Debug {
        #[command(flatten)]
        args: DebugArgs,
    },
}

fn main() -> ExitCode {
    // reqwest is built without a TLS crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Usage errors exit 2 here, as the contract wants.
    let cli = Cli::parse();
    let runtime = if let Command::Proxy(args) = &cli.command {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                args.threads
                    .map_or(molt_proxy::default_threads(cpus), |n| n.get()),
            )
            .enable_all()
            .build()
    } else if matches!(cli.command, Command::Server(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    use cli::{apps, deploys, lifecycle, logs, registries, serve};
    let opts = cli.client;
    let data_dir = opts.data_dir.clone();
    // Built only by client commands: the server needs no token.
    let client = || Client::new(&opts);
    match cli.command {
        Command::Server(args) => serve::server(*args, data_dir).await.map(|()| 0),
        Command::Proxy(args) => serve::proxy(args, data_dir).await.map(|()| 0),
        Command::Apps { command } => apps::run(&client()?, command).await,
        Command::Deploy { args } => deploys::deploy(&client()?, args).await,
        Command::Redeploy { args } => lifecycle::redeploy(&client()?, args).await,
        Command::Restart { args } => lifecycle::restart(&client()?, args).await,
        Command::Rollback { args } => lifecycle::rollback(&client()?, args).await,
        Command::Cancel { name } => lifecycle::cancel(&client()?, &name).await,
        Command::Deploys { args } => deploys::run(&client()?, args).await,
        Command::Build { args } => cli::build::build(&client()?, args).await,
        Command::Releases { args } => cli::build::releases(&client()?, args).await,
        Command::Env { command } => lifecycle::env(&client()?, command).await,
        Command::Registries { command } => registries::run(&client()?, command).await,
        Command::Certs { command } => cli::certs::run(&client()?, command).await,
        Command::Logs { args } => logs::logs(&client()?, args).await,
        Command::Run { args } => cli::attach::run(&client()?, args).await,
        Command::Exec { args } => cli::attach::exec(&client()?, args).await,
        Command::Runs { args } => cli::runs::list(&client()?, args).await,
        Command::DashboardLink => logs::dashboard_link(&client()?).await,
        Command::Debug { args } => logs::debug(&client()?, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "molt",
            "apps",
            "--server",
            "http://x:1",
            "list",
            "--json",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.client.server, "http://x:1");
        assert_eq!(cli.client.token.as_deref(), Some("t"));
        let cli = Cli::try_parse_from(["molt", "--server", "http://y:2", "apps", "list"]).unwrap();
        assert_eq!(cli.client.server, "http://y:2");
        let cli = Cli::try_parse_from(["molt", "server", "--data-dir", "/d"]).unwrap();
        assert_eq!(
            cli.client.data_dir.as_deref(),
            Some(std::path::Path::new("/d"))
        );
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = Cli::try_parse_from(["molt", "apps", "create", "web"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
