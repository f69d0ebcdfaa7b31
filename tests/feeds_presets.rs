//! Every provider preset against a sample of its real format
//! (`testdata/providers/`), served by a loopback stand-in at the preset's
//! own URL paths, with the preset's headers, query and key.

mod common;

use std::path::Path;

use common::stand_in::{Reply, StandIn};
use phantomc::feeds::cache::Cache;
use phantomc::feeds::keys::{base64, KeySource};
use phantomc::feeds::presets::{self, Auth, PRESETS};
use phantomc::feeds::update::{refresh, Outcome};
use phantomc::feeds::FeedConfig;

const KEY: &str = "preset-sample-key-31337";
/// 2026-11-23T14:00:00Z, the samples' "now".
const NOW: u64 = 1_795_442_400;

struct Case {
    preset: &'static str,
    /// One sample per URL of the preset (crowdsec: its integration URL).
    samples: &'static [&'static str],
    v4: &'static [&'static str],
    v6: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        preset: "abuseipdb",
        samples: &["abuseipdb.json"],
        v4: &["192.0.2.77/32", "192.0.2.145/32", "198.51.100.201/32", "203.0.113.17/32", "203.0.113.18/32"],
        v6: &["2001:db8:4b1::15/128", "2001:db8:c0de::2/128"],
    },
    Case {
        preset: "otx",
        samples: &["otx.json"],
        // 192.0.2.5 is inactive and expired; hostnames, URLs and hashes are no addresses.
        v4: &["198.51.100.0/25", "198.51.100.210/32", "203.0.113.44/31"],
        v6: &["2001:db8:66::7/128"],
    },
    Case {
        preset: "spamhaus-drop",
        samples: &["spamhaus-drop_v4.json", "spamhaus-drop_v6.json"],
        v4: &["1.10.16.0/20", "1.19.0.0/16", "1.32.128.0/18", "2.56.192.0/22", "5.134.128.0/19", "45.135.232.0/23"],
        v6: &["2001:67c:1b48::/48", "2a06:f7c0::/29", "2a0f:5b80::/29"],
    },
    Case {
        preset: "firehol-level1",
        samples: &["firehol-level1.netset"],
        v4: &[
            "1.10.16.0/20",
            "1.19.0.0/16",
            "2.56.192.0/22",
            "5.134.128.0/19",
            "31.24.81.0/24",
            "45.135.232.0/23",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
        ],
        v6: &[],
    },
    Case {
        preset: "blocklist-de",
        samples: &["blocklist-de.txt"],
        v4: &["192.0.2.14/32", "192.0.2.201/32", "198.51.100.33/32", "198.51.100.34/32", "203.0.113.250/32"],
        v6: &["2001:db8:aa::1/128", "2001:db8:bb::44/128"],
    },
    Case {
        preset: "et-compromised",
        samples: &["et-compromised.txt"],
        v4: &["192.0.2.61/32", "192.0.2.62/32", "198.51.100.118/32", "203.0.113.5/32", "203.0.113.77/32"],
        v6: &[],
    },
    Case {
        preset: "tor-exits",
        samples: &["tor-exits.txt"],
        v4: &["192.0.2.101/32", "192.0.2.102/32", "198.51.100.7/32", "203.0.113.40/32"],
        v6: &[],
    },
    Case {
        preset: "crowdsec",
        samples: &["crowdsec.txt"],
        v4: &["192.0.2.88/32", "198.51.100.90/32", "203.0.113.120/32"],
        v6: &["2001:db8:cafe::9/128"],
    },
];

/// `https://host/path?q` -> `/path`
fn path_of(url: &str) -> String {
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let path = &rest[rest.find('/').unwrap_or(rest.len())..];
    path.split('?').next().unwrap_or("/").to_string()
}

#[test]
fn every_preset_reads_a_sample_of_its_real_format() {
    let covered: Vec<&str> = CASES.iter().map(|c| c.preset).collect();
    for p in PRESETS {
        assert!(covered.contains(&p.name), "preset {} has no sample in testdata/providers", p.name);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).expect("key");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/providers");

    for case in CASES {
        let preset = presets::find(case.preset).expect("preset");
        let urls: Vec<String> = if preset.urls.is_empty() {
            vec!["https://admin.api.crowdsec.net/v1/integrations/6a1f/content".to_string()]
        } else {
            preset.urls.iter().map(|u| u.to_string()).collect()
        };
        let routes: Vec<(String, String)> = urls
            .iter()
            .zip(case.samples)
            .map(|(u, s)| (path_of(u), std::fs::read_to_string(samples.join(s)).expect("sample")))
            .collect();
        let auth = preset.auth;
        let server = StandIn::start(move |req, _| {
            let wanted = match auth {
                Auth::None => None,
                Auth::Header(h) => Some((h.to_ascii_lowercase(), KEY.to_string())),
                Auth::Basic => Some(("authorization".to_string(), format!("Basic {}", base64(KEY.as_bytes())))),
            };
            if let Some((h, v)) = wanted {
                if req.header(&h) != Some(v.as_str()) {
                    return Reply::json(401, r#"{"detail":"no key"}"#);
                }
            }
            let path = req.target.split('?').next().unwrap_or("/");
            match routes.iter().find(|(p, _)| p == path) {
                Some((_, body)) => Reply::text(200, body.clone()),
                None => Reply::text(404, "not found"),
            }
        });
        // The preset's URLs, moved to the stand-in.
        let local: Vec<String> =
            urls.iter().map(|u| presets::with_query(&format!("{}{}", server.base, path_of(u)), preset, None)).collect();
        let cfg = FeedConfig {
            provider: Some(preset),
            more_sources: local[1..].to_vec(),
            key: preset.needs_key().then(|| KeySource::File(key_file.clone())),
            refresh: preset.refresh,
            ..FeedConfig::new(case.preset, &local[0], preset.format)
        };
        let cache = Cache::new(dir.path().join(case.preset));
        let r = refresh(&cfg, &cache, NOW).expect("cache");
        assert_eq!(r.outcome, Outcome::Updated, "{}: {r:?}", case.preset);
        let nets: Vec<String> = cache.nets(case.preset).unwrap().unwrap().iter().map(|n| n.to_string()).collect();
        let want: Vec<String> = case.v4.iter().chain(case.v6).map(|s| s.to_string()).collect();
        assert_eq!(nets, want, "{}", case.preset);
        assert_eq!(server.requests().len(), case.samples.len(), "{}: one request per URL", case.preset);
        if let Some(accept) = preset.accept {
            assert!(server.requests().iter().all(|r| r.header("accept") == Some(accept)), "{}", case.preset);
        }
    }
}
