//! `watch`: the long-running service (reload on change, health, signals).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use super::{CmdResult, Failure};
use crate::ir;
use crate::nft::Nft;
use crate::watch::{self, Health, Options, Service};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The policy file; it, its includes and its local feed files are watched.
    pub policy: PathBuf,
    /// Quiet time (milliseconds) after the last change before reloading.
    #[arg(long, default_value_t = 150)]
    pub debounce_ms: u64,
    /// Where to write the service's health as JSON
    /// [default: /run/phantomc/health-<table>.json].
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log detail (-q warnings and errors, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn watch(args: &WatchArgs) -> CmdResult {
    init_logs(args);
    let state_file = args.state_file.clone().unwrap_or_else(|| {
        // The table names the file; a policy that does not compile yet gets the default table's.
        let table = ir::compile_file(&args.policy).map_or_else(|_| "phantomc".to_string(), |c| c.ruleset.table);
        watch::default_state_file(&table)
    });
    let opts = Options { policy: args.policy.clone(), debounce: Duration::from_millis(args.debounce_ms), state_file, nft: Nft::default() };
    let health = Arc::new(RwLock::new(Health::default()));
    // Remote feed refresh: `crate::feeds` connects its FeedTimer here.
    let service = Service::new(opts, health, None);
    service.run().map_err(|e| Failure::System(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logs(args: &WatchArgs) {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v > 1 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    // Other crates' (notify's) logs only from warnings up.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(format!("warn,phantomc={level}")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
