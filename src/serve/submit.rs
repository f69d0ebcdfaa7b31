//! `POST /api/v1/rules`: a whole policy submitted through the API. It is
//! compiled, linted, its tests run and the lockout check made, as `apply`
//! does; then it is loaded with confirm-or-rollback semantics and written
//! to the policy file only once confirmed (`POST /api/v1/rules/confirm`, or
//! `phantomc confirm`). Unconfirmed, the previous ruleset comes back and the
//! file was never touched: the policy file stays the source of truth.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::analyze::{cases, lint};
use crate::diag::{self, Severity};
use crate::guard::{self, Operator, Protected, SSH_PORT};
use crate::ir::Compiled;
use crate::nft::apply as loader;
use crate::nft::emit::Elements;
use crate::nft::rollback::{self, Phase};
use crate::policy::LoadError;

/// How long a submitted policy waits for its confirmation, unless asked otherwise.
pub const DEFAULT_CONFIRM_SECS: u64 = 60;
pub const MAX_CONFIRM_SECS: u64 = 600;

/// A loaded policy waiting for its confirmation.
#[derive(Clone, Debug)]
pub struct Pending {
    pub text: String,
    /// The rollback guard's record.
    pub record: PathBuf,
    pub deadline_ms: u64,
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// Everything `apply` checks, on text that would be the policy file.
/// Returns the compiled policy, the run-time and feed set contents to keep,
/// the lockout guard's protected networks, and what the checks said
/// (warnings, tests, sessions kept).
fn check(s: &ApiState, text: String) -> Result<(Compiled, Elements, Protected, Value), ApiError> {
    let (compiled, lints) = match lint::lint_text_at(&s.policy, text, &lint::Options::default()) {
        Ok(done) => done,
        Err(LoadError::Policy(e)) => {
            return Err(
                refused("the policy does not compile").with("diagnostics", json!(diag::to_json(&e.diags, &e.sources)))
            )
        }
        Err(e @ LoadError::Io(..)) => return Err(refused(format!("the policy does not compile: {e}"))),
    };
    let errors: Vec<_> = lints.iter().filter(|d| d.severity == Severity::Error).cloned().collect();
    if !errors.is_empty() {
        return Err(refused(format!("lint found {} error(s)", errors.len()))
            .with("diagnostics", json!(diag::to_json(&errors, &compiled.sources))));
    }
    let rs = &compiled.ruleset;
    if rs.table != s.table {
        return Err(refused(format!(
            "the policy names table inet {}, but this server manages table inet {}",
            rs.table, s.table
        )));
    }
    if rs.passes_nothing() {
        return Err(refused("the policy passes nothing (no input rule, and the default input policy drops)"));
    }
    let mut results = cases::run(&compiled, &compiled.sources, &cases::inline(&compiled));
    let mut failed_diags: Vec<Value> =
        results.iter().filter_map(|r| r.diag.clone()).flat_map(|d| diag::to_json(&[d], &compiled.sources)).collect();
    let companion = s.policy.with_extension("pftest");
    if companion.is_file() {
        let suite = cases::load_pftest(&companion).map_err(|e| refused(format!("{}: {e}", companion.display())))?;
        let more = cases::run(&compiled, &suite.sources, &suite.cases);
        failed_diags
            .extend(more.iter().filter_map(|r| r.diag.clone()).flat_map(|d| diag::to_json(&[d], &suite.sources)));
        results.extend(more);
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        return Err(refused(format!("{failed} of {} tests failed", results.len()))
            .with("diagnostics", json!(failed_diags))
            .with("tests", json!(results)));
    }
    let operator = Operator::discover(None, SSH_PORT).map_err(ApiError::internal)?;
    let protected = Protected::gather(Some(rs), &operator);
    let root = s.feed_cache.as_deref().and_then(Path::parent);
    let (kept, feed_warnings) = crate::feeds::load_elements(rs, &protected, root).map_err(ApiError::internal)?;
    // The API never overrides the lockout guard.
    let checked = guard::check(rs, &kept.contents(), &operator).map_err(|r| {
        refused("refused by the lockout guard")
            .with("reasons", json!(r.reasons))
            .with("diagnostics", json!(diag::to_json(&r.diags(rs), &compiled.sources)))
    })?;
    let warnings = diag::to_json(&lints, &compiled.sources);
    let said = json!({
        "warnings": warnings,
        "feed_warnings": feed_warnings,
        "tests": results.len(),
        "kept_sessions": checked.kept.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "unchecked": checked.unchecked,
    });
    Ok((compiled, kept, protected, said))
}

/// Checks and loads `text`; the caller confirms within `timeout` or it is rolled back.
pub fn submit(state: &Arc<ApiState>, text: String, timeout: Duration) -> Result<Value, ApiError> {
    let s = state.as_ref();
    let mut pending = s.pending_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = pending.as_ref() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a submitted policy waits for its confirmation until {} (POST /api/v1/rules/confirm)",
                p.deadline_ms / 1000
            ),
        ));
    }
    let (compiled, kept, protected, said) = check(s, text.clone())?;
    let root = s.feed_cache.as_deref().and_then(Path::parent);
    let feeds = crate::feeds::rollback_sources(&protected, root).map_err(ApiError::internal)?;
    let record = rollback::arm(&s.table, timeout, &feeds).map_err(|e| match e {
        rollback::RollbackError::AlreadyPending { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        other => ApiError::internal(other.to_string()),
    })?;
    let prepared = loader::prepare_with(&compiled, kept);
    if let Err(e) = loader::load(&s.nft, &compiled, &prepared) {
        let _ = rollback::disarm(&record);
        return Err(refused(format!("nft refused the ruleset; nothing was changed: {e}")));
    }
    let deadline_ms = rollback::read(&record).ok().flatten().map_or(0, |p| p.deadline_ms);
    *pending = Some(Pending { text, record: record.clone(), deadline_ms });
    drop(pending);
    tracing::info!(table = %s.table, deadline_ms, "policy submitted through the API loaded; waiting for its confirmation");
    // Whoever confirms (this API or `phantomc confirm`), the file follows the outcome.
    let waiter = state.clone();
    std::thread::spawn(move || {
        let _ = rollback::wait_outcome(&record, &waiter.table);
        settle(&waiter);
    });
    let mut answer = said;
    answer["applied"] = json!(true);
    answer["confirm_by"] = json!(deadline_ms / 1000);
    answer["confirm"] = json!("/api/v1/rules/confirm");
    answer["message"] = json!(format!(
        "loaded into table inet {}; confirm within {}s or the previous ruleset comes back (the policy file is written once confirmed)",
        s.table,
        timeout.as_secs()
    ));
    Ok(answer)
}

