//! Threat-intelligence feeds: fetched lists of addresses that fill the nft
//! sets `NAME_v4` / `NAME_v6` of a `feed NAME { ... }` declaration.
//!
//! fetch (http(s), file) -> normalize (parse, aggregate) -> validate against
//! the cached last good copy -> cache -> cut out protected addresses
//! ([`crate::guard::Protected`]) -> replace the
//! set's elements in one nft transaction.

pub mod allow;
pub mod cache;
pub mod coverage;
pub mod fetch;
pub mod formats;
pub mod keys;
pub mod normalize;
pub mod parts;
pub mod presets;
pub mod provider;
pub mod responses;
pub mod update;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use formats::Format;

use ipnet::IpNet;

use crate::guard::{show, Protected};
use crate::ir::feed_options::KeyRef;
use crate::ir::{feed_layout, nft_set_name, Family, FeedDef, Ruleset};
use crate::nft::record::{FeedRecord, FeedSource};
use crate::nft::{Elements, SetElem};

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
    /// The feed may cover at most a /N's worth of public IPv4 (/N+8 of IPv6).
    pub max_coverage_prefix: u8,
    /// 1-based CSV column of the address.
    pub column: usize,
    /// The preset this feed uses (`provider NAME`).
    pub provider: Option<&'static presets::Preset>,
    /// More URLs downloaded after `source` and joined to it (a preset's).
    pub more_sources: Vec<String>,
    /// Where the API key comes from, and the header it goes in.
    pub key: Option<keys::KeySource>,
    pub key_header: Option<String>,
    /// Entries the provider rates below this are dropped.
    pub min_confidence: Option<u8>,
    /// Entries the provider last saw longer ago than this are dropped.
    pub max_age: Option<Duration>,
}

impl FeedConfig {
    /// A feed with every option at its default.
    pub fn new(name: &str, source: &str, format: Format) -> FeedConfig {
        FeedConfig {
            name: name.to_string(),
            source: source.to_string(),
            format,
            refresh: DEFAULT_REFRESH,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_shrink_percent: DEFAULT_MAX_SHRINK_PERCENT,
            max_coverage_prefix: coverage::DEFAULT_MAX_COVERAGE_PREFIX,
            column: 1,
            provider: None,
            more_sources: Vec::new(),
            key: None,
            key_header: None,
            min_confidence: None,
            max_age: None,
        }
    }

    /// Reads a lowered feed (its options were checked while lowering) and
    /// fills in the defaults: the provider's, else phantomc's.
    pub fn from_def(def: &FeedDef, policy_dir: &Path) -> FeedConfig {
        let o = &def.options;
        let provider = o.provider;
        let given = o.source.as_deref().unwrap_or_default();
        let given = if fetch::is_url(given) || Path::new(given).is_absolute() || given.is_empty() {
            given.to_string()
        } else {
            policy_dir.join(given).to_string_lossy().into_owned()
        };
        // A preset's URLs, unless `source` points elsewhere (a mirror, a test).
        let mut sources: Vec<String> = match provider {
            Some(p) if given.is_empty() => p.urls.iter().map(|u| u.to_string()).collect(),
            _ => vec![given],
        };
        if let Some(p) = provider {
            sources = sources.iter().map(|u| presets::with_query(u, p, o.min_confidence)).collect();
        }
        let source = if sources.is_empty() { String::new() } else { sources.remove(0) };
        let key = o.key().map(|k| match k {
            KeyRef::File(f) => keys::KeySource::File(policy_dir.join(f)),
            KeyRef::Env(e) => keys::KeySource::Env(e),
            KeyRef::Credential(c) => keys::KeySource::Credential(c),
        });
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        FeedConfig {
            name: def.name.clone(),
            source,
            format: provider.map(|p| p.format).or(o.format).unwrap_or(Format::Plain),
            refresh: o.refresh.map(Duration::from_secs).or(provider.map(|p| p.refresh)).unwrap_or(DEFAULT_REFRESH),
            max_entries: o.max_entries.map_or(DEFAULT_MAX_ENTRIES, size),
            max_shrink_percent: o.max_shrink.unwrap_or(DEFAULT_MAX_SHRINK_PERCENT),
            max_coverage_prefix: o.max_coverage.unwrap_or(coverage::DEFAULT_MAX_COVERAGE_PREFIX),
            column: o.column.map_or(1, size),
            provider,
            more_sources: sources,
            key,
            key_header: o.key_header.clone(),
            min_confidence: o.min_confidence,
            max_age: o.max_age.map(Duration::from_secs),
        }
    }

    /// The provider's name, for listings.
    pub fn provider_name(&self) -> Option<&'static str> {
        self.provider.map(|p| p.name)
    }
}

/// The feeds of a compiled policy, with paths relative to its file.
pub fn configs(rs: &Ruleset, policy: &Path) -> Vec<FeedConfig> {
    let dir = policy.parent().unwrap_or(Path::new("."));
    rs.feeds.iter().map(|d| FeedConfig::from_def(d, dir)).collect()
}

