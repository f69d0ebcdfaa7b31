//! `threats`: the feed sets with their sizes, and the addresses blocked at
//! run time with their expiry, as the live table holds them.

use serde::Serialize;
use serde_json::Value;

use crate::ir::{Ruleset, SetKind};
use crate::nft::{objects, parse_live_elem};

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
    /// The feed's refresh interval in seconds.
    pub refresh_seconds: Option<u64>,
    /// Entries in the live set; `None` when the set is not loaded.
    pub elements: Option<usize>,
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
}

pub fn threats(rs: &Ruleset, listing: Option<&Value>) -> Threats {
    let live_elems = |nft_name: &str| -> Option<Vec<Value>> {
        let set = listing.into_iter().flat_map(objects).filter_map(|o| o.get("set")).find(|s| s.get("name").and_then(Value::as_str) == Some(nft_name))?;
        Some(set.get("elem").and_then(Value::as_array).cloned().unwrap_or_default())
    };
    let mut out = Threats::default();
    for def in &rs.sets {
        match &def.kind {
            SetKind::Static { .. } => {}
            SetKind::Feed { feed } => {
                let opts = rs.feeds.iter().find(|f| &f.name == feed).map(|f| &f.options);
                let opt = |k: &str| opts.and_then(|o| o.get(k)).cloned();
                out.feeds.push(FeedSet {
                    feed: feed.clone(),
                    set: def.name.clone(),
                    nft_set: def.nft_name.clone(),
                    family: def.family.name(),
                    source: opt("source"),
                    refresh_seconds: opt("refresh").and_then(|r| r.parse().ok()),
                    elements: live_elems(&def.nft_name).map(|e| e.len()),
                });
            }
            SetKind::Dynamic { timeout } => {
                let elems = live_elems(&def.nft_name);
                for e in elems.iter().flatten() {
                    let Some(parsed) = parse_live_elem(e) else { continue };
                    out.blocked.push(Blocked {
                        set: def.name.clone(),
                        nft_set: def.nft_name.clone(),
                        address: parsed.net.to_string(),
                        expires_in: parsed.timeout,
                        timeout: e.get("elem").and_then(|x| x.get("timeout")).and_then(Value::as_u64),
                    });
                }
                out.dynamic_sets.push(DynamicSet {
                    set: def.name.clone(),
                    nft_set: def.nft_name.clone(),
                    family: def.family.name(),
                    default_timeout: *timeout,
                    entries: elems.map(|e| e.len()),
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
    use serde_json::json;

    #[test]
    fn feed_sizes_and_blocked_entries_come_from_the_live_sets() {
        let text = "table t\nfeed bad { source \"file:///x.txt\"; refresh 1h }\nset blocklist dynamic timeout 1d\nblock in from <bad>\nblock in from <blocklist>\n";
        let c = crate::ir::compile("p.pf", text).expect("compiles");
        let listing = json!({"nftables": [
            {"set": {"name": "bad_v4", "elem": ["192.0.2.1", {"prefix": {"addr": "198.51.100.0", "len": 24}}]}},
            {"set": {"name": "bad_v6"}},
            {"set": {"name": "blocklist_v4", "elem": [{"elem": {"val": "203.0.113.9", "timeout": 3600, "expires": 3500}}, "203.0.113.1"]}},
        ]});
        let t = threats(&c.ruleset, Some(&listing));
        let feeds: Vec<_> = t.feeds.iter().map(|f| (f.nft_set.as_str(), f.elements, f.refresh_seconds)).collect();
        assert_eq!(feeds, [("bad_v4", Some(2), Some(3600)), ("bad_v6", Some(0), Some(3600))]);
        let blocked: Vec<_> = t.blocked.iter().map(|b| (b.address.as_str(), b.expires_in, b.timeout)).collect();
        assert_eq!(blocked, [("203.0.113.1/32", None, None), ("203.0.113.9/32", Some(3500), Some(3600))]);
        let sets: Vec<_> = t.dynamic_sets.iter().map(|s| (s.nft_set.as_str(), s.entries, s.default_timeout)).collect();
        assert_eq!(sets, [("blocklist_v4", Some(2), Some(86400)), ("blocklist_v6", None, Some(86400))]);
    }
}