/// Keeps the submitted policy: confirms it and writes the policy file.
pub fn confirm(state: &ApiState) -> Result<Value, ApiError> {
    let record = {
        let pending = state.pending_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(p) = pending.as_ref() else {
            return Err(ApiError::new(StatusCode::CONFLICT, "no submitted policy waits for its confirmation"));
        };
        p.record.clone()
    };
    match rollback::confirm(&record, &state.table) {
        Ok(()) => {}
        Err(e @ rollback::RollbackError::TooLate(_)) => {
            settle(state);
            return Err(ApiError::new(StatusCode::CONFLICT, format!("{e}; the policy file was not written")));
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    match settle(state) {
        Some(Ok(backup)) => Ok(json!({
            "confirmed": true,
            "policy": state.policy,
            "backup": backup,
            "message": format!("confirmed; {} written (the previous text is in {})", state.policy.display(), backup.display()),
        })),
        Some(Err(e)) => Err(ApiError::internal(e)),
        None => Ok(json!({ "confirmed": true, "policy": state.policy, "message": "confirmed" })),
    }
}

/// Once the guard decided: a confirmed policy is written to the file, a
/// rolled-back one is forgotten. Runs once per submission (whoever comes
/// first takes it); `None` when another call settled it already.
fn settle(state: &ApiState) -> Option<Result<PathBuf, String>> {
    let mut pending = state.pending_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = pending.as_ref()?;
    let phase = rollback::read(&p.record).ok().flatten().map(|r| r.phase);
    let done = match phase {
        Some(Phase::Pending) => return None,
        Some(Phase::Confirmed) => {
            let written = crate::watch::replace_policy(&state.policy, &p.text)
                .map_err(|e| format!("confirmed, but {} could not be written: {e}", state.policy.display()));
            match &written {
                Ok(_) => tracing::info!(policy = %state.policy.display(), "submitted policy confirmed and written"),
                Err(e) => tracing::error!(error = %e, "submitted policy confirmed, file not written"),
            }
            written
        }
        other => {
            tracing::warn!(phase = ?other, "submitted policy not confirmed: the previous ruleset is back, the file unchanged");
            Err("not confirmed: the previous ruleset is back".to_string())
        }
    };
    let _ = rollback::disarm(&p.record);
    *pending = None;
    Some(done)
}
