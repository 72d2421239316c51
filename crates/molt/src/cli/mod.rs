//! The subcommands of `molt`, one module per group. Each client command
//! returns its exit code; errors carry theirs (see [`client::exit_code`]).

pub mod apps;
pub mod attach;
pub mod build;
pub mod certs;
pub mod client;
pub mod deploys;
pub mod external;
pub mod follow;
pub mod lifecycle;
pub mod logs;
pub mod output;
pub mod registries;
pub mod runs;
pub mod serve;
pub mod source;
