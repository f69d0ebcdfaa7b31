//! Threat-intelligence feeds: fetched lists of addresses that fill the nft
//! sets `NAME_v4` / `NAME_v6` of a `feed NAME { ... }` declaration.
//!
//! fetch (http(s), file) -> normalize (parse, aggregate) -> validate against
//! the cached last good copy -> cache -> subtract the allowlist -> replace the
//! set's elements in one nft transaction.

pub mod allow;
pub mod cache;
pub mod fetch;
pub mod formats;
pub mod normalize;
pub mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use formats::Format;

use ipnet::IpNet;

use crate::ir::{nft_set_name, Family, FeedDef, Ruleset};
use crate::nft::{Elements, Nft, SetElem};
use crate::policy::ast::FeedValue;

/// Entries a feed may have unless `max-entries` says otherwise.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;
/// A feed may lose at most this percentage of its entries in one update
/// unless `max-shrink` says otherwise.
pub const DEFAULT_MAX_SHRINK_PERCENT: u64 = 50;
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// A feed declaration with its options checked and defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    pub name: String,
    /// URL, or a path (relative paths are relative to the policy file).
    pub source: String,
    pub format: Format,
    pub refresh: Duration,
    pub max_entries: usize,
    pub max_shrink_percent: u64,
    /// 1-based CSV column of the address.
    pub column: usize,
}

