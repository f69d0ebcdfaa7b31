//! `watch`: the long-running service (reload on change, health, signals).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use super::serve::{self, ApiOptions};
use super::{CmdResult, Failure};
use crate::feeds::{self, cache::Cache, update};
use crate::guard::{Operator, SSH_PORT};
use crate::ir::{self, Compiled};
use crate::nft::Nft;
use crate::serve::{listen, HealthSource};
use crate::watch::{self, adaptive, FeedTimer, Health, Options, Service, SharedHealth};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// It, its includes and its local feed files are watched.
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// Quiet time (milliseconds) after the last change before reloading.
    #[arg(long, default_value_t = 150)]
    pub debounce_ms: u64,
    /// Where to write the service's health as JSON
    /// [default: /run/phantomc/health-<table>.json].
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log detail (-q warnings and errors, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Every this many seconds, check the watched files for a change no file
    /// event reported, and retry a reload that failed for a reason other
    /// than the policy (out of file descriptors, nft).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub recheck_secs: u64,
    /// Also serve the REST API and dashboard (as `phantomc serve`) on this
    /// address, with the service's live health.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub api: ApiOptions,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn watch(args: &WatchArgs) -> CmdResult {
    init_logs(args);
    // The table names the state file and the API's table; a policy that
    // does not compile yet gets the default table.
    let policy = args.policy.path();
    let table = ir::compile_file(&policy).map_or_else(|_| "phantomc".to_string(), |c| c.ruleset.table);
    let state_file = args.state_file.clone().unwrap_or_else(|| watch::default_state_file(&table));
    let opts = Options {
        policy: policy.clone(),
        debounce: Duration::from_millis(args.debounce_ms),
        state_file,
        feed_state_dir: args.state_dir.given().map(Path::to_path_buf),
        nft: Nft::default(),
        recheck: Duration::from_secs(args.recheck_secs),
    };
    let health = Arc::new(RwLock::new(Health::default()));
    let api = args.listen.map(|listen| start_api(args, listen, &table, health.clone())).transpose()?;
    let engine = adaptive::Handle::start(args.state_dir.adaptive_dir(), health.clone());
    let service = Service::new(opts, health, Some(feed_timer(&policy, args.state_dir.given().map(Path::to_path_buf))))
        .with_adaptive(engine);
    let result = service.run().map_err(|e| Failure::System(e.to_string()));
    if let Some(runtime) = api {
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// Every minute (the shortest feed refresh) update the feeds that are due,
/// swapping their sets in place; a refused copy keeps the last good one.
fn feed_timer(policy: &Path, state_dir: Option<PathBuf>) -> FeedTimer {
    let policy = policy.to_path_buf();
    let refresh = move |nft: &Nft, compiled: &Compiled| {
        let rs = &compiled.ruleset;
        let cache = Cache::new(feeds::state_dir(state_dir.as_deref()));
        let operator = Operator::discover(None, SSH_PORT)?;
        let configs = feeds::configs(rs, &policy);
        let runs = update::update_feeds(nft, rs, &configs, &cache, update::now(), true, &operator)?;
        for run in runs {
            let Some(report) = run.report else { continue };
            let entries = report.meta.v4 + report.meta.v6;
            match (&report.outcome, &run.load) {
                (update::Outcome::Kept { reason }, _) => {
                    tracing::warn!(feed = %run.name, %reason, entries, "feed update refused; the last good copy stays")
                }
                (_, Some(load)) => tracing::info!(feed = %run.name, entries, load = ?load, "feed updated"),
                _ => tracing::debug!(feed = %run.name, outcome = report.outcome.status(), "feed checked"),
            }
            for w in run.cuts.iter().chain(&report.warnings) {
                tracing::warn!(feed = %run.name, "{w}");
            }
        }
        Ok(())
    };
    FeedTimer { every: Duration::from_secs(60), refresh: Box::new(refresh) }
}

/// Serves the REST API and dashboard on a runtime of their own, reading the
/// service's health as it changes. The address is bound before the watch
/// starts, so a taken port is an error at once.
fn start_api(
    args: &WatchArgs,
    listen: SocketAddr,
    table: &str,
    health: SharedHealth,
) -> Result<tokio::runtime::Runtime, Failure> {
    let mut state = serve::api_state(&args.policy.path(), table, listen, &args.api, health, HealthSource::Watcher)?;
    state.feed_cache = Some(args.state_dir.feeds_dir());
    state.adaptive_dir = Some(args.state_dir.adaptive_dir());
    let system = |what: &str, e: std::io::Error| Failure::System(format!("{what}: {e}"));
    let limits = args.api.limits();
    let listener = std::net::TcpListener::bind(listen).map_err(|e| system(&format!("cannot listen on {listen}"), e))?;
    listener.set_nonblocking(true).map_err(|e| system("listener", e))?;
    let addr = listener.local_addr().map_err(|e| system("listener", e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| system("cannot start the async runtime", e))?;
    tracing::info!(url = %format!("http://{addr}/"), api = "/api/v1", docs = "/api/docs", writes = serve::writes_note(&state), "API and dashboard listening");
    runtime.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => listen::serve(l, crate::serve::router(Arc::new(state)), limits, std::future::pending()).await,
            Err(e) => tracing::error!(error = %e, "the API stopped"),
        }
    });
    Ok(runtime)
}

/// The log level of `-v`/`-q` counts (clap keeps them from mixing).
fn log_level(verbose: u8, quiet: u8) -> &'static str {
    match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v > 1 => "trace",
        (_, 1) => "warn",
        _ => "error",
    }
}

fn init_logs(args: &WatchArgs) {
    let level = log_level(args.verbose, args.quiet);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn level_of(flags: &[&str]) -> Result<&'static str, clap::Error> {
        let cli = Cli::try_parse_from(["phantomc", "watch", "p.pf"].iter().chain(flags))?;
        let Command::Watch(args) = cli.command else { panic!("parsed as watch") };
        Ok(log_level(args.verbose, args.quiet))
    }

    #[test]
    fn verbosity_flags_pick_the_log_level() {
        let cases = [
            (&[][..], "info"),
            (&["-v"][..], "debug"),
            (&["-vv"][..], "trace"),
            (&["-q"][..], "warn"),
            (&["-qq"][..], "error"),
        ];
        for (flags, level) in cases {
            assert_eq!(level_of(flags).expect("parses"), level, "{flags:?}");
        }
        assert!(level_of(&["-v", "-q"]).is_err(), "-v and -q conflict");
        assert!(level_of(&["--log-format", "xml"]).is_err());
    }
}
