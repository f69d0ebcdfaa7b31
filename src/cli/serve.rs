//! `serve`: the REST API and dashboard on their own, beside a ruleset that
//! `apply` or `watch` loaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use super::{CmdResult, Failure};
use crate::serve::{self, ApiState, HealthSource, Token};
use crate::watch::{default_state_file, Health};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The policy the live table was loaded from.
    pub policy: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub listen: SocketAddr,
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
    /// phantomc's table; default: the policy's `table`.
    #[arg(long)]
    pub table: Option<String>,
    /// phantomc's state directory; feed ages come from its `feeds` cache
    /// [default: $PHANTOMC_STATE_DIR, else /var/lib/phantomc].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The health file of a `phantomc watch` in another process
    /// [default: /run/phantomc/health-<table>.json]; read if present.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
}

pub fn serve(args: &ServeArgs) -> CmdResult {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(Failure::System(format!(
            "refusing to listen on {}: not a loopback address (pass --allow-remote if you mean it)",
            args.listen
        )));
    }
    let compiled = crate::ir::compile_file(&args.policy)?;
    let table = args.table.clone().unwrap_or_else(|| compiled.ruleset.table.clone());
    let token = match &args.token_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| Failure::System(format!("cannot read {}: {e}", f.display())))?;
            Some(Token::new(&text).map_err(|e| Failure::System(format!("{}: {e}", f.display())))?)
        }
        None => std::env::var("PHANTOMC_TOKEN").ok().map(|t| Token::new(&t).map_err(|e| Failure::System(format!("PHANTOMC_TOKEN: {e}")))).transpose()?,
    };
    let state_file = args.state_file.clone().unwrap_or_else(|| default_state_file(&table));
    let health = Arc::new(RwLock::new(Health { policy: args.policy.clone(), ..Health::default() }));
    let mut state = ApiState::new(args.policy.clone(), table.clone(), health, HealthSource::Standalone { state_file });
    state.token = token;
    state.proposals = args.proposals.clone();
    let state_dir = args.state_dir.clone().or_else(|| std::env::var_os("PHANTOMC_STATE_DIR").map(PathBuf::from));
    state.feed_cache = Some(state_dir.unwrap_or_else(|| PathBuf::from("/var/lib/phantomc")).join("feeds"));
    *state.last_good.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(compiled));
    let writes = if state.token.is_some() { "block/unblock need the bearer token" } else { "no token: writes are refused" };

    // Writes through the API are logged (info), refused ones as warnings.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,phantomc=info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::System(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| Failure::System(format!("cannot listen on {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| Failure::System(e.to_string()))?;
        eprintln!("phantomc serve: http://{addr}/ (API under /api/v1, docs at /api/docs) for table inet {table}; {writes}");
        axum::serve(listener, serve::router(Arc::new(state)))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| Failure::System(format!("server failed: {e}")))
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
