//! A feed's options (`feed NAME { KEY VALUE; }`), parsed and checked once
//! while lowering, with a located diagnostic for each problem.
//! The `feeds` module reads the typed result and fills in its defaults.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::providers::{self, Preset};
use crate::policy::ast::FeedValue;

/// How a feed's text is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One address or CIDR per line; `#` and `;` start comments.
    Plain,
    /// Spamhaus DROP/EDROP: `1.2.3.0/24 ; SBL123` with `;` header lines, or
    /// the newer `drop_v4.json` lines `{"cidr":"1.2.3.0/24","sblid":...}`.
    Spamhaus,
    /// FireHOL `.netset`: `#` header block, one CIDR per line.
    Netset,
    /// Comma-separated values; the address is in the chosen column.
    Csv,
    /// AlienVault OTX pulse JSON; indicators of type IPv4, IPv6 and CIDR.
    Otx,
}

impl Format {
    pub const NAMES: [&'static str; 5] = ["plain", "spamhaus", "netset", "csv", "otx"];

    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Spamhaus => "spamhaus",
            Format::Netset => "netset",
            Format::Csv => "csv",
            Format::Otx => "otx",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "plain" => Format::Plain,
            "spamhaus" => Format::Spamhaus,
            "netset" => Format::Netset,
            "csv" => Format::Csv,
            "otx" => Format::Otx,
            _ => return Err(format!("unknown feed format `{s}` (use {})", Format::NAMES.join(", "))),
        })
    }
}

pub fn is_url(source: &str) -> bool {
    ["http://", "https://", "file://"].iter().any(|p| source.starts_with(p))
}

/// scheme://host:port of a URL: the unit a key is confined to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Origin { host: uri.host()?.to_ascii_lowercase(), scheme, port })
    }

    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Where a feed's API key comes from, as the policy wrote it (a relative
/// `key-file` is relative to the policy file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    File(String),
    Env(String),
    Credential(String),
}

/// A feed's options as written, each checked; `None`: not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedOptions {
    /// URL or path.
    pub source: Option<String>,
    pub format: Option<Format>,
    /// Seconds, at least 60.
    pub refresh: Option<u64>,
    pub max_entries: Option<u64>,
    /// Percent, 0 to 100.
    pub max_shrink: Option<u64>,
    /// A prefix length, 1 to 32.
    pub max_coverage: Option<u8>,
    /// 1-based CSV column.
    pub column: Option<u64>,
    pub provider: Option<&'static Preset>,
    pub key_file: Option<String>,
    pub key_env: Option<String>,
    pub key_credential: Option<String>,
    pub key_header: Option<String>,
    /// 0 to 100.
    pub min_confidence: Option<u8>,
    /// Seconds, at least 60.
    pub max_age: Option<u64>,
    /// `pulses subscribed` (OTX).
    pub pulses: bool,
}