/// Where feed caches live: `--state-dir`, else $PHANTOMC_STATE_DIR, else
/// /var/lib/phantomc; feeds go in its `feeds` directory.
pub fn state_dir(arg: Option<&Path>) -> PathBuf {
    state_root(arg).join("feeds")
}

/// phantomc's state directory (feed caches, the adaptive mode's state):
/// `--state-dir`, else $PHANTOMC_STATE_DIR, else /var/lib/phantomc.
pub fn state_root(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PHANTOMC_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/phantomc"))
}

/// A feed's networks as they go into its sets: protected networks (see
/// [`Protected`]) are cut out of feeds that block. Returns the warnings
/// about what was cut.
pub fn protect(rs: &Ruleset, protected: &Protected, feed: &str, nets: Vec<IpNet>) -> (Vec<IpNet>, Vec<String>) {
    if !allow::blocking_feeds(rs).contains(feed) {
        return (nets, Vec::new());
    }
    let (nets, cuts) = protected.cut(nets);
    let warnings = cuts
        .iter()
        .map(|c| {
            let rest = if c.entry.contains(&c.protected.net) && c.entry != c.protected.net {
                "; the rest of it stays blocked"
            } else {
                ""
            };
            format!(
                "feed {feed}: {} not blocked, it is protected: {} (feed entry {}{rest})",
                show(c.protected.net),
                c.protected.why,
                show(c.entry)
            )
        })
        .collect();
    (nets, warnings)
}

/// Set elements of every feed that has a cached copy, protected by the
/// protected set; feeds never fetched are left out (the caller keeps what is live).
pub fn cached_elements(
    rs: &Ruleset,
    protected: &Protected,
    cache: &cache::Cache,
) -> Result<(Elements, Vec<String>), String> {
    let mut out = Elements::default();
    let mut warnings = Vec::new();
    for feed in &rs.feeds {
        let Some(nets) = cache.nets(&feed.name)? else { continue };
        let (nets, w) = protect(rs, protected, &feed.name, nets);
        warnings.extend(w);
        for family in [Family::V4, Family::V6] {
            let elems = nets
                .iter()
                .filter(|n| n.addr().is_ipv4() == (family == Family::V4))
                .map(|&net| SetElem { net, timeout: None, comment: None })
                .collect();
            out.by_set.insert(nft_set_name(&feed.name, family), elems);
        }
    }
    Ok((out, warnings))
}

/// A feed's cached networks of one family, `None` when it was never cached.
pub fn cached_family(feeds_dir: &Path, feed: &str, v6: bool) -> Result<Option<Vec<IpNet>>, String> {
    let nets = cache::Cache::new(feeds_dir.to_path_buf()).nets(feed)?;
    Ok(nets.map(|nets| nets.into_iter().filter(|n| n.addr().is_ipv6() == v6).collect()))
}

/// Where the entries of the live feed sets may come from, for the confirm
/// rollback's record: every cached feed's networks per family, as loaded
/// with and without the cuts of `protected` (the live table may come from
/// another policy, so either is possible; the kernel's count picks one).
pub fn rollback_sources(protected: &Protected, dir: Option<&Path>) -> Result<BTreeMap<String, FeedSource>, String> {
    let feeds_dir = state_dir(dir);
    let mut out = BTreeMap::new();
    for feed in cache::Cache::new(feeds_dir.clone()).names()? {
        for family in [Family::V4, Family::V6] {
            let Some(cached) = cached_family(&feeds_dir, &feed, family == Family::V6)? else { continue };
            let cut = protected.cut(cached.clone()).0;
            let candidates = if cut == cached { vec![cut] } else { vec![cut, cached.clone()] };
            // Each kernel set of the feed is recorded by its part of the cache;
            // each list is split once (split gives every kernel set, in order).
            let set = nft_set_name(&feed, family);
            let mut candidate_parts: Vec<_> =
                candidates.iter().map(|c| feed_layout::split(&set, family, c).into_iter()).collect();
            for (kernel, cached_part) in feed_layout::split(&set, family, &cached) {
                let source = FeedSource {
                    feed: feed.clone(),
                    cache_dir: feeds_dir.clone(),
                    cached: cached_part,
                    candidates: candidate_parts
                        .iter_mut()
                        .map(|parts| parts.next().expect("every split gives the same kernel sets").1)
                        .collect(),
                };
                out.insert(kernel.name, source);
            }
        }
    }
    Ok(out)
}

/// The cached networks a recorded feed set was recorded against: its
/// kernel set's part of the feed's cached family (see [`rollback_sources`]).
pub fn recorded_nets(f: &FeedRecord) -> Result<Vec<IpNet>, String> {
    let cached = cached_family(&f.cache_dir, &f.feed, f.v6)?
        .ok_or_else(|| format!("no cached copy in {}", f.cache_dir.display()))?;
    let (_, kernel) = feed_layout::of_kernel_set(&f.set).ok_or_else(|| format!("{} is no feed set", f.set))?;
    Ok(feed_layout::part(&kernel, &cached))
}

