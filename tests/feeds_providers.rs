//! Keyed providers against loopback stand-ins that behave like them
//! (AbuseIPDB, OTX): keys required, a wrong key refused, pages, 429 with
//! Retry-After, cut-off JSON, a renamed field. In every bad case the last
//! good copy stays, and the key goes only to the provider's own host.

mod common;

use std::path::Path;

use common::stand_in::{self, Reply, StandIn};
use phantomc::feeds::cache::Cache;
use phantomc::feeds::update::{is_due, refresh, Outcome};
use phantomc::feeds::{self, FeedConfig};

const KEY: &str = "k3y-abuse-0123456789abcdef";
const OTX_KEY: &str = "otx-k3y-fedcba9876543210";

/// The feed `name` of a policy, compiled as if it lived in `dir`.
fn feed(dir: &Path, policy: &str, name: &str) -> FeedConfig {
    let path = dir.join("p.pf");
    let compiled = phantomc::ir::compile(&path.to_string_lossy(), policy).expect("policy compiles");
    feeds::configs(&compiled.ruleset, &path).into_iter().find(|c| c.name == name).expect("feed")
}

fn setup() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("abuseipdb.key"), format!("{KEY}\n")).expect("key");
    std::fs::write(dir.path().join("otx.key"), OTX_KEY).expect("key");
    let cache = Cache::new(dir.path().join("state"));
    (dir, cache)
}

fn abuse_policy(base: &str) -> String {
    format!(
        "provider abuseipdb {{ source \"{base}/api/v2/blacklist\"; key-file \"abuseipdb.key\"; confidence 90; max-age 30d }}\n\
         block in from <abuseipdb>\n"
    )
}

fn abuse_entries() -> Vec<(&'static str, u8, &'static str)> {
    vec![
        ("198.51.100.7", 100, "2026-11-23T13:10:00+00:00"),
        ("198.51.100.8", 95, "2026-11-20T08:00:00+00:00"),
        ("2001:db8::66", 100, "2026-11-23T12:00:00+00:00"),
        ("203.0.113.9", 75, "2026-11-23T12:00:00+00:00"), // below confidence 90: the server leaves it out
        ("192.0.2.44", 100, "2026-06-01T00:00:00+00:00"), // older than max-age 30d: phantomc drops it
    ]
}

/// 2026-11-23T14:00:00Z
const NOW: u64 = 1_795_442_400;

fn cached(cache: &Cache, name: &str) -> Vec<String> {
    cache.nets(name).expect("cache").unwrap_or_default().iter().map(|n| n.to_string()).collect()
}

/// Every file under `dir`, as text, for the key check.
fn all_files(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.push_str(&all_files(&e.path()));
        } else if e.path().extension().is_none_or(|x| x != "key") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

#[test]
fn abuseipdb_needs_its_key_and_a_wrong_key_keeps_the_last_good_copy() {
    let (dir, cache) = setup();
    let server = StandIn::start(stand_in::abuseipdb(KEY, abuse_entries()));
    let cfg = feed(dir.path(), &abuse_policy(&server.base), "abuseipdb");

    let first = refresh(&cfg, &cache, NOW).unwrap();
    assert_eq!(first.outcome, Outcome::Updated, "{first:?}");
    assert_eq!(cached(&cache, "abuseipdb"), ["198.51.100.7/32", "198.51.100.8/32", "2001:db8::66/128"]);
    assert!(
        first.warnings.iter().any(|w| w.contains("1 entries below min-confidence, older than max-age")),
        "{first:?}"
    );
    let req = &server.requests()[0];
    assert_eq!(req.header("key"), Some(KEY));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!((req.query("confidenceMinimum"), req.query("limit")), (Some("90"), Some("10000")));
    assert_eq!(first.meta.provider.as_deref(), Some("abuseipdb"));

    // The key is rotated on the provider's side: 401, and the copy stays.
    std::fs::write(dir.path().join("abuseipdb.key"), "an-old-revoked-key").unwrap();
    let wrong = refresh(&cfg, &cache, NOW + 6 * 3600).unwrap();
    let Outcome::Kept { reason } = &wrong.outcome else { panic!("{wrong:?}") };
    assert!(reason.contains("HTTP 401: Authentication failed.") && reason.contains("refused the key"), "{reason}");
    assert!(!reason.contains("an-old-revoked-key"), "{reason}");
    assert_eq!(cached(&cache, "abuseipdb").len(), 3, "the last good copy stays");

    // No key file at all: the error says where the key should be.
    std::fs::remove_file(dir.path().join("abuseipdb.key")).unwrap();
    let missing = refresh(&cfg, &cache, NOW + 12 * 3600).unwrap();
    let Outcome::Kept { reason } = &missing.outcome else { panic!("{missing:?}") };
    assert!(
        reason.starts_with("download failed: API key: cannot read key file") && reason.contains("abuseipdb.key"),
        "{reason}"
    );
    assert_eq!(server.requests().len(), 2, "without a key nothing is sent");
    assert_eq!(cached(&cache, "abuseipdb").len(), 3);
    assert!(!all_files(dir.path()).contains(KEY), "the key is in no cache file");
}