impl FeedOptions {
    /// Checks one `feed { KEY VALUE; }` option and stores its value.
    pub fn set(&mut self, key: &str, value: &FeedValue) -> Result<(), BadOption> {
        match (key, value) {
        ("source", FeedValue::Str(s)) if !s.trim().is_empty() => {
            if s.contains("://") && !is_url(s) {
                return Err(bad(
                    format!("unsupported URL scheme in `{s}`"),
                    "not http, https or file",
                    "use an http(s):// or file:// URL, or a path",
                ));
            }
            self.source = Some(s.clone());
        }
        ("source", _) => return Err(bad(
            "the source must be a quoted path or URL",
            "expected a string",
            "e.g. `source \"https://www.spamhaus.org/drop/drop.txt\"`",
        )),
        ("format", FeedValue::Name(s) | FeedValue::Str(s)) => match s.parse::<Format>() {
            Ok(f) => self.format = Some(f),
            Err(e) => return Err(bad(e, "unknown format", format!("formats: {}", Format::NAMES.join(", ")))),
        },
        ("format", _) => {
            return Err(bad("the format is a word", "expected a format name", format!("formats: {}", Format::NAMES.join(", "))))
        }
        ("refresh", FeedValue::Seconds(n)) if *n >= 60 => self.refresh = Some(*n),
        ("refresh", FeedValue::Seconds(_)) => return Err(bad(
            "refresh more often than once a minute hammers the source",
            "too short",
            "use at least 1m; most feeds change hourly or daily",
        )),
        ("refresh", _) => {
            return Err(bad("the refresh interval needs a unit", "expected a duration", "e.g. `refresh 1h` (s, m, h, d)"))
        }
        ("max-entries", FeedValue::Number(n)) if *n >= 1 => self.max_entries = Some(*n),
        ("max-entries", _) => {
            return Err(bad("max-entries must be a positive whole number", "expected a number", "e.g. `max-entries 500000`"))
        }
        ("max-shrink", v) => self.max_shrink = Some(max_shrink(v)?),
        ("max-coverage", v) => self.max_coverage = Some(max_coverage(v)?),
        ("column", FeedValue::Number(n)) if *n >= 1 => self.column = Some(*n),
        ("column", _) => {
            return Err(bad("column must be a number from 1", "expected a column number", "columns count from 1: `column 2`"))
        }
        ("provider", FeedValue::Name(p) | FeedValue::Str(p)) => match providers::find(p) {
            Ok(preset) => self.provider = Some(preset),
            Err(e) => return Err(bad(e, "not a preset", format!("providers: {}", providers::names()))),
        },
        ("provider", _) => {
            return Err(bad("the provider is a name", "expected a provider", format!("providers: {}", providers::names())))
        }
        ("key-file", FeedValue::Str(s)) if !s.trim().is_empty() => self.key_file = Some(s.clone()),
        ("key-file", _) => return Err(bad(
            "key-file is a quoted path",
            "expected a path",
            "e.g. `key-file \"/etc/phantomc/keys/abuseipdb\"` (a file readable only by root)",
        )),
        ("key-env", FeedValue::Name(s) | FeedValue::Str(s)) if is_plain_name(s) => self.key_env = Some(s.clone()),
        ("key-credential", FeedValue::Name(s) | FeedValue::Str(s)) if is_plain_name(s) => {
            self.key_credential = Some(s.clone())
        }
        ("key-env", _) => {
            return Err(bad("key-env names an environment variable", "expected a name", "e.g. `key-env ABUSEIPDB_KEY`"))
        }
        ("key-credential", _) => return Err(bad(
            "key-credential names a systemd credential",
            "expected a name",
            "e.g. `key-credential abuseipdb` with `LoadCredential=abuseipdb:/etc/phantomc/keys/abuseipdb` in the unit",
        )),
        ("key-header", FeedValue::Str(s) | FeedValue::Name(s)) if is_header_name(s) => self.key_header = Some(s.clone()),
        ("key-header", _) => {
            return Err(bad("key-header is an HTTP header name", "expected a header name", "e.g. `key-header \"X-Api-Key\"`"))
        }
        ("min-confidence" | "confidence", FeedValue::Number(n)) if *n <= 100 => self.min_confidence = Some(*n as u8),
        ("min-confidence" | "confidence", _) => {
            return Err(bad("the confidence is a score from 0 to 100", "expected 0-100", "e.g. `confidence 90`"))
        }
        ("max-age", FeedValue::Seconds(n)) if *n >= 60 => self.max_age = Some(*n),
        ("max-age", _) => return Err(bad("max-age is a duration", "expected a duration", "e.g. `max-age 30d` (s, m, h, d)")),
        ("pulses", FeedValue::Name(s) | FeedValue::Str(s)) if s == "subscribed" => self.pulses = true,
        ("pulses", _) => return Err(bad(
            "OTX feeds read the pulses you subscribe to",
            "expected `subscribed`",
            "write `pulses subscribed`, and subscribe to pulses or users on otx.alienvault.com",
        )),
        (other, _) => {
            return Err(bad(format!("unknown option `{other}`"), "unknown", format!("options: {}", OPTIONS.join(", "))))
        }
    }
        Ok(())
    }

