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
use crate::ir::{nft_set_name, Family, FeedDef, Ruleset};
use crate::nft::{Elements, SetElem};
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

    /// Reads a lowered feed; its options were checked by [`check_option`].
    pub fn from_def(def: &FeedDef, policy_dir: &Path) -> FeedConfig {
        let opt = |k: &str| def.options.get(k).map(String::as_str);
        let num = |k: &str| opt(k).and_then(|v| v.parse::<u64>().ok());
        let provider = opt("provider").and_then(|p| presets::find(p).ok());
        let min_confidence = num("min-confidence").and_then(|n| u8::try_from(n).ok());
        let given = opt("source").unwrap_or_default();
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
            sources = sources.iter().map(|u| presets::with_query(u, p, min_confidence)).collect();
        }
        let source = if sources.is_empty() { String::new() } else { sources.remove(0) };
        let key = match (opt("key-file"), opt("key-env"), opt("key-credential")) {
            (Some(f), _, _) => Some(keys::KeySource::File(policy_dir.join(f))),
            (_, Some(e), _) => Some(keys::KeySource::Env(e.to_string())),
            (_, _, Some(c)) => Some(keys::KeySource::Credential(c.to_string())),
            _ => None,
        };
        FeedConfig {
            name: def.name.clone(),
            source,
            format: provider
                .map(|p| p.format)
                .or_else(|| opt("format").and_then(|f| f.parse().ok()))
                .unwrap_or(Format::Plain),
            refresh: num("refresh").map(Duration::from_secs).or(provider.map(|p| p.refresh)).unwrap_or(DEFAULT_REFRESH),
            max_entries: num("max-entries").map_or(DEFAULT_MAX_ENTRIES, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_shrink_percent: num("max-shrink").unwrap_or(DEFAULT_MAX_SHRINK_PERCENT),
            max_coverage_prefix: num("max-coverage")
                .and_then(|n| u8::try_from(n).ok())
                .unwrap_or(coverage::DEFAULT_MAX_COVERAGE_PREFIX),
            column: num("column").map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            provider,
            more_sources: sources,
            key,
            key_header: opt("key-header").map(str::to_string),
            min_confidence,
            max_age: num("max-age").map(Duration::from_secs),
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
        ("max-coverage", v) => max_coverage(v).map(|p| p.to_string()),
        ("column", FeedValue::Number(n)) if *n >= 1 => Ok(n.to_string()),
        ("column", _) => {
            Err(bad("column must be a number from 1", "expected a column number", "columns count from 1: `column 2`"))
        }
        ("provider", FeedValue::Name(p) | FeedValue::Str(p)) => match presets::find(p) {
            Ok(preset) => Ok(preset.name.to_string()),
            Err(e) => Err(bad(e, "not a preset", format!("providers: {}", presets::names()))),
        },
        ("provider", _) => {
            Err(bad("the provider is a name", "expected a provider", format!("providers: {}", presets::names())))
        }
        ("key-file", FeedValue::Str(s)) if !s.trim().is_empty() => Ok(s.clone()),
        ("key-file", _) => Err(bad(
            "key-file is a quoted path",
            "expected a path",
            "e.g. `key-file \"/etc/phantomc/keys/abuseipdb\"` (a file readable only by root)",
        )),
        ("key-env" | "key-credential", FeedValue::Name(s) | FeedValue::Str(s)) if is_plain_name(s) => Ok(s.clone()),
        ("key-env", _) => {
            Err(bad("key-env names an environment variable", "expected a name", "e.g. `key-env ABUSEIPDB_KEY`"))
        }
        ("key-credential", _) => Err(bad(
            "key-credential names a systemd credential",
            "expected a name",
            "e.g. `key-credential abuseipdb` with `LoadCredential=abuseipdb:/etc/phantomc/keys/abuseipdb` in the unit",
        )),
        ("key-header", FeedValue::Str(s) | FeedValue::Name(s)) if is_header_name(s) => Ok(s.clone()),
        ("key-header", _) => {
            Err(bad("key-header is an HTTP header name", "expected a header name", "e.g. `key-header \"X-Api-Key\"`"))
        }
        ("min-confidence" | "confidence", FeedValue::Number(n)) if *n <= 100 => Ok(n.to_string()),
        ("min-confidence" | "confidence", _) => {
            Err(bad("the confidence is a score from 0 to 100", "expected 0-100", "e.g. `confidence 90`"))
        }
        ("max-age", FeedValue::Seconds(n)) if *n >= 60 => Ok(n.to_string()),
        ("max-age", _) => Err(bad("max-age is a duration", "expected a duration", "e.g. `max-age 30d` (s, m, h, d)")),
        ("pulses", FeedValue::Name(s) | FeedValue::Str(s)) if s == "subscribed" => Ok(s.clone()),
        ("pulses", _) => Err(bad(
            "OTX feeds read the pulses you subscribe to",
            "expected `subscribed`",
            "write `pulses subscribed`, and subscribe to pulses or users on otx.alienvault.com",
        )),
        (other, _) => {
            Err(bad(format!("unknown option `{other}`"), "unknown", format!("options: {}", OPTIONS.join(", "))))
        }
    }
}

