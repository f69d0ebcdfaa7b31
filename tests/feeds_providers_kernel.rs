//! Kernel test: a policy using the AbuseIPDB and OTX presets, keys from a
//! file and a systemd credential, loads their entries from loopback
//! stand-ins (inside the namespace) into its named sets; wrong keys, a 429
//! and a broken answer keep the last good copy in the sets; and no output
//! of any command, cache file, API answer, dashboard or metric ever holds a key.

mod common;

use common::stand_in::{self, Reply, StandIn};
use common::*;

const ABUSE_KEY: &str = "abuse-ns-key-5d41402abc4b2a76";
const OTX_KEY: &str = "otx-ns-key-7d793037a0760186";

fn policy(abuse: &str, otx: &str) -> String {
    format!(
        r#"table phantomc
provider abuseipdb {{
    source "{abuse}/api/v2/blacklist"    # the stand-in; the preset's URL is api.abuseipdb.com
    key-file "keys/abuseipdb"
    confidence 90
}}
provider otx {{
    source "{otx}/api/v1/pulses/subscribed"
    key-credential otx                     # $CREDENTIALS_DIRECTORY/otx
    pulses subscribed
}}
policy input pass
block in from <abuseipdb>
block in from <otx>
"#
    )
}

#[test]
fn presets_fill_their_sets_survive_bad_answers_and_never_leak_a_key() {
    require_tools();
    let ns = Netns::new("providers");
    let abuse = ns.run_in(|| {
        StandIn::start(stand_in::abuseipdb(
            ABUSE_KEY,
            vec![
                ("198.51.100.7", 100, "2026-11-23T13:10:00+00:00"),
                ("2001:db8::66", 97, "2026-11-23T12:00:00+00:00"),
                ("203.0.113.9", 60, "2026-11-23T12:00:00+00:00"),
            ],
        ))
    });
    let pages = vec![
        vec![stand_in::otx_pulse("p1", "2026-11-22T10:00:00", &["192.0.2.10", "192.0.2.11"])],
        vec![stand_in::otx_pulse("p2", "2026-11-21T10:00:00", &["2001:db8:77::/48"])],
    ];
    let otx = ns.run_in(move || StandIn::start(stand_in::otx(OTX_KEY, pages)));

    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    std::fs::write(keys.join("abuseipdb"), format!("{ABUSE_KEY}\n")).expect("key");
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).expect("credentials dir");
    std::fs::write(creds.join("otx"), OTX_KEY).expect("credential");
    let policy_path = dir.path().join("providers.pf");
    std::fs::write(&policy_path, policy(&abuse.base, &otx.base)).expect("policy");
    let state = dir.path().join("state");
    let (p, s) = (policy_path.to_str().expect("path"), state.to_str().expect("path"));
    let creds_env = format!("CREDENTIALS_DIRECTORY={}", creds.display());
    let bin = env!("CARGO_BIN_EXE_phantomc");
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let mut full = vec!["env", creds_env.as_str(), bin];
        full.extend_from_slice(args);
        let out = ns.exec(&full);
        outputs.push_str(&stdout(&out));
        outputs.push_str(&stderr(&out));
        out
    };

    let out = run(&["apply", p, "--state-dir", s]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = run(&["feeds", "update", p, "--state-dir", s]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let v4 = feed_set(&ns, "abuseipdb_v4");
    assert!(v4.contains("198.51.100.7") && !v4.contains("203.0.113.9"), "confidence 90 leaves out the 60: {v4}");
    assert!(feed_set(&ns, "abuseipdb_v6").contains("2001:db8::66"));
    assert!(feed_set(&ns, "otx_v4").contains("192.0.2.10/31"), "{}", feed_set(&ns, "otx_v4"));
    assert!(feed_set(&ns, "otx_v6").contains("2001:db8:77::/48"), "the second page too");
    assert_eq!(abuse.requests().len(), 1);
    assert!(abuse.requests().iter().all(|r| r.header("x-otx-api-key").is_none()), "each key to its own host");
    assert!(otx.requests().iter().all(|r| r.header("key").is_none() && r.header("x-otx-api-key") == Some(OTX_KEY)));

    // A wrong AbuseIPDB key, OTX rate-limited for an hour: both refused, sets kept.
    std::fs::write(keys.join("abuseipdb"), "revoked-key-0000").expect("key");
    otx.answer(|_, _| Reply::json(429, r#"{"detail":"Request was throttled."}"#).with("retry-after", "3600"));
    let out = run(&["feeds", "update", p, "--state-dir", s]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("abuseipdb: REFUSED: download failed:") && text.contains("HTTP 401"), "{text}");
    assert!(text.contains("otx: REFUSED: download failed:") && text.contains("HTTP 429"), "{text}");
    assert!(text.contains("kept the last good copy from"), "{text}");
    assert!(
        feed_set(&ns, "abuseipdb_v4").contains("198.51.100.7") && feed_set(&ns, "otx_v6").contains("2001:db8:77::/48")
    );
    let out = run(&["feeds", "update", "--due", p, "--state-dir", s]);
    assert!(stdout(&out).contains("otx: not due"), "the 429 pause is respected: {}", stdout(&out));

    // The credential is gone: the error names the feed and the credential.
    std::fs::remove_file(creds.join("otx")).expect("rm");
    let out = run(&["feeds", "update", "otx", p, "--state-dir", s]);
    let text = stdout(&out);
    assert!(
        text.contains("otx: REFUSED: download failed: API key: cannot read key file") && text.contains("otx"),
        "{text}"
    );
    assert!(feed_set(&ns, "otx_v4").contains("192.0.2.10"));

    // A cut-off answer from AbuseIPDB with the right key again.
    std::fs::write(keys.join("abuseipdb"), ABUSE_KEY).expect("key");
    abuse.answer(|_, _| {
        Reply::json(200, r#"{"meta":{"generatedAt":"2026-11-23T14:00:00+00:00"},"data":[{"ipAddress":"198.5"#)
    });
    let out = run(&["feeds", "update", "abuseipdb", p, "--state-dir", s]);
    assert!(stdout(&out).contains("AbuseIPDB response is not complete JSON"), "{}", stdout(&out));
    assert!(feed_set(&ns, "abuseipdb_v4").contains("198.51.100.7"));

    let out = run(&["feeds", "list", p, "--state-dir", s]);
    let list = stdout(&out);
    let header = list.lines().next().unwrap_or_default();
    assert!(header.contains("PROVIDER") && header.contains("LAST SUCCESS") && header.contains("NEXT UPDATE"), "{list}");
    let otx_row = list.lines().find(|l| l.starts_with("otx ")).expect("otx row");
    assert!(otx_row.contains(" otx ") && otx_row.contains(" kept-last-good "), "{otx_row}");
    assert!(otx_row.contains("s ago: download failed: API key"), "the last error, with its age: {otx_row}");
    run(&["feeds", "list", "--state-dir", s]);
    run(&["status", p, "--state-file", dir.path().join("none.json").to_str().expect("path")]);
    run(&["compile", p, "--state-dir", s]);

    let svc = Service::start(
        &ns,
        9180,
        &[p, "--state-dir", s, "--state-file", dir.path().join("none.json").to_str().expect("path")],
    );
    let threats = svc.get_json("/api/v1/threats");
    let abuse_feed =
        threats["feeds"].as_array().expect("feeds").iter().find(|f| f["feed"] == "abuseipdb").expect("feed");
    assert_eq!(abuse_feed["provider"], "abuseipdb", "{abuse_feed}");
    assert!(abuse_feed["message"].as_str().is_some_and(|m| m.contains("not complete JSON")), "{abuse_feed}");
    outputs.push_str(&threats.to_string());
    // The dashboard (its page, and the JSON it shows), the status and the metrics.
    for path in ["/", "/api/v1/status", "/metrics", "/api/v1/rules"] {
        let (code, body) = svc.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        outputs.push_str(&body);
    }
    assert!(
        outputs.contains(r#"phantomc_feed_refresh_failures_total{feed="otx"} 2"#),
        "the 429 and the missing credential"
    );

    let mut cache = String::new();
    for e in std::fs::read_dir(state.join("feeds")).expect("cache dir").flatten() {
        cache.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    assert!(cache.contains("\"provider\": \"otx\""), "{cache}");
    for key in [ABUSE_KEY, OTX_KEY, "revoked-key-0000"] {
        assert!(!outputs.contains(key), "a key in the output:\n{outputs}");
        assert!(!cache.contains(key), "a key in the cache:\n{cache}");
    }
}