    /// The key options given, in the order they take precedence.
    pub fn keys_given(&self) -> Vec<&'static str> {
        [("key-file", &self.key_file), ("key-env", &self.key_env), ("key-credential", &self.key_credential)]
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect()
    }

    /// Where the key comes from (`key-file` first, then `key-env`, then
    /// `key-credential`; the lowering refuses more than one).
    pub fn key(&self) -> Option<KeyRef> {
        match (&self.key_file, &self.key_env, &self.key_credential) {
            (Some(f), _, _) => Some(KeyRef::File(f.clone())),
            (_, Some(e), _) => Some(KeyRef::Env(e.clone())),
            (_, _, Some(c)) => Some(KeyRef::Credential(c.clone())),
            _ => None,
        }
    }

    /// Each given option by its canonical name, with its value's canonical text.
    pub fn to_map(&self) -> BTreeMap<&'static str, String> {
        let text = |v: Option<u64>| v.map(|v| v.to_string());
        let entries: [(&'static str, Option<String>); 15] = [
            ("source", self.source.clone()),
            ("format", self.format.map(|f| f.name().to_string())),
            ("refresh", text(self.refresh)),
            ("max-entries", text(self.max_entries)),
            ("max-shrink", text(self.max_shrink)),
            ("max-coverage", text(self.max_coverage.map(u64::from))),
            ("column", text(self.column)),
            ("provider", self.provider.map(|p| p.name.to_string())),
            ("key-file", self.key_file.clone()),
            ("key-env", self.key_env.clone()),
            ("key-credential", self.key_credential.clone()),
            ("key-header", self.key_header.clone()),
            ("min-confidence", text(self.min_confidence.map(u64::from))),
            ("max-age", text(self.max_age)),
            ("pulses", self.pulses.then(|| "subscribed".to_string())),
        ];
        entries.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
    }
}

/// Serialized as the map of option names to canonical values, as `--emit ir`
/// has always shown feed options.
impl Serialize for FeedOptions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
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

/// Every feed option, for the diagnostics.
pub const OPTIONS: [&str; 16] = crate::policy::ast::FEED_KEYS;

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