#[test]
fn otx_pages_are_followed_and_the_key_never_leaves_its_host() {
    let (dir, cache) = setup();
    let pages = vec![
        vec![
            stand_in::otx_pulse("p1", "2026-11-22T10:00:00.000000", &["198.51.100.20", "198.51.100.21"]),
            stand_in::otx_pulse("p2", "2026-11-21T10:00:00.000000", &["2001:db8:77::/48"]),
        ],
        vec![stand_in::otx_pulse("p3", "2026-11-20T10:00:00.000000", &["203.0.113.0/26"])],
        vec![stand_in::otx_pulse("p4", "2026-11-19T10:00:00.000000", &["192.0.2.99"])],
    ];
    let server = StandIn::start(stand_in::otx(OTX_KEY, pages));
    let policy = format!(
        "provider otx {{ source \"{}/api/v1/pulses/subscribed\"; key-file \"otx.key\"; pulses subscribed; max-age 30d }}\n\
         block in from <otx>\n",
        server.base
    );
    let cfg = feed(dir.path(), &policy, "otx");
    let r = refresh(&cfg, &cache, NOW).unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_eq!(
        cached(&cache, "otx"),
        ["192.0.2.99/32", "198.51.100.20/31", "203.0.113.0/26", "2001:db8:77::/48"],
        "three pages, adjacent hosts aggregated"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.header("x-otx-api-key") == Some(OTX_KEY)));
    assert_eq!(
        seen[0].query("modified_since"),
        Some("2026-10-24T14:00:00Z"),
        "max-age 30d asks only for recent pulses"
    );
    assert_eq!(seen[2].query("page"), Some("3"));

    // A page whose `next` points at another host: not followed, no key sent there.
    let elsewhere = StandIn::start(|_, _| Reply::json(200, r#"{"results":[],"next":null}"#));
    let other = elsewhere.base.clone();
    server.answer(move |_, _| {
        Reply::json(
            200,
            format!(
                r#"{{"results":[{}],"count":2,"next":"{other}/api/v1/pulses/subscribed?page=2","previous":null}}"#,
                stand_in::otx_pulse("p9", "2026-11-23T10:00:00", &["198.51.100.99"])
            ),
        )
    });
    let r = refresh(&cfg, &cache, NOW + 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(
        reason.contains("the next page is on another host") && reason.contains("the key is sent only to"),
        "{reason}"
    );
    assert!(elsewhere.requests().is_empty(), "the other host saw nothing: {:?}", elsewhere.requests());
    assert_eq!(cached(&cache, "otx").len(), 4);

    // A redirect to another host is not followed with the key either.
    let target = elsewhere.base.clone();
    server.answer(move |_, _| Reply::json(302, "").with("location", &format!("{target}/api/v1/pulses/subscribed")));
    let r = refresh(&cfg, &cache, NOW + 7200).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("redirected to http://127.0.0.1:"), "{reason}");
    assert!(elsewhere.requests().is_empty());

    // A wrong key: 403 with OTX's own words.
    std::fs::write(dir.path().join("otx.key"), "wrong").unwrap();
    server.answer(stand_in::otx(OTX_KEY, vec![vec![]]));
    let r = refresh(&cfg, &cache, NOW + 3 * 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("HTTP 403: Authentication credentials were not provided."), "{reason}");
    assert_eq!(cached(&cache, "otx").len(), 4);
}

#[test]
fn rate_limits_are_retried_after_retry_after_and_long_pauses_are_scheduled() {
    let (dir, cache) = setup();
    let server = StandIn::start(stand_in::abuseipdb(KEY, abuse_entries()));
    let cfg = feed(dir.path(), &abuse_policy(&server.base), "abuseipdb");

    // One 429 asking for a second, then the answer: one update, two requests.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let normal = stand_in::abuseipdb(KEY, abuse_entries());
    server.answer(move |req, base| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::json(
                429,
                r#"{"errors":[{"detail":"Daily rate limit of 5 requests exceeded for this endpoint.","status":429}]}"#,
            )
            .with("retry-after", "1")
        } else {
            normal(req, base)
        }
    });
    let r = refresh(&cfg, &cache, NOW).unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_eq!(server.requests().len(), 2);

    // The daily limit: wait 5 hours. Not sat out; scheduled instead.
    server.forget();
    server.answer(|_, _| {
        Reply::json(
            429,
            r#"{"errors":[{"detail":"Daily rate limit of 5 requests exceeded for this endpoint.","status":429}]}"#,
        )
        .with("retry-after", "18000")
    });
    let later = NOW + 6 * 3600;
    let r = refresh(&cfg, &cache, later).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("HTTP 429, still after 1 attempts; the server asks to wait 18000s"), "{reason}");
    assert_eq!(server.requests().len(), 1, "a long Retry-After is not retried at once");
    assert_eq!(cached(&cache, "abuseipdb").len(), 3);
    let meta = cache.meta("abuseipdb").unwrap().unwrap();
    // The first busy answer: the later of Retry-After and one refresh interval (6h).
    assert_eq!((meta.retry_at, meta.failures, meta.next_at), (Some(later + 6 * 3600), 1, later + 6 * 3600));
    assert!(!is_due(&cfg, Some(&meta), later + 6 * 3600 - 1));
    assert!(is_due(&cfg, Some(&meta), later + 6 * 3600));

    // Busy again: the pause doubles (12h), a day at most.
    let r = refresh(&cfg, &cache, later + 6 * 3600).unwrap();
    assert!(matches!(r.outcome, Outcome::Kept { .. }));
    assert_eq!(r.meta.retry_at, Some(later + 6 * 3600 + 12 * 3600));

    // 503 with an HTTP-date Retry-After in the past is retried at once (1 s, then 2 s backoff).
    server.forget();
    server.answer(|_, _| Reply::text(503, "Service Unavailable").with("retry-after", "Mon, 23 Nov 2026 14:00:00 GMT"));
    let r = refresh(&cfg, &cache, later + 18 * 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("HTTP 503, still after 3 attempts"), "{reason}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn cut_off_json_and_a_renamed_field_keep_the_last_good_copy() {
    let (dir, cache) = setup();
    let server = StandIn::start(stand_in::abuseipdb(KEY, abuse_entries()));
    let cfg = feed(dir.path(), &abuse_policy(&server.base), "abuseipdb");
    assert_eq!(refresh(&cfg, &cache, NOW).unwrap().outcome, Outcome::Updated);

    let full = stand_in::abuseipdb(KEY, abuse_entries());
    server.answer(move |req, base| {
        let mut r = full(req, base);
        r.body.truncate(r.body.len() - 40);
        r
    });
    let r = refresh(&cfg, &cache, NOW + 6 * 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("AbuseIPDB response is not complete JSON (line 1, column"), "{reason}");
    assert!(reason.contains("a cut-off download?"), "{reason}");

    // The provider renames a field: the error names it as the provider does.
    let full = stand_in::abuseipdb(KEY, abuse_entries());
    server.answer(move |req, base| {
        let mut r = full(req, base);
        r.body = r.body.replace("\"ipAddress\"", "\"ip\"");
        r
    });
    let r = refresh(&cfg, &cache, NOW + 12 * 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.ends_with("AbuseIPDB response: `data[0].ipAddress` is missing (expected an address)"), "{reason}");

    // An answer that is an error page with status 200.
    server.answer(|_, _| Reply::text(200, "<!DOCTYPE html><html><body>Maintenance</body></html>"));
    let r = refresh(&cfg, &cache, NOW + 18 * 3600).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("AbuseIPDB response is not complete JSON"), "{reason}");
    assert_eq!(cached(&cache, "abuseipdb"), ["198.51.100.7/32", "198.51.100.8/32", "2001:db8::66/128"]);
}

