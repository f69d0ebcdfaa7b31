//! The handlers under `/api/v1`. nft runs as a child process, so every
//! handler that asks the kernel runs on tokio's blocking pool.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{auth, health, rules, submit, threats, unix_now, ApiError, ApiState, HealthSource};
use crate::guard::{Operator, Protected, SSH_PORT};
use crate::ir::Ruleset;
use crate::nft::block::{self, parse_duration, parse_net, BlockError};
use crate::watch::adaptive::proposals::{self, ReviewError};

type Answer = Result<Json<Value>, ApiError>;

async fn blocking(
    state: Arc<ApiState>,
    f: impl FnOnce(&ApiState) -> Result<Value, ApiError> + Send + 'static,
) -> Answer {
    let v = tokio::task::spawn_blocking(move || f(&state)).await.map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(v))
}

pub async fn status(State(state): State<Arc<ApiState>>) -> Answer {
    blocking(state, health::report).await
}

pub async fn rules(State(state): State<Arc<ApiState>>) -> Answer {
    blocking(state, |s| {
        let (compiled, policy_error) = s.compiled();
        let compiled = compiled.ok_or_else(|| ApiError::internal(policy_error.clone().unwrap_or_default()))?;
        let live = s.live(&compiled).map_err(|e| ApiError::internal(e.to_string()))?;
        let rows = rules::rows(&compiled, live.rules.as_deref(), &live.element_counters, &live.named_counters);
        Ok(json!({
            "table": s.table,
            "loaded": live.rules.is_some(),
            "policy_error": policy_error,
            "other_rules": rules::other_rules(&rows, live.rules.as_deref()),
            "counters": rules::counters(&compiled, &live.named_counters),
            "rules": rows,
        }))
    })
    .await
}

pub async fn threats(State(state): State<Arc<ApiState>>) -> Answer {
    blocking(state, |s| {
        let (compiled, policy_error) = s.compiled();
        let compiled = compiled.ok_or_else(|| ApiError::internal(policy_error.unwrap_or_default()))?;
        let live = s.live(&compiled).map_err(|e| ApiError::internal(e.to_string()))?;
        let t = threats::threats(&compiled.ruleset, &live, s.feed_cache.as_deref(), unix_now());
        let mut v = serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))?;
        v["table"] = json!(s.table);
        v["loaded"] = json!(live.rules.is_some());
        Ok(v)
    })
    .await
}

/// Adaptive mode's pending proposals (`items`, each with its id, diff and
/// evidence) and the learner's latest diff file (`text`, with `--proposals`).
pub async fn proposals(State(state): State<Arc<ApiState>>) -> Answer {
    blocking(state, |s| {
        let (items, items_error) = match &s.adaptive_dir {
            Some(dir) => match proposals::pending(dir) {
                Ok(items) => (items, None),
                Err(e) => (Vec::new(), Some(e)),
            },
            None => (Vec::new(), None),
        };
        let mut out = json!({ "items": items, "items_error": items_error, "text": null });
        let file_error = match &s.proposals {
            None => Some("no proposals file configured (start with --proposals FILE)".to_string()),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let modified = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                    let count = |sign: char, header: &str| {
                        text.lines().filter(|l| l.starts_with(sign) && !l.starts_with(header)).count()
                    };
                    out["path"] = json!(path);
                    out["modified"] = json!(modified);
                    out["age_seconds"] = json!(modified.map(|m| unix_now().saturating_sub(m)));
                    out["additions"] = json!(count('+', "+++"));
                    out["removals"] = json!(count('-', "---"));
                    out["text"] = json!(text);
                    None
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("no proposals yet: {} does not exist", path.display()))
                }
                Err(e) => return Err(ApiError::internal(format!("cannot read {}: {e}", path.display()))),
            },
        };
        out["file_error"] = json!(file_error);
        Ok(out)
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AcceptRequest {
    /// `git commit` the policy with the evidence as message.
    #[serde(default)]
    git: bool,
}