/// Checks a feed's options together (each was checked by [`FeedOptions::set`]).
pub fn check_feed(name: &str, options: &FeedOptions) -> Vec<FeedProblem> {
    let mut out = Vec::new();
    let mut problem = |code, option, message: String, label: &str, help: String| {
        out.push(FeedProblem { code, option, bad: bad(message, label, help) })
    };
    let preset = options.provider;
    if options.source.is_none() && preset.is_none_or(|p| p.urls.is_empty()) {
        let help = match preset {
            Some(p) => format!("provider {} has no fixed URL: add `source \"https://...\"` ({})", p.name, p.limits),
            None => "add `source \"/path/to/list.txt\"` or `source \"https://...\"`, or use a `provider`".into(),
        };
        problem("feed-source", None, format!("feed `{name}` has no source"), "missing `source`", help);
    }
    let keys = options.keys_given();
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
        if options.format.is_some() {
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
        if let Some(r) = options.refresh {
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
    } else if !keys.is_empty() && options.key_header.is_none() {
        problem(
            "feed-key",
            Some(keys[0]),
            format!("feed `{name}` has a key but no `key-header` to send it in"),
            "which header?",
            format!("add `key-header \"X-Api-Key\"` (or use a provider: {})", providers::names()),
        );
    }
    if options.key_header.is_some() && keys.is_empty() {
        problem(
            "feed-key",
            Some("key-header"),
            format!("feed `{name}` has a key-header but no key"),
            "no key to send",
            "add `key-file`, `key-env` or `key-credential`".into(),
        );
    }
    if let (false, Some(source)) = (keys.is_empty(), &options.source) {
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
    if options.min_confidence.is_some() && preset.is_none_or(|p| p.confidence.is_none()) {
        problem(
            "feed-option",
            Some("min-confidence"),
            format!("{provider_name} gives no confidence score (feed `{name}`)"),
            "nothing to filter on",
            "remove it; AbuseIPDB (`provider abuseipdb`) has one".into(),
        );
    }
    if let (Some(c), Some(n)) = (preset.and_then(|p| p.confidence), options.min_confidence) {
        if n < c.min || n > c.max {
            problem(
                "feed-option",
                Some("min-confidence"),
                format!("{} takes a confidence from {} to {} (feed `{name}`)", provider_name, c.min, c.max),
                "out of the provider's range",
                format!("the provider's `{}` parameter", c.param),
            );
        }
    }
    if options.max_age.is_some() && !preset.is_some_and(|p| p.max_age) {
        problem(
            "feed-option",
            Some("max-age"),
            format!("{provider_name} gives no dates to check max-age against (feed `{name}`)"),
            "nothing to filter on",
            "max-age works with abuseipdb and otx".into(),
        );
    }
    if options.pulses && !preset.is_some_and(|p| p.decode == providers::Decode::OtxPulses) {
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
    match Origin::of(source) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(key: &str, value: FeedValue) -> Result<FeedOptions, BadOption> {
        let mut o = FeedOptions::default();
        o.set(key, &value).map(|()| o)
    }

    #[test]
    fn options_are_checked_and_typed() {
        assert_eq!(parsed("format", FeedValue::Name("netset".into())).unwrap().format, Some(Format::Netset));
        assert!(parsed("format", FeedValue::Name("xml".into()))
            .unwrap_err()
            .message
            .contains("unknown feed format `xml`"));
        assert!(parsed("refresh", FeedValue::Number(3600)).is_err());
        assert!(parsed("refresh", FeedValue::Seconds(5)).is_err());
        assert_eq!(parsed("refresh", FeedValue::Seconds(3600)).unwrap().refresh, Some(3600));
        assert_eq!(parsed("max-shrink", FeedValue::Str("0.25".into())).unwrap().max_shrink, Some(25));
        assert_eq!(parsed("max-shrink", FeedValue::Str("30%".into())).unwrap().max_shrink, Some(30));
        assert!(parsed("max-shrink", FeedValue::Number(150)).is_err());
        assert_eq!(parsed("max-coverage", FeedValue::Str("/6".into())).unwrap().max_coverage, Some(6));
        for wrong in [FeedValue::Str("/0".into()), FeedValue::Str("/33".into()), FeedValue::Number(6)] {
            assert!(parsed("max-coverage", wrong.clone()).is_err(), "{wrong:?}");
        }
        assert!(parsed("source", FeedValue::Str("ftp://x/y".into())).is_err());
        assert_eq!(parsed("confidence", FeedValue::Number(90)).unwrap().min_confidence, Some(90));
        assert!(parsed("confidence", FeedValue::Number(101)).is_err());
        assert_eq!(parsed("provider", FeedValue::Name("otx".into())).unwrap().provider.map(|p| p.name), Some("otx"));
        assert!(parsed("colour", FeedValue::Name("red".into())).unwrap_err().message.contains("unknown option"));
    }

    #[test]
    fn the_map_shows_canonical_names_and_values() {
        let mut o = FeedOptions::default();
        for (k, v) in [
            ("source", FeedValue::Str("l.txt".into())),
            ("format", FeedValue::Str("csv".into())),
            ("refresh", FeedValue::Seconds(7200)),
            ("max-shrink", FeedValue::Str("0.3".into())),
            ("confidence", FeedValue::Number(80)),
            ("pulses", FeedValue::Name("subscribed".into())),
        ] {
            o.set(k, &v).unwrap();
        }
        let shown = serde_json::to_string(&o).unwrap();
        assert_eq!(
            shown,
            r#"{"format":"csv","max-shrink":"30","min-confidence":"80","pulses":"subscribed","refresh":"7200","source":"l.txt"}"#
        );
        assert_eq!(o.key(), None);
        o.set("key-env", &FeedValue::Name("K".into())).unwrap();
        o.set("key-file", &FeedValue::Str("k".into())).unwrap();
        assert_eq!((o.keys_given(), o.key()), (vec!["key-file", "key-env"], Some(KeyRef::File("k".into()))));
    }
}