#[test]
fn a_stalled_provider_times_out_and_is_not_retried() {
    use phantomc::feeds::fetch::{self, FetchError, Request, Validators};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts connections, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/api/v2/blacklist", listener.local_addr().expect("addr"));
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let req = Request { timeout: std::time::Duration::from_secs(1), ..Request::get(&url) };
    let err = fetch::http(&req, &Validators::default()).expect_err("a stalled server is an error");
    assert!(matches!(&err, FetchError::Timeout { message, .. } if message.to_lowercase().contains("timeout")), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "a timeout is not tried again within the update");
}

/// A sample of Spamhaus DROP (`v4` or `v6`) with `extra` networks added.
fn drop_sample(family: &str, extra: &[&str]) -> String {
    let path = format!("{}/testdata/providers/spamhaus-drop_{family}.json", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(path).expect("sample");
    for net in extra {
        text.push_str(&format!("{{\"cidr\":\"{net}\",\"sblid\":\"SBL1\",\"rir\":\"ripencc\"}}\n"));
    }
    text
}

/// A stand-in URL's answer: 304 when the request carries `etag`, else `body` with it.
fn conditional(req: &stand_in::Seen, etag: &str, body: &str) -> Reply {
    match req.header("if-none-match") {
        Some(sent) if sent == etag => Reply::text(304, ""),
        _ => Reply::json(200, body).with("etag", etag),
    }
}

/// The spamhaus-drop preset's two URLs, moved to a stand-in.
fn spamhaus_drop(base: &str) -> FeedConfig {
    let preset = feeds::presets::find("spamhaus-drop").expect("preset");
    let local: Vec<String> =
        preset.urls.iter().map(|u| format!("{base}{}", &u["https://www.spamhaus.org".len()..])).collect();
    FeedConfig {
        provider: Some(preset),
        more_sources: local[1..].to_vec(),
        refresh: preset.refresh,
        ..FeedConfig::new("spamhaus", &local[0], preset.format)
    }
}

/// Issue 20: a feed of several URLs (Spamhaus DROP's v4 and v6 lists) keeps
/// ETags per URL, joins a 304 of one with a 200 of the other, and keeps the
/// last good copy and the error of a URL that fails while the other updates.
#[test]
fn spamhaus_drop_urls_are_conditional_and_fail_on_their_own() {
    let (dir, _) = setup();
    let cache = Cache::new(dir.path().join("state/feeds"));
    let server = StandIn::start(|_, _| Reply::text(500, "starting"));
    let cfg = spamhaus_drop(&server.base);
    let is_v4 = |req: &stand_in::Seen| req.target.starts_with("/drop/drop_v4.json");
    let v4_0 = ["1.10.16.0/20", "1.19.0.0/16", "1.32.128.0/18", "2.56.192.0/22", "5.134.128.0/19", "45.135.232.0/23"];
    let v6_0 = ["2001:67c:1b48::/48", "2a06:f7c0::/29", "2a0f:5b80::/29"];
    let want = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = v4_0.iter().chain(&v6_0).chain(extra).map(|s| s.to_string()).collect();
        all.sort_by_key(|n| (n.contains(':'), n.parse::<ipnet::IpNet>().expect("net")));
        all
    };

    // The v6 list fails before there is any copy of it: nothing is cached.
    server.answer(
        move |req, _| if is_v4(req) { Reply::json(200, drop_sample("v4", &[])) } else { Reply::text(500, "oops") },
    );
    let r = refresh(&cfg, &cache, NOW).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(reason.contains("/drop/drop_v6.json: HTTP 500"), "{reason}");
    assert_eq!(cache.nets("spamhaus").unwrap(), None);
    // A 304 to a request that was not conditional leaves nothing to stand in.
    server
        .answer(move |req, _| if is_v4(req) { Reply::json(200, drop_sample("v4", &[])) } else { Reply::text(304, "") });
    let r = refresh(&cfg, &cache, NOW + 30).unwrap();
    let Outcome::Kept { reason } = &r.outcome else { panic!("{r:?}") };
    assert!(
        reason.contains("/drop/drop_v6.json: answered 304 Not Modified to a request that was not conditional"),
        "{reason}"
    );
    assert_eq!(cache.nets("spamhaus").unwrap(), None);

    // Both answer: the union, each URL with its own ETag.
    server.forget();
    server.answer(move |req, _| {
        if is_v4(req) {
            conditional(req, "\"v4-1\"", &drop_sample("v4", &[]))
        } else {
            conditional(req, "\"v6-1\"", &drop_sample("v6", &[]))
        }
    });
    let r = refresh(&cfg, &cache, NOW + 60).unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_eq!(cached(&cache, "spamhaus"), want(&[]));
    let sent: Vec<Option<String>> =
        server.requests().iter().map(|r| r.header("if-none-match").map(str::to_string)).collect();
    assert_eq!(sent, [None, None], "no copy yet, nothing to be conditional on");

    // 304 for v4, a new v6 list: the cached v4 part joined with the new v6 one.
    server.forget();
    server.answer(move |req, _| {
        if is_v4(req) {
            conditional(req, "\"v4-1\"", "must not be read")
        } else {
            conditional(req, "\"v6-2\"", &drop_sample("v6", &["2a0e:1d80::/29"]))
        }
    });
    let r = refresh(&cfg, &cache, NOW + 12 * 3600).unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_eq!(cached(&cache, "spamhaus"), want(&["2a0e:1d80::/29"]));
    let seen = server.requests();
    assert_eq!(
        seen.iter().map(|r| (is_v4(r), r.header("if-none-match"))).collect::<Vec<_>>(),
        [(true, Some("\"v4-1\"")), (false, Some("\"v6-1\""))],
        "each URL is asked with its own ETag"
    );
    assert_eq!(
        (r.meta.parts[0].etag.as_deref(), r.meta.parts[1].etag.as_deref()),
        (Some("\"v4-1\""), Some("\"v6-2\""))
    );

    // v4 updates, v6 is rate-limited for an hour: new v4 joined with v6's last good copy.
    server.forget();
    server.answer(move |req, _| {
        if is_v4(req) {
            conditional(req, "\"v4-2\"", &drop_sample("v4", &["23.94.0.0/15"]))
        } else {
            Reply::text(429, "Too Many Requests").with("retry-after", "3600")
        }
    });
    let at = NOW + 24 * 3600;
    let r = refresh(&cfg, &cache, at).unwrap();
    assert_eq!(r.outcome, Outcome::Updated, "{r:?}");
    assert_eq!(cached(&cache, "spamhaus"), want(&["23.94.0.0/15", "2a0e:1d80::/29"]));
    let message = r.meta.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("partly updated, the last good copy kept for ")
            && message.contains("/drop/drop_v6.json: HTTP 429")
            && message.contains("the server asks to wait 3600s"),
        "{message}"
    );
    assert_eq!((r.meta.status.as_str(), r.meta.last_error_at), ("ok", Some(at)));
    let (v4, v6) = (&r.meta.parts[0], &r.meta.parts[1]);
    assert_eq!((v4.error.as_deref(), v4.fetched_at, v6.fetched_at), (None, at, NOW + 12 * 3600));
    assert!(v6.error.as_deref().is_some_and(|e| e.contains("HTTP 429")), "{v6:?}");
    // Its pause: the later of Retry-After and the refresh interval.
    assert_eq!(v6.retry_at, Some(at + 12 * 3600));

    // `feeds list` shows the partial update and the v6 list's error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phantomc"))
        .args(["feeds", "list", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .expect("feeds list");
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.lines().next().is_some_and(|h| h.ends_with("STATUS      LAST ERROR")), "{list}");
    let row = list.lines().find(|l| l.starts_with("spamhaus ")).expect("row");
    assert!(row.contains(" ok, partly ") && row.contains("drop_v6.json: HTTP 429"), "{row}");

    // Later, within the pause: v4 is asked (304), v6 is not; nothing changes,
    // and the v6 error stays the feed's last error.
    server.forget();
    let r = refresh(&cfg, &cache, at + 6 * 3600).unwrap();
    assert_eq!(r.outcome, Outcome::NotModified, "{r:?}");
    assert_eq!(server.requests().iter().map(is_v4).collect::<Vec<_>>(), [true], "v6 is paused");
    assert_eq!(cached(&cache, "spamhaus"), want(&["23.94.0.0/15", "2a0e:1d80::/29"]));
    assert!(r.meta.last_error.as_deref().is_some_and(|e| e.contains("HTTP 429")), "{:?}", r.meta);
    assert_eq!(r.meta.failures_total, 3, "the 500, the bad 304 and the 429 (a pause is no new failure)");
}