fn review_error(e: ReviewError) -> ApiError {
    let code = match &e {
        ReviewError::NotFound(_) => StatusCode::NOT_FOUND,
        ReviewError::Decided { .. } | ReviewError::OtherPolicy { .. } | ReviewError::Stale { .. } => {
            StatusCode::CONFLICT
        }
        ReviewError::Broken { .. } | ReviewError::Lockout(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ReviewError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut err = ApiError::new(code, format!("{e}; nothing was changed"));
    if let ReviewError::Lockout(reasons) = &e {
        err = err.with("reasons", json!(reasons));
    }
    err
}

/// Applies a proposal's diff to the policy file (a `watch` reloads it).
pub async fn accept(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&state, &headers, "accept")?;
    let req: AcceptRequest = if body.is_empty() { AcceptRequest::default() } else { parse_body(&body)? };
    blocking(state, move |s| {
        let dir = s.adaptive_dir.as_deref().ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no adaptive state directory configured"))?;
        let operator = Operator::discover(None, SSH_PORT).map_err(ApiError::internal)?;
        let done = proposals::accept(dir, &s.policy, &id, &operator, req.git, unix_now()).map_err(review_error)?;
        tracing::info!(proposal = %id, policy = %done.policy.display(), commit = ?done.commit, "proposal accepted through the API");
        let reload = match s.health_source {
            HealthSource::Watcher => "the watcher in this process reloads the policy",
            HealthSource::Standalone { .. } => "a running `phantomc watch` reloads the policy; without one, run `phantomc apply`",
        };
        Ok(json!({ "accepted": id, "policy": done.policy, "backup": done.backup, "commit": done.commit, "diff": done.diff, "reload": reload }))
    })
    .await
}

/// Remembers that a proposal was rejected: it is not proposed again.
pub async fn reject(State(state): State<Arc<ApiState>>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers, "reject")?;
    blocking(state, move |s| {
        let dir = s
            .adaptive_dir
            .as_deref()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no adaptive state directory configured"))?;
        let item = proposals::reject(dir, &id, unix_now()).map_err(review_error)?;
        tracing::info!(proposal = %id, subject = %item.subject, "proposal rejected through the API");
        Ok(json!({ "rejected": id, "subject": item.subject }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesRequest {
    /// The whole policy text.
    policy: String,
    /// How long the new ruleset waits for `POST /api/v1/rules/confirm`.
    confirm_timeout: Option<Timeout>,
}

/// A whole policy: checked, then loaded until confirmed (see [`submit`]).
pub async fn submit_rules(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Answer {
    authorize(&state, &headers, "rules")?;
    let req: RulesRequest = parse_body(&body)?;
    let secs = match req.confirm_timeout {
        None => submit::DEFAULT_CONFIRM_SECS,
        Some(Timeout::Seconds(n)) => n,
        Some(Timeout::Text(t)) => u64::from(parse_duration(&t).map_err(bad)?),
    };
    if !(5..=submit::MAX_CONFIRM_SECS).contains(&secs) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("confirm_timeout {secs}s is out of range (5 to {} seconds)", submit::MAX_CONFIRM_SECS),
        ));
    }
    let shared = state.clone();
    blocking(state, move |_| submit::submit(&shared, req.policy, std::time::Duration::from_secs(secs))).await
}

pub async fn confirm_rules(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers, "rules/confirm")?;
    blocking(state, submit::confirm).await
}

#[derive(Deserialize)]
pub struct AlertsQuery {
    last: Option<usize>,
}

/// The adaptive mode's latest alerts (oldest first) and its state.
pub async fn alerts(State(state): State<Arc<ApiState>>, Query(q): Query<AlertsQuery>) -> Answer {
    blocking(state, move |s| {
        let Some(dir) = &s.adaptive_dir else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no adaptive state directory configured"));
        };
        let last = q.last.unwrap_or(200).min(10_000);
        let (alerts, damaged) = crate::watch::adaptive::alerts::read(dir, last)
            .map_err(|e| ApiError::internal(format!("cannot read alerts in {}: {e}", dir.display())))?;
        // The watcher in this process knows its state; otherwise its file.
        let adaptive = s.adaptive_status();
        Ok(json!({ "alerts": alerts, "damaged_lines": damaged, "adaptive": adaptive }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    address: String,
    set: Option<String>,
    timeout: Option<Timeout>,
}

/// Seconds, or a duration like `1h`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Timeout {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockRequest {
    address: String,
    set: Option<String>,
}

pub async fn block(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Answer {
    authorize(&state, &headers, "block")?;
    let req: BlockRequest = parse_body(&body)?;
    let timeout = req.timeout.map(block_timeout).transpose()?;
    change(state, &req.address, req.set, timeout, true).await
}

/// The longest block the API accepts: a longer one is almost always a typo
/// (or a stolen token making a ban permanent), so it is refused, not clamped.
pub const MAX_BLOCK_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// Seconds of a request's timeout: 400 when malformed or zero, 422 above
/// [`MAX_BLOCK_TIMEOUT_SECS`].
fn block_timeout(timeout: Timeout) -> Result<u32, ApiError> {
    let seconds = match timeout {
        Timeout::Seconds(0) => return Err(bad("timeout 0 is out of range".into())),
        Timeout::Seconds(n) => n,
        Timeout::Text(t) => u64::from(parse_duration(&t).map_err(bad)?),
    };
    if seconds > MAX_BLOCK_TIMEOUT_SECS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("timeout {seconds}s is longer than the maximum of {MAX_BLOCK_TIMEOUT_SECS}s (30 days)"),
        ));
    }
    Ok(seconds as u32)
}

pub async fn unblock(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Answer {
    authorize(&state, &headers, "unblock")?;
    let req: UnblockRequest = parse_body(&body)?;
    change(state, &req.address, req.set, None, false).await
}

/// Checks that the write is same-origin JSON and carries the token, and
/// leaves a trace of every refused write.
fn authorize(state: &ApiState, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    auth::same_origin(headers).and_then(|()| auth::require(state.token.as_ref(), headers)).inspect_err(
        |e| tracing::warn!(endpoint = what, status = e.status.as_u16(), reason = %e.message, "write refused"),
    )
}

async fn change(state: Arc<ApiState>, address: &str, set: Option<String>, timeout: Option<u32>, add: bool) -> Answer {
    let net = parse_net(address).map_err(bad)?;
    let set = set.unwrap_or_else(|| "blocklist".to_string());
    if set.is_empty() || !set.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(bad(format!("`{set}` is not a set name")));
    }
    blocking(state, move |s| {
        if add {
            let compiled = s.compiled().0;
            let ruleset = compiled.as_ref().map(|c| &c.ruleset);
            refuse_protected(ruleset, net)?;
            refuse_policy_owned(ruleset, &set)?;
        }
        let done = block::change(&s.nft, &s.table, &set, net, timeout, add).map_err(|e| {
            let code = match e {
                BlockError::NoSuchSet { .. } | BlockError::NotBlocked { .. } => StatusCode::NOT_FOUND,
                BlockError::NotRuntime { .. } => StatusCode::CONFLICT,
                BlockError::LongReason(_) => StatusCode::BAD_REQUEST,
                BlockError::Nft(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(code, e.to_string())
        })?;
        tracing::info!(address = %done.net, set = %done.nft_set, blocked = add, "run-time set changed through the API");
        Ok(json!({
            "blocked": done.blocked,
            "address": done.net.to_string(),
            "set": set,
            "nft_set": done.nft_set,
            "table": done.table,
            "timeout": done.timeout,
            "message": done.to_string(),
        }))
    })
    .await
}

/// 422 for a block the lockout guard refuses: /0, an over-broad network, or
/// one covering a protected address (an API caller can never override it).
fn refuse_protected(ruleset: Option<&Ruleset>, net: ipnet::IpNet) -> Result<(), ApiError> {
    let operator = Operator::discover(None, SSH_PORT).map_err(ApiError::internal)?;
    let protected = Protected::gather(ruleset, &operator);
    protected.check_block(net).map_err(|refusal| {
        tracing::warn!(address = %net, reason = %refusal, "block refused by the lockout guard");
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("refused: {refusal}"))
    })
}

/// A block into a set whose entries the policy fixes would be undone by the
/// next reload.
fn refuse_policy_owned(ruleset: Option<&Ruleset>, set: &str) -> Result<(), ApiError> {
    match ruleset.and_then(|r| r.refuse_runtime_entries(set)) {
        Some(why) => Err(ApiError::new(StatusCode::CONFLICT, format!("refused: {why}"))),
        None => Ok(()),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid: {e}")))
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}