/// What a (re)load carries into the new table: the live run-time and feed
/// sets, with each feed's cached copy in place of its live set, so a reload
/// never empties a feed set. Also returns the warnings about protected cuts.
pub fn load_elements(
    rs: &Ruleset,
    protected: &Protected,
    dir: Option<&Path>,
) -> Result<(Elements, Vec<String>), String> {
    let (cached, warnings) = cached_elements(rs, protected, &cache::Cache::new(state_dir(dir)))?;
    // Listing a big set is slow (about a minute per 800k elements with nft
    // 1.0.6): read only the sets the cache does not cover.
    let mut kept =
        crate::nft::live_elements_of(rs, |set| !cached.by_set.contains_key(set)).map_err(|e| e.to_string())?;
    kept.by_set.extend(cached.by_set);
    Ok((kept, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_presets_fill_in_the_feed() {
        let policy = "provider abuseipdb { confidence 90; key-file \"keys/abuseipdb\"; max-age 7d }\n\
                      provider otx { pulses subscribed; key-env OTX_KEY }\n\
                      feed drop { provider spamhaus-drop; refresh 1d }\n\
                      feed mirror { provider abuseipdb; source \"http://127.0.0.1:9/bl\"; key-credential abuse }\n\
                      block in from <abuseipdb>\nblock in from <otx>\nblock in from <drop>\nblock in from <mirror>\n";
        let compiled = crate::ir::compile("/etc/phantomc/p.pf", policy).unwrap();
        let cfgs = configs(&compiled.ruleset, Path::new("/etc/phantomc/p.pf"));
        let abuse = &cfgs[0];
        assert_eq!(abuse.source, "https://api.abuseipdb.com/api/v2/blacklist?limit=10000&confidenceMinimum=90");
        assert_eq!(abuse.key, Some(keys::KeySource::File("/etc/phantomc/keys/abuseipdb".into())));
        assert_eq!((abuse.min_confidence, abuse.max_age), (Some(90), Some(Duration::from_secs(7 * 86400))));
        assert_eq!(abuse.refresh, Duration::from_secs(6 * 3600), "the preset's refresh");
        assert_eq!(cfgs[1].key, Some(keys::KeySource::Env("OTX_KEY".into())));
        assert_eq!(cfgs[2].format, Format::Spamhaus);
        assert_eq!(cfgs[2].more_sources, ["https://www.spamhaus.org/drop/drop_v6.json"]);
        assert_eq!(cfgs[2].refresh, Duration::from_secs(86400));
        assert_eq!(cfgs[3].source, "http://127.0.0.1:9/bl?limit=10000", "a source overrides the preset's URL");
    }

    #[test]
    fn provider_options_that_do_not_fit_are_errors() {
        let cases = [
            ("provider abuseipdb { }", "feed-key", "provider abuseipdb needs an API key"),
            ("provider abuseipdb { key-env K; refresh 1h }", "feed-refresh", "more often than abuseipdb allows"),
            ("provider abuseipdb { key-env K; confidence 10 }", "feed-option", "takes a confidence from 25 to 100"),
            ("provider tor-exits { key-env K }", "feed-key", "needs no key"),
            ("provider tor-exits { max-age 1d }", "feed-option", "gives no dates"),
            ("provider otx { key-env K; pulses mine }", "feed-option", "expected `subscribed`"),
            ("provider otx { key-env K; key-file \"k\" }", "feed-key", "names its key twice"),
            ("provider crowdsec { key-env K }", "feed-source", "has no source"),
            ("provider spamhaus-edrop { }", "feed-option", "merged eDROP into DROP"),
            ("feed x { source \"http://192.0.2.1/l\"; key-env K; key-header \"X-Key\" }", "feed-key", "unencrypted"),
            ("feed x { source \"https://192.0.2.1/l\"; key-env K }", "feed-key", "no `key-header`"),
            ("feed x { source \"l.txt\"; min-confidence 50 }", "feed-option", "gives no confidence score"),
        ];
        for (decl, code, message) in cases {
            let name = decl.split_whitespace().nth(1).unwrap();
            let text = format!("{decl}\nblock in from <{name}>\n");
            let diags = crate::ir::compile("p.pf", &text).err().unwrap_or_else(|| panic!("{decl} compiled"));
            let shown = format!("{diags:?}");
            assert!(shown.contains(code) && shown.contains(message), "{decl}: {shown}");
        }
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
        let (elements, warnings) = cached_elements(rs, &Protected::of_policy(rs), &cache).unwrap();
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
        assert!(warnings[1].contains("198.51.100.7 not blocked, it is protected: pass rule p.pf:6"), "{warnings:?}");
    }
}
