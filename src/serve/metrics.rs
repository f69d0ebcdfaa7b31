//! `/metrics`: the facts of the JSON API in the OpenMetrics text format, for
//! Prometheus. Every scrape reads the live table (over netlink, a read shared
//! with requests waiting at the same time), the watcher's health and
//! the feed cache afresh (like the API), so a standalone `serve` and one
//! inside `watch` give the same numbers; counters are the kernel's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use super::{health, rules, threats, unix_now, ApiError, ApiState};
use crate::watch::{ReloadDurations, RELOAD_BUCKETS_MS};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

pub async fn metrics(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || render(&state))
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

fn internal(e: impl ToString) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub fn render(state: &ApiState) -> Result<String, ApiError> {
    let status = health::report(state)?;
    let (compiled, _) = state.compiled();
    let mut registry = Registry::with_prefix("phantomc");

    ruleset_metrics(&mut registry, &status);
    if let Some(compiled) = &compiled {
        let live = state.live(compiled).map_err(internal)?;
        rule_metrics(
            &mut registry,
            &rules::rows(compiled, live.rules.as_deref(), &live.element_counters, &live.named_counters),
        );
        let now = unix_now();
        set_metrics(&mut registry, &threats::threats(&compiled.ruleset, &live, state.feed_cache.as_deref(), now));
    }
    adaptive_metrics(&mut registry, state.adaptive_status().as_ref());
    let reads = Counters::default();
    for (name, n) in [("live", state.live.reads()), ("drift", state.live_table.reads())] {
        reads.get_or_create(&vec![("read", name.to_string())]).inc_by(n);
    }
    registry.register(
        "kernel_reads",
        "Reads of the live table over netlink since the start, by what they serve (live: rules, threats and counters; drift: the status check); requests waiting at the same time share one",
        reads,
    );
    let proposals = state.proposals.as_deref().and_then(|p| std::fs::read_to_string(p).ok());
    let findings = Gauges::default();
    for (detector, n) in findings_by_detector(proposals.as_deref().unwrap_or("")) {
        findings.get_or_create(&vec![("detector", detector)]).set(n as i64);
    }
    registry.register(
        "learner_findings",
        "Sources the learner's pending proposal flags, by detector (a source flagged by two detectors counts for each)",
        findings,
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(internal)?;
    Ok(text)
}

/// Drift state and the watcher's reloads.
fn ruleset_metrics(registry: &mut Registry, status: &Value) {
    let state = status["state"].as_str().unwrap_or("unknown");
    let states = Gauges::default();
    for name in ["in-sync", "drifted", "not-loaded", "unknown"] {
        states.get_or_create(&vec![("state", name.to_string())]).set(i64::from(name == state));
    }
    registry.register(
        "ruleset_state",
        "1 for the live table's state against the policy: in-sync, drifted, not-loaded, unknown (the check could not run)",
        states,
    );
    let count = |key: &str| {
        let c: Counter = Counter::default();
        c.inc_by(status[key].as_u64().unwrap_or(0));
        c
    };
    registry.register("reloads", "Rulesets loaded by the watcher since it started", count("reloads"));
    registry.register(
        "reload_failures",
        "Reloads the watcher refused (the last good ruleset stayed loaded)",
        count("failures"),
    );
    let durations: ReloadDurations = serde_json::from_value(status["reload_duration"].clone()).unwrap_or_default();
    registry.register_with_unit(
        "reload_duration",
        "How long the watcher's reload attempts took, from the change to the ruleset being live or refused",
        Unit::Seconds,
        ReloadHistogram(durations),
    );
}

/// What adaptive mode found, by detector and by what it did about it
/// (counted since the watcher started: a restart resets them, as Prometheus
/// expects of a counter), and the proposals waiting for a review.
fn adaptive_metrics(registry: &mut Registry, status: Option<&crate::watch::adaptive::Status>) {
    let findings = Counters::default();
    let pending = Gauge::<i64>::default();
    if let Some(s) = status {
        for (detector, by_action) in &s.findings_by_detector {
            for (action, n) in by_action {
                findings.get_or_create(&vec![("detector", detector.clone()), ("action", action.clone())]).inc_by(*n);
            }
        }
        pending.set(s.proposals as i64);
    }
    registry.register(
        "adaptive_findings",
        "Findings of adaptive mode's detectors since the watcher started, by detector and action (blocked, observed, protected, rate-capped, low-confidence, block-failed)",
        findings,
    );
    registry.register("adaptive_proposals", "Adaptive mode's proposals waiting for a review", pending);
}

/// Packets and bytes per policy line (the sum over the nft rules compiled from it).
fn rule_metrics(registry: &mut Registry, rows: &[rules::RuleRow]) {
    let packets = Counters::default();
    let bytes = Counters::default();
    for row in rows.iter().filter(|r| r.nft_rules > 0) {
        let (Some(p), Some(b)) = (row.packets, row.bytes) else { continue };
        let labels = vec![
            ("rule", row.id.clone()),
            ("chain", row.chain.clone()),
            ("action", row.action.clone()),
            ("label", row.label.clone().unwrap_or_default()),
        ];
        packets.get_or_create(&labels).inc_by(p);
        bytes.get_or_create(&labels).inc_by(b);
    }
    registry.register("rule_packets", "Packets each policy line decided (its live nft counters)", packets);
    registry.register_with_unit("rule", "Bytes each policy line decided", Unit::Bytes, bytes);
}

/// Run-time set sizes, feed sizes, ages and refresh state.
fn set_metrics(registry: &mut Registry, t: &threats::Threats) {
    let set_entries = Gauges::default();
    for s in &t.dynamic_sets {
        let labels = vec![("set", s.set.clone()), ("nft_set", s.nft_set.clone())];
        set_entries.get_or_create(&labels).set(s.entries.unwrap_or(0) as i64);
    }
    registry.register("set_entries", "Entries in each run-time (dynamic) set of the live table", set_entries);

    let feed_entries = Gauges::default();
    let age = Gauges::default();
    let failing = Gauges::default();
    let failures = Counters::default();
    let last_attempt = Gauges::default();
    for f in &t.feeds {
        let labels = vec![("feed", f.feed.clone()), ("nft_set", f.nft_set.clone())];
        feed_entries.get_or_create(&labels).set(f.elements.unwrap_or(0) as i64);
        let feed = vec![("feed", f.feed.clone())];
        if let Some(a) = f.freshness.age_seconds {
            age.get_or_create(&feed).set(a as i64);
        }
        if let Some(s) = &f.freshness.status {
            failing.get_or_create(&feed).set(i64::from(s == "kept-last-good"));
        }
        // One feed has a row per family: its counter is added once.
        if let Some(n) = f.freshness.failures_total.filter(|_| f.family == "ipv4") {
            failures.get_or_create(&feed).inc_by(n);
        }
        if let Some(at) = f.freshness.checked_at {
            last_attempt.get_or_create(&feed).set(at as i64);
        }
    }
    registry.register("feed_entries", "Entries in each feed set of the live table", feed_entries);
    registry.register_with_unit("feed_age", "Age of the copy each feed was loaded from", Unit::Seconds, age);
    registry.register(
        "feed_refresh_failed",
        "1 when a feed's latest refresh was refused and its last good copy kept",
        failing,
    );
    registry.register(
        "feed_refresh_failures",
        "Refreshes of each feed that failed or were refused, ever (kept in the feed cache, so it survives restarts)",
        failures,
    );
    registry.register_with_unit(
        "feed_last_attempt_timestamp",
        "Unix time of each feed's latest refresh attempt, good or not",
        Unit::Seconds,
        last_attempt,
    );
}

/// Detectors named in the evidence headers of a proposal diff:
/// `+    # ADDRESS: DETECTOR, DETECTOR (confidence C); seen ...`.
pub fn findings_by_detector(diff: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in diff.lines() {
        let Some(comment) = line.strip_prefix('+').map(str::trim_start).and_then(|l| l.strip_prefix("# ")) else {
            continue;
        };
        let Some((_, rest)) = comment.split_once(": ") else { continue };
        let Some((detectors, _)) = rest.split_once(" (confidence ") else { continue };
        for d in detectors.split(", ") {
            *out.entry(d.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// The watcher's reload histogram, already bucketed (it may come from
/// another process's state file).
#[derive(Debug)]
struct ReloadHistogram(ReloadDurations);

impl EncodeMetric for ReloadHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.0;
        let mut buckets: Vec<(f64, u64)> = RELOAD_BUCKETS_MS
            .iter()
            .map(|&ms| ms as f64 / 1000.0)
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, bound)| (bound, d.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        buckets.dedup_by(|a, b| a.0 == b.0);
        encoder.encode_histogram::<NoLabelSet>(d.sum_ms as f64 / 1000.0, d.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_are_counted_from_evidence_headers() {
        let diff = "+set learned_block = {\n+    # 192.0.2.1: trw-scan, syn-flood (confidence 0.99); seen x\n+    #   trw-scan: likelihood ratio\n+    192.0.2.1,\n+    # 192.0.2.2: syn-flood (confidence 0.5); seen y\n # 192.0.2.3: brute-force (confidence 0.9); context line, not added\n";
        let found: Vec<_> = findings_by_detector(diff).into_iter().collect();
        assert_eq!(found, [("syn-flood".to_string(), 2), ("trw-scan".to_string(), 1)]);
    }

    #[test]
    fn the_reload_histogram_is_cumulative_with_an_inf_bucket() {
        let mut d = ReloadDurations::default();
        for ms in [20, 30, 120, 20000] {
            d.observe(ms);
        }
        let mut registry = Registry::with_prefix("phantomc");
        registry.register_with_unit("reload_duration", "h", Unit::Seconds, ReloadHistogram(d));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE phantomc_reload_duration_seconds histogram",
            "phantomc_reload_duration_seconds_sum 20.17",
            "phantomc_reload_duration_seconds_count 4",
            "phantomc_reload_duration_seconds_bucket{le=\"0.025\"} 1",
            "phantomc_reload_duration_seconds_bucket{le=\"0.05\"} 2",
            "phantomc_reload_duration_seconds_bucket{le=\"0.25\"} 3",
            "phantomc_reload_duration_seconds_bucket{le=\"10.0\"} 3",
            "phantomc_reload_duration_seconds_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }
}
