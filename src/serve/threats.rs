//! `threats`: the feed sets with their sizes, and the addresses blocked at
//! run time with their expiry, as the live table holds them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::LiveRead;
use crate::feeds::FeedConfig;
use crate::ir::{feed_layout, Family, Ruleset, SetKind};

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Threats {
    pub feeds: Vec<FeedSet>,
    pub dynamic_sets: Vec<DynamicSet>,
    /// Every run-time entry, sorted by set then address.
    pub blocked: Vec<Blocked>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct FeedSet {
    pub feed: String,
    pub set: String,
    pub nft_set: String,
    pub family: &'static str,
    pub source: Option<String>,
    /// The provider preset (`provider NAME`), if the feed uses one.
    pub provider: Option<String>,
    /// The feed's refresh interval in seconds (its own, its preset's or the default).
    pub refresh_seconds: Option<u64>,
    /// Unix time of the next scheduled update (`null`: never tried, due now).
    pub next_update_at: Option<u64>,
    /// Entries in the live set as the kernel counts them (summed over the
    /// feed set's kernel sets: a network split into a hash set counts as
    /// its pieces, see [`feed_layout`]), or where the
    /// kernel does not report counts (before Linux 6.x), the feed cache's
    /// record (listing an 800k-entry set takes about a minute); `None` when
    /// the table is not loaded or neither knows.
    pub elements: Option<usize>,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// What the feed cache says about a feed's last download (all `None`
/// without a cached copy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Unix time of the download the cached copy came from.
    pub fetched_at: Option<u64>,
    pub age_seconds: Option<u64>,
    /// Outcome of the latest attempt: `ok`, `not-modified`, `kept-last-good`.
    pub status: Option<String>,
    /// Why the latest attempt was refused, if it was.
    pub message: Option<String>,
    /// Entries (IPv4 + IPv6) in the cached copy.
    pub cached_entries: Option<usize>,
    /// Unix time of the latest attempt, good or not.
    pub checked_at: Option<u64>,
    /// Unix time before which the provider asked not to be polled (429/503).
    pub retry_at: Option<u64>,
    /// Attempts that failed or were refused, ever (a counter).
    pub failures_total: Option<u64>,
    /// The latest error of any attempt (kept after later successes), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// A feed of several URLs: each URL's latest error (`null` when it
    /// succeeded) and the time of its cached copy.
    pub urls: Vec<UrlState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UrlState {
    pub url: Option<String>,
    pub fetched_at: Option<u64>,
    pub error: Option<String>,
    pub error_at: Option<u64>,
    pub retry_at: Option<u64>,
}

/// Reads `FEEDS_DIR/NAME.meta.json`, the feed updater's record of a feed,
/// field by field so the API does not depend on the updater's version.
pub fn freshness(feeds_dir: &Path, feed: &str, now: u64) -> Freshness {
    let Some(meta) = meta(feeds_dir, feed) else { return Freshness::default() };
    let fetched_at = meta.get("fetched_at").and_then(Value::as_u64).filter(|&t| t > 0);
    let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    let num = |k: &str| meta.get(k).and_then(Value::as_u64);
    Freshness {
        fetched_at,
        age_seconds: fetched_at.map(|t| now.saturating_sub(t)),
        status: text("status"),
        message: text("message"),
        cached_entries: match (num("v4"), num("v6")) {
            (Some(a), Some(b)) => Some((a + b) as usize),
            _ => None,
        },
        checked_at: num("checked_at").filter(|&t| t > 0),
        retry_at: num("retry_at"),
        // A record from before the counter existed counts from 0.
        failures_total: Some(num("failures_total").unwrap_or(0)),
        last_error: text("last_error"),
        last_error_at: num("last_error_at"),
        urls: meta.get("parts").and_then(Value::as_array).map_or_else(Vec::new, |parts| {
            parts
                .iter()
                .map(|p| UrlState {
                    url: p.get("url").and_then(Value::as_str).map(str::to_string),
                    fetched_at: p.get("fetched_at").and_then(Value::as_u64).filter(|&t| t > 0),
                    error: p.get("error").and_then(Value::as_str).map(str::to_string),
                    error_at: p.get("error_at").and_then(Value::as_u64),
                    retry_at: p.get("retry_at").and_then(Value::as_u64),
                })
                .collect()
        }),
    }
}

fn meta(feeds_dir: &Path, feed: &str) -> Option<Value> {
    let text = std::fs::read_to_string(feeds_dir.join(format!("{feed}.meta.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The feed cache's count of a feed's entries of one family (`v4`, `v6`).
fn recorded_entries(feeds_dir: &Path, feed: &str, family: &str) -> Option<usize> {
    meta(feeds_dir, feed)?.get(family).and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok())
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct DynamicSet {
    pub set: String,
    pub nft_set: String,
    pub family: &'static str,
    /// Seconds an entry stays by default; `None` for "until removed".
    pub default_timeout: Option<u64>,
    pub entries: Option<usize>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub set: String,
    pub nft_set: String,
    pub address: String,
    /// Seconds left; `None` never expires.
    pub expires_in: Option<u32>,
    /// The timeout the entry was added with.
    pub timeout: Option<u64>,
    /// `block --reason`, stored as the element's comment.
    pub reason: Option<String>,
}

/// A feed set's entries as its kernel sets count them (a network split into
/// a hash set counts as its pieces); `None` when the kernel reports no count.
fn feed_count(counts: &BTreeMap<String, u32>, set: &str, family: Family) -> Option<usize> {
    let parts: Vec<u32> = feed_layout::kernel_sets(set, family)
        .iter()
        .filter(|k| k.holds_entries())
        .filter_map(|k| counts.get(&k.name).copied())
        .collect();
    (!parts.is_empty()).then(|| parts.iter().map(|&n| n as usize).sum())
}

/// `feeds_dir` is the feed cache, if there is one; `now` is Unix time.
pub fn threats(rs: &Ruleset, live: &LiveRead, feeds_dir: Option<&Path>, now: u64) -> Threats {
    let loaded = live.rules.is_some();
    let mut out = Threats::default();
    for def in &rs.sets {
        match &def.kind {
            SetKind::Static { .. } => {}
            SetKind::Feed { feed } => {
                let cfg = rs.feeds.iter().find(|f| &f.name == feed).map(|f| FeedConfig::from_def(f, Path::new("")));
                let freshness = feeds_dir.map(|d| freshness(d, feed, now)).unwrap_or_default();
                let refresh = cfg.as_ref().map(|c| c.refresh.as_secs());
                let family = if def.family == Family::V4 { "v4" } else { "v6" };
                out.feeds.push(FeedSet {
                    feed: feed.clone(),
                    set: def.name.clone(),
                    nft_set: def.nft_name.clone(),
                    family: def.family.name(),
                    source: cfg.as_ref().map(|c| c.source.clone()).filter(|s| !s.is_empty()),
                    provider: cfg.as_ref().and_then(|c| c.provider_name()).map(str::to_string),
                    refresh_seconds: refresh,
                    next_update_at: freshness
                        .checked_at
                        .zip(refresh)
                        .map(|(t, r)| (t + r).max(freshness.retry_at.unwrap_or(0))),
                    elements: feed_count(&live.counts, &def.nft_name, def.family)
                        .or_else(|| feeds_dir.filter(|_| loaded).and_then(|d| recorded_entries(d, feed, family))),
                    freshness,
                });
            }
            SetKind::Dynamic { timeout } => {
                let elems = live.runtime.get(&def.nft_name);
                for (e, added_with) in elems.into_iter().flatten() {
                    out.blocked.push(Blocked {
                        set: def.name.clone(),
                        nft_set: def.nft_name.clone(),
                        address: e.net.to_string(),
                        expires_in: e.timeout,
                        timeout: *added_with,
                        reason: e.comment.clone(),
                    });
                }
                out.dynamic_sets.push(DynamicSet {
                    set: def.name.clone(),
                    nft_set: def.nft_name.clone(),
                    family: def.family.name(),
                    default_timeout: *timeout,
                    entries: elems.map(Vec::len),
                });
            }
        }
    }
    out.feeds.sort_by(|a, b| a.nft_set.cmp(&b.nft_set));
    out.dynamic_sets.sort_by(|a, b| a.nft_set.cmp(&b.nft_set));
    out.blocked.sort_by(|a, b| (&a.nft_set, &a.address).cmp(&(&b.nft_set, &b.address)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::SetElem;

    #[test]
    fn feed_sizes_and_blocked_entries_come_from_the_live_sets() {
        let text = "table t\nfeed bad { source \"file:///x.txt\"; refresh 1h }\nset blocklist dynamic timeout 1d\nblock in from <bad>\nblock in from <blocklist>\nprovider tor-exits {}\nblock in from <tor-exits>\n";
        let c = crate::ir::compile("p.pf", text).expect("compiles");
        let elem = |net: &str, left| SetElem { net: net.parse().expect("net"), timeout: left, comment: None };
        let live = LiveRead {
            rules: Some(Vec::new()),
            runtime: [(
                "blocklist_v4".to_string(),
                vec![(elem("203.0.113.9/32", Some(3500)), Some(3600)), (elem("203.0.113.1/32", None), None)],
            )]
            .into(),
            counts: [("bad_v6".to_string(), 0)].into(),
            element_counters: Vec::new(),
            named_counters: Vec::new(),
        };
        let cache = tempfile::tempdir().expect("tempdir");
        let meta = r#"{"source": "file:///x.txt", "fetched_at": 1000, "checked_at": 1500, "v4": 2, "v6": 5, "status": "kept-last-good", "message": "shrank by 80%"}"#;
        std::fs::write(cache.path().join("bad.meta.json"), meta).expect("meta");
        let t = threats(&c.ruleset, &live, Some(cache.path()), 1600);
        let f = &t.feeds[0].freshness;
        assert_eq!(
            (f.fetched_at, f.age_seconds, f.status.as_deref(), f.message.as_deref()),
            (Some(1000), Some(600), Some("kept-last-good"), Some("shrank by 80%"))
        );
        assert_eq!(freshness(cache.path(), "never-fetched", 1600), Freshness::default());
        let feeds: Vec<_> = t.feeds.iter().map(|f| (f.nft_set.as_str(), f.elements, f.refresh_seconds)).collect();
        assert_eq!(
            feeds,
            [
                ("bad_v4", Some(2), Some(3600)),
                ("bad_v6", Some(0), Some(3600)),
                ("tor-exits_v4", None, Some(3600)),
                ("tor-exits_v6", None, Some(3600))
            ]
        );
        assert_eq!(t.feeds[0].next_update_at, Some(1500 + 3600), "an hour after the latest attempt");
        assert_eq!(t.feeds[0].provider, None);
        let busy = r#"{"source": "https://check.torproject.org/torbulkexitlist", "fetched_at": 0, "checked_at": 1500, "v4": 0, "v6": 0, "status": "kept-last-good", "message": "HTTP 429", "retry_at": 9000, "provider": "tor-exits"}"#;
        std::fs::write(cache.path().join("tor-exits.meta.json"), busy).expect("meta");
        let t = threats(&c.ruleset, &live, Some(cache.path()), 1600);
        let tor = &t.feeds[2];
        assert_eq!(tor.provider.as_deref(), Some("tor-exits"));
        assert_eq!(tor.source.as_deref(), Some("https://check.torproject.org/torbulkexitlist"));
        assert_eq!((tor.next_update_at, tor.freshness.fetched_at), (Some(9000), None), "the provider's pause wins");
        let blocked: Vec<_> = t.blocked.iter().map(|b| (b.address.as_str(), b.expires_in, b.timeout)).collect();
        assert_eq!(blocked, [("203.0.113.1/32", None, None), ("203.0.113.9/32", Some(3500), Some(3600))]);
        let sets: Vec<_> = t.dynamic_sets.iter().map(|s| (s.nft_set.as_str(), s.entries, s.default_timeout)).collect();
        assert_eq!(sets, [("blocklist_v4", Some(2), Some(86400)), ("blocklist_v6", None, Some(86400))]);
    }
}
