//! REST API and dashboard for a running phantomc: what is loaded, how often
//! each policy rule matched, what is blocked, and run-time block/unblock.
//!
//! [`router`] is used by `phantomc serve` on its own and by `phantomc watch`,
//! which keeps [`ApiState::health`] current itself.

mod api;
mod auth;
mod health;
pub mod listen;
mod metrics;
pub mod rules;
mod shared;
pub mod submit;
pub mod threats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub use auth::Token;
pub use health::HealthSource;

use crate::ir::optimize::SET_PREFIX;
use crate::ir::{Compiled, Ruleset, SetKind};
use crate::nft::apply::{self, ApplyError, Status};
use crate::nft::kernel::{self, KernelRule, Snapshot};
use crate::nft::{Nft, SetElem};
use crate::watch::{unix_now, Health};

const DASHBOARD: &str = include_str!("dashboard.html");
const DOCS: &str = include_str!("docs.html");
const OPENAPI: &str = include_str!("openapi.json");

/// Everything the handlers need.
pub struct ApiState {
    pub policy: PathBuf,
    pub nft: Nft,
    /// phantomc's table (`table NAME` of the policy).
    pub table: String,
    /// Bearer token for writes; `None` refuses every write.
    pub token: Option<Token>,
    /// The learner's latest proposal diff.
    pub proposals: Option<PathBuf>,
    /// A policy submitted through `POST /api/v1/rules`, waiting for its confirmation.
    pub pending_rules: Mutex<Option<submit::Pending>>,
    /// The feed cache directory (`NAME.meta.json` per feed), for feed ages.
    pub feed_cache: Option<PathBuf>,
    /// The adaptive mode's state directory (alerts.jsonl, status.json).
    pub adaptive_dir: Option<PathBuf>,
    pub health: Arc<RwLock<Health>>,
    pub health_source: HealthSource,
    /// The last policy that compiled, so a broken edit on disk does not
    /// hide the rules that are still loaded.
    pub last_good: Mutex<Option<Arc<Compiled>>>,
    /// Answer only requests addressed to an IP literal or `localhost`, so a
    /// web page cannot reach the API through DNS rebinding. Off when the API
    /// is deliberately offered beyond loopback (`--allow-remote`).
    pub local_hosts_only: bool,
    /// The live table's rules and run-time entries, read over netlink.
    pub live: shared::Shared<Vec<String>, LiveRead>,
    /// The live table for the drift check, by policy hash.
    pub live_table: shared::Shared<String, Option<Snapshot>>,
    /// What each policy compiles to in the kernel, by policy hash.
    pub expected: shared::Memo<String, Snapshot>,
}

/// What the rules and threats endpoints read of the live table.
#[derive(Debug, Default)]
pub struct LiveRead {
    /// `None` when the table is not loaded.
    pub rules: Option<Vec<KernelRule>>,
    /// Entries of the policy's run-time sets by nft set name, with the
    /// timeout each was added with.
    pub runtime: BTreeMap<String, Vec<(SetElem, Option<u64>)>>,
    /// Element counts of every set, as the kernel reports them.
    pub counts: BTreeMap<String, u32>,
    /// Per-line counters of merged rules (their sets' elements).
    pub element_counters: Vec<kernel::ElementCounter>,
    /// Named counters (`counter "name"`), shared by the lines that name them.
    pub named_counters: Vec<kernel::NamedCounter>,
}

impl LiveRead {
    /// The nft names of a policy's run-time sets.
    pub fn runtime_sets(rs: &Ruleset) -> Vec<String> {
        rs.sets.iter().filter(|s| matches!(s.kind, SetKind::Dynamic { .. })).map(|s| s.nft_name.clone()).collect()
    }

    /// Rules, set counts and the entries of `runtime_sets`, over netlink.
    pub fn read(table: &str, runtime_sets: Vec<String>) -> std::io::Result<LiveRead> {
        let rules = kernel::rules(table)?;
        let mut runtime = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut element_counters = Vec::new();
        let mut named_counters = Vec::new();
        if rules.is_some() {
            named_counters = kernel::named_counters(table)?;
            counts = kernel::set_counts(table)?;
            for name in runtime_sets {
                let entries = kernel::timed_elements(table, &name)?;
                runtime.insert(name, entries);
            }
            for name in counts.keys().filter(|n| n.starts_with(SET_PREFIX)) {
                element_counters.extend(kernel::element_counters(table, name)?);
            }
        }
        Ok(LiveRead { rules, runtime, counts, element_counters, named_counters })
    }
}

