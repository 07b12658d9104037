//! The command line: `serve`, `check-config`, `keys`, `users`, `cases`, `lockdown`,
//! `audit`, `report`, `demo`. Printing is this module's job, so it may write to stdout.
#![allow(clippy::print_stdout)]

mod announce;
mod audit;
mod cases;
mod check_config;
#[cfg(feature = "demo")]
mod demo;
mod keys;
mod lockdown;
mod remote;
mod report;
mod serve;
mod target;
mod upstream_keys;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "OpenAI-compatible gateway that keeps your OpenAI account in good standing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: target::TargetArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults without a config file).
    Serve {
        /// Config file (TOML).
        #[arg(long, env = "WARDEN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: print every problem with its key path, exit non-zero if any.
    CheckConfig { file: PathBuf },
    /// Manage virtual keys in the store.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Review end users and act on them: list, show, ban, suspend, unban, reset.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// OpenAI safety cases received through the webhook and what was done.
    Cases {
        #[command(subcommand)]
        command: cases::CasesCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// OpenAI keys sealed in the store under the master key: add, activate, retire, list.
    UpstreamKeys {
        #[command(subcommand)]
        command: upstream_keys::UpstreamKeysCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Lockdown mode: on, off, or status (shared by every gateway using the store).
    Lockdown {
        #[command(subcommand)]
        command: lockdown::LockdownCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Run Warden with a built-in stand-in upstream and show it allow and refuse requests.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Check the event log's hash chains (exit 1 at the first broken link).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
        /// Config file naming the store.
        #[arg(long, env = "WARDEN_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The evidence report for a period: moderation coverage, flags, blocks, actions.
    Report(report::ReportArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let flags = cli.target;
    // Operator commands act on the store, or through the admin API with --admin-url.
    let target = |config: Option<PathBuf>| target::Target::choose(&flags, config);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve::run(config).await,
            Command::CheckConfig { file } => return check_config::run(&file),
            Command::Keys { command, config } => keys::run(command, target(config)?).await,
            Command::Users { command, config } => users::run(command, target(config)?).await,
            Command::Cases { command, config } => cases::run(command, target(config)?).await,
            Command::UpstreamKeys { command, config } => {
                upstream_keys::run(command, target(config)?).await
            }
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(args).await,
            Command::Lockdown { command, config } => lockdown::run(command, target(config)?).await,
            Command::Audit { command, config } => {
                return audit::run(command, target(config)?).await
            }
            Command::Report(args) => {
                let config = args.config.clone();
                report::run(args, target(config)?).await
            }
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config named on the command line, or the embedded default.
fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let loaded = match path {
        Some(path) => Config::from_file(path),
        None => Config::embedded_default(),
    };
    loaded.map_err(|problems| {
        let source = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded defaults".into());
        anyhow::anyhow!("invalid configuration ({source}):\n{problems}")
    })
}

/// Logs go to stderr, masked; `RUST_LOG` and `WARDEN_LOG_FORMAT` override the config.
fn init_logging(config: &Config) {
    crate::logs::init(config);
}
