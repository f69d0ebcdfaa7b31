//! REST API and dashboard for a running phantomc: what is loaded, how often
//! each policy rule matched, what is blocked, and run-time block/unblock.
//!
//! [`router`] is used by `phantomc serve` on its own and by `phantomc watch`,
//! which keeps [`ApiState::health`] current itself.

mod api;
mod auth;
mod health;
mod rules;
mod threats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub use auth::Token;
pub use health::HealthSource;

use crate::ir::Compiled;
use crate::nft::Nft;
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
    /// The feed cache directory (`NAME.meta.json` per feed), for feed ages.
    pub feed_cache: Option<PathBuf>,
    pub health: Arc<RwLock<Health>>,
    pub health_source: HealthSource,
    /// The last policy that compiled, so a broken edit on disk does not
    /// hide the rules that are still loaded.
    pub last_good: Mutex<Option<Arc<Compiled>>>,
}

impl ApiState {
    pub fn new(policy: PathBuf, table: String, health: Arc<RwLock<Health>>, health_source: HealthSource) -> ApiState {
        ApiState { policy, nft: Nft::default(), table, token: None, proposals: None, feed_cache: None, health, health_source, last_good: Mutex::new(None) }
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

/// The API under `/api/v1`, its OpenAPI document under `/api/docs`, and
/// the dashboard at `/`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/api/docs", get(|| async { Html(DOCS) }))
        .route("/api/docs/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/threats", get(api::threats))
        .route("/api/v1/proposals", get(api::proposals))
        .route("/api/v1/block", post(api::block))
        .route("/api/v1/unblock", post(api::unblock))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/docs") })
        .with_state(state)
}

/// An error answer: the status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