impl ApiState {
    pub fn new(policy: PathBuf, table: String, health: Arc<RwLock<Health>>, health_source: HealthSource) -> ApiState {
        ApiState {
            policy,
            nft: Nft::default(),
            table,
            token: None,
            proposals: None,
            pending_rules: Mutex::new(None),
            feed_cache: None,
            adaptive_dir: None,
            health,
            health_source,
            last_good: Mutex::new(None),
            local_hosts_only: true,
            live: Default::default(),
            live_table: Default::default(),
            expected: Default::default(),
        }
    }

    /// The adaptive mode's state: the engine's in this process, else the
    /// `status.json` a watcher wrote in the adaptive state directory.
    fn adaptive_status(&self) -> Option<crate::watch::adaptive::Status> {
        let in_process = self.health.read().unwrap_or_else(std::sync::PoisonError::into_inner).adaptive.clone();
        in_process.or_else(|| {
            let text =
                std::fs::read_to_string(self.adaptive_dir.as_ref()?.join(crate::watch::adaptive::STATUS_FILE)).ok()?;
            serde_json::from_str(&text).ok()
        })
    }

    /// The live rules and run-time entries: one netlink read, shared.
    fn live(&self, compiled: &Compiled) -> Result<Arc<LiveRead>, std::io::Error> {
        let runtime_sets = LiveRead::runtime_sets(&compiled.ruleset);
        self.live.get(runtime_sets.clone(), || LiveRead::read(&self.table, runtime_sets))
    }

    /// The drift check, with the live read shared and the policy's own
    /// kernel form kept per policy.
    fn status_of(&self, compiled: &Compiled, hash: &str) -> Result<Status, ApplyError> {
        let rs = &compiled.ruleset;
        let live = self.live_table.get(hash.to_string(), || apply::live_snapshot(rs))?;
        let Some(live) = live.as_ref() else { return Ok(Status::NotLoaded) };
        let expected = self.expected.get(hash.to_string(), || apply::expected_snapshot(&self.nft, compiled))?;
        apply::compare(rs, live, &expected)
    }

    /// Compiles the policy; on failure the last good compile and the error.
    fn compiled(&self) -> (Option<Arc<Compiled>>, Option<String>) {
        let mut last = self.last_good.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match crate::ir::compile_file(&self.policy) {
            Ok(mut c) => {
                // `--table` names the live table; compare and map against that one.
                c.ruleset.table.clone_from(&self.table);
                let c = Arc::new(c);
                *last = Some(c.clone());
                (Some(c), None)
            }
            Err(e) => (last.clone(), Some(health::render_load_error(&e))),
        }
    }
}

/// The API under `/api/v1`, its OpenAPI document under `/api/docs`,
/// Prometheus metrics at `/metrics`, and the dashboard at `/`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/api/docs", get(|| async { Html(DOCS) }))
        .route("/api/docs/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/rules", get(api::rules).post(api::submit_rules))
        .route("/api/v1/rules/confirm", post(api::confirm_rules))
        .route("/api/v1/threats", get(api::threats))
        .route("/api/v1/proposals", get(api::proposals))
        .route("/api/v1/proposals/{id}/accept", post(api::accept))
        .route("/api/v1/proposals/{id}/reject", post(api::reject))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/block", post(api::block))
        .route("/api/v1/unblock", post(api::unblock))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/docs") })
        .layer(middleware::from_fn_with_state(state.clone(), guard_host))
        .with_state(state)
}

/// Refuses a request whose `Host` names something other than an address
/// or `localhost` (a rebound DNS name of an attacker's page).
async fn guard_host(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if state.local_hosts_only && !host.is_none_or(is_local_host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "use http://127.0.0.1:PORT/ or http://localhost:PORT/ (other host names are refused)",
        )
        .into_response();
    }
    next.run(req).await
}

/// `127.0.0.1:9180`, `[::1]:9180`, `localhost:9180`, with or without the port.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// An error answer: the status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// More fields of the answer beside `error` (diagnostics, reasons).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), details: serde_json::Map::new() }
    }

    /// Adds a field to the answer.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.details.insert(key.to_string(), value);
        self
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut fields = self.details;
        fields.insert("error".into(), serde_json::Value::String(self.message));
        let body = Json(serde_json::Value::Object(fields));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_host_names() {
        for ok in ["127.0.0.1:9180", "127.0.0.1", "[::1]:9180", "localhost:9180", "LOCALHOST", "10.0.0.5:80"] {
            assert!(super::is_local_host(ok), "{ok}");
        }
        for bad in ["evil.example:9180", "evil.example", "127.0.0.1.nip.io:9180", "[evil]:1"] {
            assert!(!super::is_local_host(bad), "{bad}");
        }
    }
}