impl FeedConfig {
    /// Reads a lowered feed; its options were checked by [`check_option`].
    pub fn from_def(def: &FeedDef, policy_dir: &Path) -> FeedConfig {
        let opt = |k: &str| def.options.get(k).map(String::as_str);
        let num = |k: &str| opt(k).and_then(|v| v.parse::<u64>().ok());
        let source = opt("source").unwrap_or_default();
        let source = if fetch::is_url(source) || Path::new(source).is_absolute() || source.is_empty() {
            source.to_string()
        } else {
            policy_dir.join(source).to_string_lossy().into_owned()
        };
        FeedConfig {
            name: def.name.clone(),
            source,
            format: opt("format").and_then(|f| f.parse().ok()).unwrap_or(Format::Plain),
            refresh: num("refresh").map_or(DEFAULT_REFRESH, Duration::from_secs),
            max_entries: num("max-entries").map_or(DEFAULT_MAX_ENTRIES, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_shrink_percent: num("max-shrink").unwrap_or(DEFAULT_MAX_SHRINK_PERCENT),
            column: num("column").map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// The feeds of a compiled policy, with paths relative to its file.
pub fn configs(rs: &Ruleset, policy: &Path) -> Vec<FeedConfig> {
    let dir = policy.parent().unwrap_or(Path::new("."));
    rs.feeds.iter().map(|d| FeedConfig::from_def(d, dir)).collect()
}

/// Why a feed option's value is wrong (for the lowering's diagnostic).
#[derive(Debug, PartialEq, Eq)]
pub struct BadOption {
    pub message: String,
    pub label: String,
    pub help: String,
}

fn bad(message: impl Into<String>, label: &str, help: impl Into<String>) -> BadOption {
    BadOption { message: message.into(), label: label.into(), help: help.into() }
}

/// Checks one `feed { KEY VALUE; }` option; returns the value's canonical text.
pub fn check_option(key: &str, value: &FeedValue) -> Result<String, BadOption> {
    match (key, value) {
        ("source", FeedValue::Str(s)) if !s.trim().is_empty() => {
            if s.contains("://") && !fetch::is_url(s) {
                return Err(bad(
                    format!("unsupported URL scheme in `{s}`"),
                    "not http, https or file",
                    "use an http(s):// or file:// URL, or a path",
                ));
            }
            Ok(s.clone())
        }
        ("source", _) => Err(bad(
            "the source must be a quoted path or URL",
            "expected a string",
            "e.g. `source \"https://www.spamhaus.org/drop/drop.txt\"`",
        )),
        ("format", FeedValue::Name(s) | FeedValue::Str(s)) => match s.parse::<Format>() {
            Ok(f) => Ok(f.name().to_string()),
            Err(e) => Err(bad(e, "unknown format", format!("formats: {}", Format::NAMES.join(", ")))),
        },
        ("format", _) => {
            Err(bad("the format is a word", "expected a format name", format!("formats: {}", Format::NAMES.join(", "))))
        }
        ("refresh", FeedValue::Seconds(n)) if *n >= 60 => Ok(n.to_string()),
        ("refresh", FeedValue::Seconds(_)) => Err(bad(
            "refresh more often than once a minute hammers the source",
            "too short",
            "use at least 1m; most feeds change hourly or daily",
        )),
        ("refresh", _) => {
            Err(bad("the refresh interval needs a unit", "expected a duration", "e.g. `refresh 1h` (s, m, h, d)"))
        }
        ("max-entries", FeedValue::Number(n)) if *n >= 1 => Ok(n.to_string()),
        ("max-entries", _) => {
            Err(bad("max-entries must be a positive whole number", "expected a number", "e.g. `max-entries 500000`"))
        }
        ("max-shrink", v) => max_shrink(v).map(|p| p.to_string()),
        ("column", FeedValue::Number(n)) if *n >= 1 => Ok(n.to_string()),
        ("column", _) => {
            Err(bad("column must be a number from 1", "expected a column number", "columns count from 1: `column 2`"))
        }
        (other, _) => Err(bad(
            format!("unknown option `{other}`"),
            "unknown",
            "options: source, format, refresh, max-entries, max-shrink, column",
        )),
    }
}

/// `max-shrink 30` or `max-shrink "30%"` (percent) or `"0.3"` (fraction).
fn max_shrink(v: &FeedValue) -> Result<u64, BadOption> {
    let help = "the share of entries one update may remove: `max-shrink 30` or `max-shrink \"30%\"`";
    let percent = match v {
        FeedValue::Number(n) => Some(*n as f64),
        FeedValue::Str(s) => match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok(),
            None => s.trim().parse::<f64>().ok().map(|f| f * 100.0),
        },
        _ => None,
    };
    match percent {
        Some(p) if (0.0..=100.0).contains(&p) => Ok(p.round() as u64),
        Some(_) => Err(bad("max-shrink must be between 0% and 100%", "out of range", help)),
        None => Err(bad("max-shrink is a percentage", "expected a percentage", help)),
    }
}

/// Where feed caches live: `--state-dir`, else $PHANTOMC_STATE_DIR, else
/// /var/lib/phantomc; feeds go in its `feeds` directory.
pub fn state_dir(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PHANTOMC_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/phantomc"))
        .join("feeds")
}

/// A feed's networks as they go into its sets: trusted networks are cut out
/// of feeds that block. Returns the warnings about what was cut.
pub fn protect(rs: &Ruleset, feed: &str, nets: Vec<IpNet>) -> (Vec<IpNet>, Vec<String>) {
    if !allow::blocking_feeds(rs).contains(feed) {
        return (nets, Vec::new());
    }
    let (nets, cuts) = allow::subtract(nets, &allow::trusted(rs));
    let warnings = cuts
        .iter()
        .map(|c| {
            let rest = if c.entry.contains(&c.trusted.net) && c.entry != c.trusted.net {
                "; the rest of it stays blocked"
            } else {
                ""
            };
            format!(
                "feed {feed}: {} not blocked, it is trusted by {} (feed entry {}{rest})",
                show(c.trusted.net),
                c.trusted.why,
                show(c.entry)
            )
        })
        .collect();
    (nets, warnings)
}

/// A host as a plain address, a network in CIDR notation.
fn show(n: IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Set elements of every feed that has a cached copy, protected by the
/// allowlist; feeds never fetched are left out (the caller keeps what is live).
pub fn cached_elements(rs: &Ruleset, cache: &cache::Cache) -> Result<(Elements, Vec<String>), String> {
    let mut out = Elements::default();
    let mut warnings = Vec::new();
    for feed in &rs.feeds {
        let Some(nets) = cache.nets(&feed.name)? else { continue };
        let (nets, w) = protect(rs, &feed.name, nets);
        warnings.extend(w);
        for family in [Family::V4, Family::V6] {
            let elems = nets
                .iter()
                .filter(|n| n.addr().is_ipv4() == (family == Family::V4))
                .map(|&net| SetElem { net, timeout: None })
                .collect();
            out.by_set.insert(nft_set_name(&feed.name, family), elems);
        }
    }
    Ok((out, warnings))
}

/// What a (re)load carries into the new table: the live run-time and feed
/// sets, with each feed's cached copy in place of its live set, so a reload
/// never empties a feed set. Also returns the allowlist warnings.
pub fn load_elements(nft: &Nft, rs: &Ruleset, dir: Option<&Path>) -> Result<(Elements, Vec<String>), String> {
    let (cached, warnings) = cached_elements(rs, &cache::Cache::new(state_dir(dir)))?;
    // Listing a big set is slow (about a minute per 800k elements with nft
    // 1.0.6): read only the sets the cache does not cover.
    let mut uncached = rs.clone();
    uncached.sets.retain(|s| !cached.by_set.contains_key(&s.nft_name));
    let mut kept = crate::nft::live_elements(nft, &uncached).map_err(|e| e.to_string())?;
    kept.by_set.extend(cached.by_set);
    Ok((kept, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert_eq!(check_option("format", &FeedValue::Name("netset".into())), Ok("netset".into()));
        assert!(check_option("format", &FeedValue::Name("xml".into()))
            .unwrap_err()
            .message
            .contains("unknown feed format `xml`"));
        assert!(check_option("refresh", &FeedValue::Number(3600)).is_err());
        assert!(check_option("refresh", &FeedValue::Seconds(5)).is_err());
        assert_eq!(check_option("max-shrink", &FeedValue::Str("0.25".into())), Ok("25".into()));
        assert_eq!(check_option("max-shrink", &FeedValue::Str("30%".into())), Ok("30".into()));
        assert!(check_option("max-shrink", &FeedValue::Number(150)).is_err());
        assert!(check_option("source", &FeedValue::Str("ftp://x/y".into())).is_err());
    }

    #[test]
    fn cached_copies_become_set_elements_minus_trusted_networks() {
        let policy = "feed bad { source \"bad.txt\" }\nfeed good { source \"good.txt\" }\n\
                      allow-always { 192.0.2.0/25 }\n\
                      block in from <bad>\n\
                      pass in from <good>\n\
                      pass in proto tcp from 198.51.100.7 to port 22\n";
        let compiled = crate::ir::compile("p.pf", policy).unwrap();
        let rs = &compiled.ruleset;
        assert_eq!(allow::blocking_feeds(rs).into_iter().collect::<Vec<_>>(), vec!["bad".to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let cache = cache::Cache::new(dir.path().to_path_buf());
        let nets: Vec<IpNet> =
            ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"].iter().map(|n| n.parse().unwrap()).collect();
        cache.store("bad", &nets, &cache::Meta::default()).unwrap();
        cache.store("good", &nets, &cache::Meta::default()).unwrap();
        let (elements, warnings) = cached_elements(rs, &cache).unwrap();
        let set = |name: &str| elements.by_set[name].iter().map(|e| e.net.to_string()).collect::<Vec<_>>();
        assert_eq!(
            set("bad_v4"),
            [
                "192.0.2.128/25",
                "198.51.100.0/30",
                "198.51.100.4/31",
                "198.51.100.6/32",
                "198.51.100.8/29",
                "198.51.100.16/28",
                "198.51.100.32/27",
                "198.51.100.64/26",
                "198.51.100.128/25"
            ]
        );
        assert_eq!(set("bad_v6"), ["2001:db8::/32"]);
        assert_eq!(set("good_v4"), ["192.0.2.0/24", "198.51.100.0/24"], "a feed only passed on is not cut");
        assert_eq!(warnings.len(), 2);
        assert!(warnings[1].contains("198.51.100.7 not blocked, it is trusted by pass rule p.pf:6"), "{warnings:?}");
    }
}