/// Every feed option, for the diagnostics.
pub const OPTIONS: [&str; 16] = [
    "source",
    "format",
    "refresh",
    "max-entries",
    "max-shrink",
    "max-coverage",
    "column",
    "provider",
    "key-file",
    "key-env",
    "key-credential",
    "key-header",
    "min-confidence",
    "confidence",
    "max-age",
    "pulses",
];

/// The name an option is stored under (`confidence` is `min-confidence`).
pub fn canonical_key(key: &str) -> &str {
    match key {
        "confidence" => "min-confidence",
        k => k,
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

/// An HTTP token (RFC 9110), and not a header phantomc sets itself.
fn is_header_name(s: &str) -> bool {
    let token = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    token
        && !["host", "content-length", "if-none-match", "if-modified-since"].contains(&s.to_ascii_lowercase().as_str())
}

/// A problem with how a feed's (individually valid) options go together.
#[derive(Debug, PartialEq, Eq)]
pub struct FeedProblem {
    /// The diagnostic code.
    pub code: &'static str,
    /// The option to point at; `None`: the feed's name.
    pub option: Option<&'static str>,
    pub bad: BadOption,
}

/// Checks a feed's options together (each was checked by [`check_option`]).
pub fn check_feed(name: &str, options: &BTreeMap<String, String>) -> Vec<FeedProblem> {
    let has = |k: &str| options.contains_key(k);
    let mut out = Vec::new();
    let mut problem = |code, option, message: String, label: &str, help: String| {
        out.push(FeedProblem { code, option, bad: bad(message, label, help) })
    };
    let preset = options.get("provider").and_then(|p| presets::find(p).ok());
    if !has("source") && preset.is_none_or(|p| p.urls.is_empty()) {
        let help = match preset {
            Some(p) => format!("provider {} has no fixed URL: add `source \"https://...\"` ({})", p.name, p.limits),
            None => "add `source \"/path/to/list.txt\"` or `source \"https://...\"`, or use a `provider`".into(),
        };
        problem("feed-source", None, format!("feed `{name}` has no source"), "missing `source`", help);
    }
    let keys: Vec<&'static str> = ["key-file", "key-env", "key-credential"].into_iter().filter(|k| has(k)).collect();
    if keys.len() > 1 {
        problem(
            "feed-key",
            Some(keys[1]),
            format!("feed `{name}` names its key twice ({} and {})", keys[0], keys[1]),
            "a second key",
            "keep one of key-file, key-env, key-credential".into(),
        );
    }
    if let Some(p) = preset {
        if has("format") {
            problem(
                "feed-option",
                Some("format"),
                format!("provider {} sets the format of feed `{name}`", p.name),
                "set by the provider",
                "remove `format`".into(),
            );
        }
        if p.needs_key() && keys.is_empty() {
            problem(
                "feed-key",
                None,
                format!("provider {} needs an API key for feed `{name}`", p.name),
                "no key",
                "add `key-file \"/etc/phantomc/keys/NAME\"`, `key-env VAR` or `key-credential NAME`".into(),
            );
        }
        if !p.needs_key() && !keys.is_empty() {
            problem(
                "feed-key",
                Some(keys[0]),
                format!("provider {} needs no key; feed `{name}` would send one for nothing", p.name),
                "not needed",
                "remove the key option".into(),
            );
        }
        if let Some(r) = options.get("refresh").and_then(|r| r.parse::<u64>().ok()) {
            if r < p.min_refresh.as_secs() {
                problem(
                    "feed-refresh",
                    Some("refresh"),
                    format!(
                        "refresh {} is more often than {} allows (at most every {})",
                        human(r),
                        p.name,
                        human(p.min_refresh.as_secs())
                    ),
                    "too often for this provider",
                    p.limits.to_string(),
                );
            }
        }
    } else if !keys.is_empty() && !has("key-header") {
        problem(
            "feed-key",
            Some(keys[0]),
            format!("feed `{name}` has a key but no `key-header` to send it in"),
            "which header?",
            format!("add `key-header \"X-Api-Key\"` (or use a provider: {})", presets::names()),
        );
    }
    if has("key-header") && keys.is_empty() {
        problem(
            "feed-key",
            Some("key-header"),
            format!("feed `{name}` has a key-header but no key"),
            "no key to send",
            "add `key-file`, `key-env` or `key-credential`".into(),
        );
    }
    if let (false, Some(source)) = (keys.is_empty(), options.get("source")) {
        if let Err(why) = key_destination_ok(source) {
            problem(
                "feed-key",
                Some("source"),
                format!("feed `{name}`: {why}"),
                "the key would leak",
                "use an https:// URL".into(),
            );
        }
    }
    let provider_name = preset.map_or("a feed without a provider", |p| p.name);
    if has("min-confidence") && preset.is_none_or(|p| p.confidence.is_none()) {
        problem(
            "feed-option",
            Some("min-confidence"),
            format!("{provider_name} gives no confidence score (feed `{name}`)"),
            "nothing to filter on",
            "remove it; AbuseIPDB (`provider abuseipdb`) has one".into(),
        );
    }
    if let (Some(c), Some(n)) = (preset.and_then(|p| p.confidence), options.get("min-confidence")) {
        if n.parse::<u8>().is_ok_and(|n| n < c.min || n > c.max) {
            problem(
                "feed-option",
                Some("min-confidence"),
                format!("{} takes a confidence from {} to {} (feed `{name}`)", provider_name, c.min, c.max),
                "out of the provider's range",
                format!("the provider's `{}` parameter", c.param),
            );
        }
    }
    if has("max-age") && !preset.is_some_and(|p| p.max_age) {
        problem(
            "feed-option",
            Some("max-age"),
            format!("{provider_name} gives no dates to check max-age against (feed `{name}`)"),
            "nothing to filter on",
            "max-age works with abuseipdb and otx".into(),
        );
    }
    if has("pulses") && !preset.is_some_and(|p| p.decode == presets::Decode::OtxPulses) {
        problem(
            "feed-option",
            Some("pulses"),
            format!("`pulses` is for `provider otx` (feed `{name}`)"),
            "OTX only",
            "remove it".into(),
        );
    }
    out
}

/// A key may go to an https URL, or over plain http only to this machine.
fn key_destination_ok(source: &str) -> Result<(), String> {
    if source.starts_with("https://") {
        return Ok(());
    }
    if !source.starts_with("http://") {
        return Err(format!("a key is sent only with an HTTP(S) request, and `{source}` is a file"));
    }
    match fetch::Origin::of(source) {
        Some(o) if o.is_loopback() => Ok(()),
        _ => Err(format!("the key would cross the network unencrypted to `{source}`")),
    }
}

/// `6h`, `30m`, `90s`, `2d`.
fn human(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
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

/// `max-coverage "/4"`: the feed may cover a /4's worth of public IPv4
/// addresses (and a /12's worth of IPv6 global unicast).
fn max_coverage(v: &FeedValue) -> Result<u8, BadOption> {
    let help = "the most address space the feed may cover, as a prefix: `max-coverage \"/6\"` \
                (default /8; IPv6 gets 8 bits more, /16)";
    let prefix = match v {
        FeedValue::Str(s) => s.trim().strip_prefix('/').and_then(|p| p.parse::<u8>().ok()),
        _ => None,
    };
    match prefix {
        Some(p) if (1..=32).contains(&p) => Ok(p),
        Some(_) => Err(bad("max-coverage must be a prefix from /1 to /32", "out of range", help)),
        None => Err(bad("max-coverage is a prefix length like \"/6\"", "expected \"/N\"", help)),
    }
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
    let mut uncached = rs.clone();
    uncached.sets.retain(|s| !cached.by_set.contains_key(&s.nft_name));
    let mut kept = crate::nft::live_elements(&uncached).map_err(|e| e.to_string())?;
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
        assert_eq!(check_option("max-coverage", &FeedValue::Str("/6".into())), Ok("6".into()));
        for wrong in [FeedValue::Str("/0".into()), FeedValue::Str("/33".into()), FeedValue::Number(6)] {
            assert!(check_option("max-coverage", &wrong).is_err(), "{wrong:?}");
        }
        assert!(check_option("source", &FeedValue::Str("ftp://x/y".into())).is_err());
    }

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
