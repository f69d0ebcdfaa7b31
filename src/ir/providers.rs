//! Provider presets: what `provider NAME` fills in for a feed. Plain data,
//! one entry per provider; add a provider by adding a row to [`PRESETS`]
//! (and a captured sample of its format to `testdata/providers/`).
//!
//! The catalog lives in `ir` because the lowering checks a feed's options
//! against it; `feeds::presets` builds the requests from it.

use std::time::Duration;

use super::feed_options::Format;

/// How a provider's response becomes address lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// A line list in the preset's [`Format`].
    Lines,
    /// AbuseIPDB APIv2 `blacklist` JSON: `{"data": [{"ipAddress": ...}]}`.
    AbuseIpdb,
    /// AlienVault OTX `pulses/subscribed` JSON pages, followed by `next`.
    OtxPulses,
}

/// How the key goes into the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No key.
    None,
    /// The key as the value of this header.
    Header(&'static str),
    /// `Authorization: Basic base64(KEY)`, the key being `user:password`.
    Basic,
}

/// What a provider's minimum-confidence filter is called in its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confidence {
    /// The query parameter sent to the provider.
    pub param: &'static str,
    /// The response field checked again locally.
    pub field: &'static str,
    /// The range the provider accepts.
    pub min: u8,
    pub max: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub title: &'static str,
    /// Downloaded in turn and joined; empty: the feed must give `source`.
    pub urls: &'static [&'static str],
    /// Query parameters added to the source (also to an overriding `source`).
    pub query: &'static [(&'static str, &'static str)],
    pub format: Format,
    pub decode: Decode,
    pub auth: Auth,
    /// `Accept` header, for APIs that answer in several formats.
    pub accept: Option<&'static str>,
    pub refresh: Duration,
    /// The shortest refresh the provider's published limits allow.
    pub min_refresh: Duration,
    pub confidence: Option<Confidence>,
    /// Whether the response carries dates `max-age` can filter on.
    pub max_age: bool,
    /// Where the URL, format and limits come from (shown by the docs).
    pub limits: &'static str,
}

impl Preset {
    pub fn needs_key(&self) -> bool {
        self.auth != Auth::None
    }
}

const HOUR: u64 = 3600;

const fn hours(h: u64) -> Duration {
    Duration::from_secs(h * HOUR)
}

const fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// Every preset, in the order the docs list them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "abuseipdb",
        title: "AbuseIPDB blacklist (APIv2)",
        urls: &["https://api.abuseipdb.com/api/v2/blacklist"],
        query: &[("limit", "10000")],
        format: Format::Plain,
        decode: Decode::AbuseIpdb,
        auth: Auth::Header("Key"),
        accept: Some("application/json"),
        refresh: hours(6),
        min_refresh: hours(5),
        confidence: Some(Confidence { param: "confidenceMinimum", field: "abuseConfidenceScore", min: 25, max: 100 }),
        max_age: true,
        limits: "docs.abuseipdb.com: `Key` header, `confidenceMinimum` 25-100, free plan 5 blacklist requests a day \
                 of up to 10,000 addresses",
    },
    Preset {
        name: "otx",
        title: "AlienVault OTX subscribed pulses",
        urls: &["https://otx.alienvault.com/api/v1/pulses/subscribed"],
        query: &[("limit", "50")],
        format: Format::Plain,
        decode: Decode::OtxPulses,
        auth: Auth::Header("X-OTX-API-KEY"),
        accept: Some("application/json"),
        refresh: hours(1),
        min_refresh: minutes(15),
        confidence: None,
        max_age: true,
        limits: "otx.alienvault.com/api: `X-OTX-API-KEY` header, pages of `results` linked by `next`, \
                 `modified_since` for recent pulses",
    },
    Preset {
        name: "spamhaus-drop",
        title: "Spamhaus DROP, IPv4 and IPv6 (eDROP was merged into it in April 2024)",
        urls: &["https://www.spamhaus.org/drop/drop_v4.json", "https://www.spamhaus.org/drop/drop_v6.json"],
        query: &[],
        format: Format::Spamhaus,
        decode: Decode::Lines,
        auth: Auth::None,
        accept: None,
        refresh: hours(12),
        min_refresh: hours(1),
        confidence: None,
        max_age: false,
        limits: "spamhaus.com DROP FAQ: automated downloads at least one hour apart; once a day is enough",
    },
    Preset {
        name: "firehol-level1",
        title: "FireHOL level1 (netset)",
        urls: &["https://raw.githubusercontent.com/firehol/blocklist-ipsets/master/firehol_level1.netset"],
        query: &[],
        format: Format::Netset,
        decode: Decode::Lines,
        auth: Auth::None,
        accept: None,
        refresh: hours(6),
        min_refresh: hours(1),
        confidence: None,
        max_age: false,
        limits: "iplists.firehol.org: a combination of slowly changing lists, published on GitHub",
    },
    Preset {
        name: "blocklist-de",
        title: "blocklist.de, all attack types",
        urls: &["https://lists.blocklist.de/lists/all.txt"],
        query: &[],
        format: Format::Plain,
        decode: Decode::Lines,
        auth: Auth::None,
        accept: None,
        refresh: hours(1),
        min_refresh: minutes(30),
        confidence: None,
        max_age: false,
        limits: "blocklist.de export lists: one address a line, regenerated every few minutes; fetch at most \
                 every 30 minutes",
    },
    Preset {
        name: "et-compromised",
        title: "Emerging Threats compromised hosts",
        urls: &["https://rules.emergingthreats.net/blockrules/compromised-ips.txt"],
        query: &[],
        format: Format::Plain,
        decode: Decode::Lines,
        auth: Auth::None,
        accept: None,
        refresh: hours(12),
        min_refresh: hours(1),
        confidence: None,
        max_age: false,
        limits: "rules.emergingthreats.net blockrules: one address a line, published daily",
    },
    Preset {
        name: "tor-exits",
        title: "Tor exit nodes (Tor Project bulk exit list)",
        urls: &["https://check.torproject.org/torbulkexitlist"],
        query: &[],
        format: Format::Plain,
        decode: Decode::Lines,
        auth: Auth::None,
        accept: None,
        refresh: hours(1),
        min_refresh: minutes(30),
        confidence: None,
        max_age: false,
        limits: "check.torproject.org: one address a line, regenerated about every 30 minutes",
    },
    Preset {
        name: "crowdsec",
        title: "CrowdSec blocklist integration, Raw IP List (give its `source` URL)",
        urls: &[],
        query: &[],
        format: Format::Plain,
        decode: Decode::Lines,
        auth: Auth::Basic,
        accept: None,
        refresh: hours(1),
        min_refresh: minutes(15),
        confidence: None,
        max_age: false,
        limits: "docs.crowdsec.net Raw IP List integration: \
                 https://admin.api.crowdsec.net/v1/integrations/ID/content, HTTP Basic credentials `user:password`, \
                 one address a line",
    },
];

/// Names that used to be lists and are no more, with what to use instead.
const RETIRED: &[(&str, &str)] =
    &[("spamhaus-edrop", "Spamhaus merged eDROP into DROP on 10 April 2024: use `provider spamhaus-drop`")];

/// The preset called `name`, or why there is none.
pub fn find(name: &str) -> Result<&'static Preset, String> {
    if let Some(p) = PRESETS.iter().find(|p| p.name == name) {
        return Ok(p);
    }
    if let Some((_, why)) = RETIRED.iter().find(|(n, _)| *n == name) {
        return Err(why.to_string());
    }
    Err(format!("unknown provider `{name}`"))
}

pub fn names() -> String {
    PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_well_formed() {
        for p in PRESETS {
            assert!(p.refresh >= p.min_refresh, "{}: default refresh below its own limit", p.name);
            assert!(p.urls.iter().all(|u| u.starts_with("https://")), "{}: presets use https", p.name);
            assert!(p.urls.is_empty() == (p.name == "crowdsec"), "{}", p.name);
            assert_eq!(find(p.name), Ok(p));
        }
        assert!(find("spamhaus-edrop").unwrap_err().contains("merged eDROP into DROP"));
        assert!(find("nope").is_err());
    }
}
