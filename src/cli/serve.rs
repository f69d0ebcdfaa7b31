//! `serve`: the REST API and dashboard on their own, beside a ruleset that
//! `apply` or `watch` loaded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{CmdResult, Failure};
use crate::serve::listen::{self, Limits};
use crate::serve::{self, ApiState, HealthSource, Token};
use crate::watch::{default_state_file, Health};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The policy the live table was loaded from.
    #[command(flatten)]
    pub policy: super::args::PolicyArg,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiOptions,
    /// phantomc's table; default: the policy's `table`.
    #[arg(long)]
    pub table: Option<String>,
    /// Feed ages come from its `feeds` cache.
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// The health file of a `phantomc watch` in another process
    /// [default: /run/phantomc/health-<table>.json]; read if present.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
}

/// How the API is offered; shared by `serve` and `watch --listen`.
#[derive(clap::Args, Debug)]
pub struct ApiOptions {
    /// Listen on an address other than loopback (the API then travels the
    /// network in clear text: put TLS in front of it).
    #[arg(long)]
    pub allow_remote: bool,
    /// File holding the bearer token for writes (block/unblock); default:
    /// $PHANTOMC_TOKEN. Without a token every write is refused.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The learner's latest proposal diff, shown by /api/v1/proposals.
    #[arg(long)]
    pub proposals: Option<PathBuf>,
    /// Most API connections open at once; more are answered 503 and closed
    /// (lowered to leave 256 of the open-file limit to reloads).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers (also how long a
    /// kept-alive connection may idle) and then its body.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
}

impl ApiOptions {
    /// The connection limits, after raising the open-file limit as far as
    /// this process may.
    pub fn limits(&self) -> Limits {
        let fd_limit = listen::raise_fd_limit();
        let (limits, note) =
            Limits::fit(self.max_connections as usize, Duration::from_secs(self.request_timeout), fd_limit);
        if let Some(note) = note {
            tracing::warn!("{note}");
        }
        limits
    }
}

/// The API's state for `table`, after checking the address and reading the token.
pub fn api_state(
    policy: &Path,
    table: &str,
    listen: SocketAddr,
    opts: &ApiOptions,
    health: Arc<RwLock<Health>>,
    source: HealthSource,
) -> Result<ApiState, Failure> {
    if !listen.ip().is_loopback() && !opts.allow_remote {
        return Err(Failure::System(format!(
            "refusing to listen on {listen}: not a loopback address (pass --allow-remote if you mean it)"
        )));
    }
    let token = match &opts.token_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| Failure::System(format!("cannot read {}: {e}", f.display())))?;
            let mode =
                std::fs::metadata(f).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(file = %f.display(), mode = format!("{:o}", mode & 0o777), "the token file is readable by others: chmod 600 it");
            }
            Some(Token::new(&text).map_err(|e| Failure::System(format!("{}: {e}", f.display())))?)
        }
        None => std::env::var("PHANTOMC_TOKEN")
            .ok()
            .map(|t| Token::new(&t).map_err(|e| Failure::System(format!("PHANTOMC_TOKEN: {e}"))))
            .transpose()?,
    };
    let mut state = ApiState::new(policy.to_path_buf(), table.to_string(), health, source);
    state.token = token;
    state.proposals = opts.proposals.clone();
    state.feed_cache = Some(crate::feeds::state_dir(None));
    state.adaptive_dir = Some(crate::cli::args::StateDirArg::default().adaptive_dir());
    state.local_hosts_only = !opts.allow_remote;
    Ok(state)
}

/// A note for the start-up message.
pub fn writes_note(state: &ApiState) -> &'static str {
    if state.token.is_some() {
        "block/unblock need the bearer token"
    } else {
        "no token: writes are refused"
    }
}

pub fn serve(args: &ServeArgs) -> CmdResult {
    // Writes through the API are logged (info), refused ones as warnings.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,phantomc=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    let policy = args.policy.path();
    let compiled = crate::ir::compile_file(&policy)?;
    let table = args.table.clone().unwrap_or_else(|| compiled.ruleset.table.clone());
    let health = Arc::new(RwLock::new(Health { policy: policy.clone(), ..Health::default() }));
    let state_file = args.state_file.clone().unwrap_or_else(|| default_state_file(&table));
    let mut state =
        api_state(&policy, &table, args.listen, &args.api, health, HealthSource::Standalone { state_file })?;
    state.feed_cache = Some(args.state_dir.feeds_dir());
    state.adaptive_dir = Some(args.state_dir.adaptive_dir());
    *state.last_good.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(compiled));
    let writes = writes_note(&state);
    let limits = args.api.limits();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::System(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::System(format!("cannot listen on {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| Failure::System(e.to_string()))?;
        eprintln!(
            "phantomc serve: http://{addr}/ (API under /api/v1, docs at /api/docs) for table inet {table}; {writes}"
        );
        listen::serve(listener, serve::router(Arc::new(state)), limits, shutdown()).await;
        Ok::<(), Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (systemd) or Ctrl-C.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
