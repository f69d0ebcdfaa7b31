//! The REST API of `phantomc serve`, running in a server namespace with the
//! webserver policy applied, asked over the namespace's loopback; traffic
//! comes from a client namespace.

mod common;

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-token-5f1c";
const PORT: u16 = 9180;

/// The lab with the webserver policy applied and the API started with a
/// token and a proposals file (not written yet).
struct ApiLab {
    lab: WebLab,
    svc: Service,
    dir: tempfile::TempDir,
}

fn api_lab(policy: &str) -> ApiLab {
    let lab = web_lab();
    apply(&lab.srv, policy);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let proposals = dir.path().join("proposals.diff");
    // No watcher: a state file that does not exist, whatever runs on the host.
    let no_watcher = dir.path().join("no-watcher.json");
    let mut args =
        vec![policy, "--token-file", token.to_str().expect("path"), "--proposals", proposals.to_str().expect("path")];
    args.extend([
        "--state-file",
        no_watcher.to_str().expect("path"),
        "--state-dir",
        dir.path().to_str().expect("path"),
    ]);
    let svc = Service::start(&lab.srv, PORT, &args);
    ApiLab { lab, svc, dir }
}

fn rule<'a>(rules: &'a Value, id: &str) -> &'a Value {
    rules["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id} in {rules}"))
}

#[test]
fn status_reports_hash_and_drift() {
    let ApiLab { lab, svc, dir } = api_lab(WEB);
    let s = svc.get_json("/api/v1/status");
    assert_eq!(s["state"], "in-sync", "{s}");
    assert_eq!(s["loaded"], true);
    assert_eq!(s["table"], "phantomc");
    assert_eq!(s["nft_rules"], 18, "12 rules, a counted catch-all per default policy, 3 rate-limited log rules");
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["health_source"], "live-table", "no watcher state file in the namespace test");
    let hash = s["ruleset_hash"].as_str().expect("hash of the loaded ruleset");
    assert!(hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(s["policy_hash"], s["ruleset_hash"]);

    // Someone edits the live table behind phantomc's back.
    let out = lab.srv.nft(&["add", "rule", "inet", "phantomc", "input", "tcp", "dport", "9999", "accept"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = svc.get_json("/api/v1/status");
    assert_eq!(s["state"], "drifted", "{s}");
    // The hand-made rule has no policy comment; it is shown by its expressions.
    assert!(s["drift"].as_str().expect("diff").contains("+rule input \"\": meta cmp payload cmp immediate"), "{s}");
    assert_eq!(s["ruleset_hash"], Value::Null, "what is loaded is no longer the policy");
    let others = svc.get_json("/api/v1/rules")["other_rules"].clone();
    assert_eq!(others.as_array().map(Vec::len), Some(1), "{others}");
    assert_eq!((others[0]["chain"].as_str(), &others[0]["comment"]), (Some("input"), &Value::Null), "{others}");

    // A broken edit of the policy shows up as the error, with its location;
    // the counters still map through the last good compile.
    let policy = dir.path().join("webserver.pf");
    std::fs::copy(WEB, &policy).expect("copy policy");
    drop(svc);
    let svc =
        Service::start(&lab.srv, PORT, &[policy.to_str().expect("path"), "--state-file", "/nonexistent/health.json"]);
    std::fs::write(&policy, std::fs::read_to_string(WEB).expect("policy") + "allow in proto tcp to port 8080\n")
        .expect("edit");
    let s = svc.get_json("/api/v1/status");
    let err = s["last_error"].as_str().expect("error");
    assert!(err.contains("webserver.pf:25:1"), "{err}");
    assert_eq!(svc.get_json("/api/v1/rules")["rules"].as_array().expect("rules").len(), 12);
}

#[test]
fn rules_carry_live_counters_per_policy_line() {
    let ApiLab { lab, svc, .. } = api_lab(WEB);
    let _servers = Servers::start(&lab.srv, &[80, 443], &[443]);
    let before = svc.get_json("/api/v1/rules");
    let web = rule(&before, "webserver.pf:20");
    assert_eq!(
        (web["counter"].as_bool(), web["packets"].as_u64(), web["nft_rules"].as_u64()),
        (Some(true), Some(0), Some(2)),
        "{web}"
    );
    assert_eq!(web["label"], "web");
    assert_eq!(web["text"], "pass   in to port $web state new counter label \"web\"");

    // Each connection's SYN is the one packet in state new; the rest of it
    // passes as established.
    for port in [80, 80, 443] {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", port), Tcp::Connected);
    }
    assert!(udp_echo(&lab.publ, "198.51.100.1", 443), "udp 443 passes");
    let after = svc.get_json("/api/v1/rules");
    let web = rule(&after, "webserver.pf:20");
    let packets = web["packets"].as_u64().expect("packets");
    assert!((4..=6).contains(&packets), "3 SYNs and 1-3 udp probes: {web}");
    assert!(web["bytes"].as_u64().expect("bytes") >= 3 * 60, "{web}");

    // Every line counts by default (nothing reached ssh from the public side);
    // every statement of the policy is listed once.
    let ssh = rule(&after, "webserver.pf:21");
    assert_eq!(
        (ssh["counter"].as_bool(), ssh["packets"].as_u64(), ssh["nft_rules"].as_u64()),
        (Some(true), Some(0), Some(2)),
        "{ssh}"
    );
    assert_eq!(after["other_rules"], serde_json::json!([]), "every live rule comes from the policy");
    let ids: Vec<&str> =
        after["rules"].as_array().expect("rules").iter().map(|r| r["id"].as_str().expect("id")).collect();
    let expected: Vec<String> =
        [12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24].iter().map(|l| format!("webserver.pf:{l}")).collect();
    assert_eq!(ids, expected);
}

#[test]
fn threats_show_feed_sizes_and_blocked_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("feeds.pf");
    let text = std::fs::read_to_string(WEB).expect("policy")
        + "feed spamhaus { source \"file:///var/lib/phantomc/drop.txt\"; refresh 1h }\nblock in from <spamhaus>\n"
        + "set temporary = { 192.0.2.0/24, 203.0.113.50 timeout 1h }\npass in proto tcp from <temporary> to port 8443\n";
    std::fs::write(&policy, text).expect("write policy");
    let ApiLab { lab, svc, dir: state } = api_lab(policy.to_str().expect("path"));
    // The feed updater is not part of this test: fill the feed set and its
    // cache record as it would.
    std::fs::create_dir_all(state.path().join("feeds")).expect("feed cache");
    let fetched = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() - 300;
    // Feed sizes come from this record, not from listing the live set (a
    // minute of kernel time for 800k entries).
    let meta = format!(
        r#"{{"source": "file:///var/lib/phantomc/drop.txt", "fetched_at": {fetched}, "v4": 2, "v6": 0, "status": "ok", "failures_total": 3}}"#
    );
    std::fs::write(state.path().join("feeds/spamhaus.meta.json"), meta).expect("feed meta");
    let out = lab.srv.nft(&["add", "element", "inet", "phantomc", "spamhaus_v4", "{ 192.0.2.0/24, 203.0.113.50 }"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (code, done) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "2001:db8:99::/48", "timeout": 600}"#);
    assert_eq!(code, 200, "{done}");
    let t = svc.get_json("/api/v1/threats");
    let feeds: Vec<(&str, u64, u64)> = t["feeds"]
        .as_array()
        .expect("feeds")
        .iter()
        .map(|f| {
            (
                f["nft_set"].as_str().expect("set"),
                f["elements"].as_u64().expect("count"),
                f["refresh_seconds"].as_u64().expect("refresh"),
            )
        })
        .collect();
    assert_eq!(feeds, [("spamhaus_v4", 2, 3600), ("spamhaus_v6", 0, 3600)]);
    let age = t["feeds"][0]["age_seconds"].as_u64().expect("age from the feed cache");
    assert!((300..=310).contains(&age), "{age}");
    assert_eq!((t["feeds"][0]["fetched_at"].as_u64(), t["feeds"][0]["status"].as_str()), (Some(fetched), Some("ok")));
    let blocked = t["blocked"].as_array().expect("blocked");
    assert_eq!(blocked.len(), 1, "{t}");
    assert_eq!(
        (blocked[0]["address"].as_str(), blocked[0]["nft_set"].as_str(), blocked[0]["timeout"].as_u64()),
        (Some("2001:db8:99::/48"), Some("blocklist_v6"), Some(600))
    );
    let left = blocked[0]["expires_in"].as_u64().expect("expiry");
    assert!((590..=600).contains(&left), "{left}");

    // The same facts as metrics.
    let m = scrape(&svc);
    assert_eq!(m.value(r#"phantomc_feed_entries{feed="spamhaus",nft_set="spamhaus_v4"}"#), 2.0);
    assert_eq!(m.value(r#"phantomc_feed_entries{feed="spamhaus",nft_set="spamhaus_v6"}"#), 0.0);
    let age = m.value(r#"phantomc_feed_age_seconds{feed="spamhaus"}"#);
    assert!((300.0..=310.0).contains(&age), "{age}");
    assert_eq!(m.value(r#"phantomc_feed_refresh_failed{feed="spamhaus"}"#), 0.0);
    assert_eq!(
        m.value(r#"phantomc_feed_refresh_failures_total{feed="spamhaus"}"#),
        3.0,
        "once per feed, not per family"
    );
    assert!(m.0.contains("# TYPE phantomc_feed_refresh_failures counter"), "{}", m.0);
    assert_eq!(m.value(r#"phantomc_set_entries{set="blocklist",nft_set="blocklist_v6"}"#), 1.0);
    assert_eq!(m.value(r#"phantomc_set_entries{set="blocklist",nft_set="blocklist_v4"}"#), 0.0);

    // A feed set is not a run-time set: the API refuses to edit it.
    let (code, err) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "198.51.100.9", "set": "spamhaus"}"#);
    assert_eq!(code, 409, "{err}");
    assert!(err["error"].as_str().expect("error").contains("not a run-time set"), "{err}");
    // Nor is a static set with timed entries, though the kernel gives it the
    // timeout flag of a run-time set.
    let (code, err) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "198.51.100.9", "set": "temporary"}"#);
    assert_eq!(code, 409, "{err}");
    assert!(err["error"].as_str().expect("error").contains("set `temporary` is not a run-time set"), "{err}");
}

#[test]
fn writes_need_the_token_and_well_formed_input() {
    let ApiLab { lab, svc, .. } = api_lab(WEB);
    let body = r#"{"address": "198.51.100.2"}"#;
    for path in ["/api/v1/block", "/api/v1/unblock"] {
        let (code, err) = svc.post(path, None, body);
        assert_eq!(code, 401, "{path} without a token: {err}");
        assert!(err["error"].as_str().expect("error").contains("Bearer"), "{err}");
        let (code, err) = svc.post(path, Some("wrong-token"), body);
        assert_eq!(code, 403, "{path} with a wrong token: {err}");
    }
    let (code, _) = svc.request("POST", "/api/v1/block", &[("Authorization", &format!("Basic {TOKEN}"))], Some(body));
    assert_eq!(code, 401, "not a bearer token");
    // The scheme is case-insensitive (RFC 7235): past authentication, the unknown set answers 404.
    let probe = r#"{"address": "198.51.100.2", "set": "nosuchset"}"#;
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {TOKEN}");
        let (code, err) = svc.request("POST", "/api/v1/block", &[("Authorization", &auth)], Some(probe));
        assert_eq!(code, 404, "{scheme} scheme is accepted: {err}");
    }

    let bad = [
        (r#"{"address": "198.51.100.2""#, 400, "EOF while parsing"),
        ("[]", 400, "request body"),
        (r#"{"addr": "198.51.100.2"}"#, 400, "unknown field `addr`"),
        (r#"{"address": "www.example.org"}"#, 400, "not an IPv4/IPv6 address"),
        (r#"{"address": "198.51.100.2", "timeout": "1w"}"#, 400, "unknown unit"),
        (r#"{"address": "198.51.100.2", "timeout": 0}"#, 400, "out of range"),
        (r#"{"address": "198.51.100.2", "timeout": "31d"}"#, 422, "longer than the maximum of 2592000s"),
        (r#"{"address": "198.51.100.2", "timeout": 4294967295}"#, 422, "longer than the maximum"),
        (r#"{"address": "198.51.100.2", "set": "x y"}"#, 400, "not a set name"),
        (r#"{"address": "198.51.100.2", "set": "nosuchset"}"#, 404, "no set nosuchset_v4"),
    ];
    for (body, want, text) in bad {
        let (code, err) = svc.post("/api/v1/block", Some(TOKEN), body);
        assert_eq!(code, want, "{body}: {err}");
        assert!(err["error"].as_str().expect("error body").contains(text), "{body}: {err}");
    }
    let (code, err) = svc.post("/api/v1/unblock", Some(TOKEN), r#"{"address": "198.51.100.77"}"#);
    assert_eq!(code, 404, "unblock of an address that is not blocked: {err}");
    let (code, err) = svc.post("/api/v1/unblock", Some(TOKEN), r#"{"address": "198.51.100.77", "timeout": 5}"#);
    assert_eq!(code, 400, "unblock takes no timeout: {err}");
    assert!(
        svc.get_json("/api/v1/threats")["blocked"].as_array().expect("blocked").is_empty(),
        "refused writes changed nothing"
    );

    // Without a configured token the server refuses every write.
    let open = Service::start(&lab.srv, PORT + 1, &[WEB]);
    let (code, err) = open.post("/api/v1/block", Some(TOKEN), body);
    assert_eq!(code, 403, "{err}");
    assert!(err["error"].as_str().expect("error").contains("writes are disabled"), "{err}");

    // A page on another site that rebinds its DNS name to 127.0.0.1 gets nothing.
    let (code, text) = svc.request("GET", "/api/v1/rules", &[("Host", "rebind.example:9180")], None);
    assert_eq!(code, 421, "{text}");
    let (code, _) = svc.request(
        "POST",
        "/api/v1/block",
        &[("Host", "rebind.example"), ("Authorization", &format!("Bearer {TOKEN}"))],
        Some(body),
    );
    assert_eq!(code, 421);
    assert_eq!(svc.request("GET", "/api/v1/status", &[("Host", "localhost:9180")], None).0, 200);

    let (code, text) = svc.get("/api/v1/nothing");
    assert_eq!((code, text.contains("\"error\"")), (404, true), "{text}");
    assert!(svc.terminate().success(), "SIGTERM stops the server cleanly");
}

#[test]
fn block_via_api_drops_traffic_and_unblock_restores_it() {
    let ApiLab { lab, svc, .. } = api_lab(WEB);
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    let p = &lab.publ;
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected);
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected);

    let (code, done) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "198.51.100.2", "timeout": "1h"}"#);
    assert_eq!(code, 200, "{done}");
    assert_eq!(
        (done["address"].as_str(), done["nft_set"].as_str(), done["timeout"].as_u64()),
        (Some("198.51.100.2/32"), Some("blocklist_v4"), Some(3600))
    );
    let (code, done) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "2001:db8:1::2", "set": "blocklist"}"#);
    assert_eq!(code, 200, "{done}");
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "blocked v4 client");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::TimedOut, "blocked v6 client");
    let blocked: Vec<String> = svc.get_json("/api/v1/threats")["blocked"]
        .as_array()
        .expect("blocked")
        .iter()
        .map(|b| b["address"].as_str().expect("address").to_string())
        .collect();
    assert_eq!(blocked, ["198.51.100.2/32", "2001:db8:1::2/128"]);

    for addr in ["198.51.100.2", "2001:db8:1::2"] {
        let (code, done) = svc.post("/api/v1/unblock", Some(TOKEN), &format!(r#"{{"address": "{addr}"}}"#));
        assert_eq!((code, done["blocked"].as_bool()), (200, Some(false)), "{done}");
    }
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected, "unblocked v4");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected, "unblocked v6");
    assert!(svc.get_json("/api/v1/threats")["blocked"].as_array().expect("blocked").is_empty());
}

#[test]
fn proposals_and_docs() {
    let ApiLab { svc, dir, lab: _lab } = api_lab(WEB);
    let p = svc.get_json("/api/v1/proposals");
    assert_eq!((&p["text"], p["items"].as_array().map(Vec::len)), (&Value::Null, Some(0)), "{p}");
    assert!(p["file_error"].as_str().is_some_and(|e| e.contains("no proposals yet")), "{p}");
    let diff = "--- policies/webserver.pf\n+++ proposed\n@@ -21 +21,2 @@\n pass   in proto tcp from $admin_net to port 22 state new\n+pass   in proto tcp to port 8443 state new  # 412 flows from 38 hosts\n";
    std::fs::write(dir.path().join("proposals.diff"), diff).expect("write proposals");
    let p = svc.get_json("/api/v1/proposals");
    assert_eq!((p["text"].as_str(), p["additions"].as_u64(), p["removals"].as_u64()), (Some(diff), Some(1), Some(0)));

    let doc = svc.get_json("/api/docs/openapi.json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
    let mut paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/api/v1/alerts",
            "/api/v1/block",
            "/api/v1/proposals",
            "/api/v1/proposals/{id}/accept",
            "/api/v1/proposals/{id}/reject",
            "/api/v1/rules",
            "/api/v1/rules/confirm",
            "/api/v1/status",
            "/api/v1/threats",
            "/api/v1/unblock",
            "/metrics"
        ]
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            assert!(op["responses"]["200"].is_object(), "{method} {path} documents its answer");
            if method == "get" {
                let (code, _) = svc.get(path);
                assert_eq!(code, 200, "{path} answers");
            } else {
                assert!(
                    op["responses"]["401"].is_object() && op["responses"]["400"].is_object(),
                    "{path} documents auth and input errors"
                );
            }
        }
    }
    let (code, html) = svc.get("/api/docs");
    assert_eq!(code, 200);
    assert!(html.contains("/api/docs/openapi.json"), "{html}");
}

#[test]
fn status_reads_a_running_watchers_state_file() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("webserver.pf");
    std::fs::copy(WEB, &policy).expect("copy policy");
    let state_file = dir.path().join("health.json");
    let (policy, state) = (policy.to_str().expect("path"), state_file.to_str().expect("path"));
    let mut watch = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.srv.name,
            env!("CARGO_BIN_EXE_phantomc"),
            "watch",
            policy,
            "--state-file",
            state,
            "-q",
        ])
        .spawn()
        .expect("start phantomc watch");
    eventually("the watcher loads the policy", || {
        state_file.exists() && lab.srv.nft(&["list", "table", "inet", "phantomc"]).status.success()
    });
    let svc = Service::start(&lab.srv, PORT, &[policy, "--state-file", state]);
    let s = svc.get_json("/api/v1/status");
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            (s["health_source"].as_str(), s["watcher"].as_str(), s["state"].as_str()),
            (Some("watch-state-file"), Some("running"), Some("in-sync")),
            "{s}"
        );
        assert_eq!(s["reloads"], 1, "{s}");
        assert!(s["last_reload"].as_u64().is_some(), "{s}");
        assert_eq!(s["ruleset_hash"], s["policy_hash"], "the watcher and the API hash the same way: {s}");
        let m = scrape(&svc);
        assert_eq!(m.value("phantomc_reloads_total"), 1.0);
        assert_eq!(m.value("phantomc_reload_failures_total"), 0.0);
        assert_eq!(m.value("phantomc_reload_duration_seconds_count"), 1.0, "the watcher's first load was timed");
        assert_eq!(m.value(r#"phantomc_reload_duration_seconds_bucket{le="+Inf"}"#), 1.0);
    });
    let _ = watch.kill();
    let _ = watch.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn serve_refuses_a_non_loopback_address_and_an_empty_token() {
    require_tools();
    let ns = Netns::new("srvargs");
    let out = ns.phantomc(&["serve", WEB, "--listen", "0.0.0.0:9180"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a loopback address (pass --allow-remote"), "{}", stderr(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "\n").expect("write");
    let out = ns.phantomc(&["serve", WEB, "--token-file", token.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the API token is empty"), "{}", stderr(&out));
}

#[test]
fn status_answers_when_the_drift_check_cannot_run() {
    let lab = web_lab();
    apply(&lab.srv, WEB);
    // A service without CAP_SYS_ADMIN cannot make the scratch namespace the
    // exact drift check needs (it keeps CAP_NET_ADMIN for nft and netlink).
    let no_sys_admin = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"];
    let svc = Service::start_wrapped(&lab.srv, PORT, &no_sys_admin, &[WEB, "--state-file", "/nonexistent/health.json"]);
    let s = svc.get_json("/api/v1/status");
    assert_eq!(
        (s["state"].as_str(), s["loaded"].as_bool(), &s["ruleset_hash"]),
        (Some("unknown"), Some(true), &Value::Null),
        "{s}"
    );
    assert!(s["check_error"].as_str().expect("why").contains("Operation not permitted"), "{s}");
    assert_eq!(
        svc.get_json("/api/v1/rules")["rules"].as_array().expect("rules").len(),
        12,
        "other endpoints do not need it"
    );
}

/// A `/metrics` scrape: the exposition text, by sample name and labels.
struct Scrape(String);

impl Scrape {
    /// The value of the one sample written exactly as `name{labels}`.
    fn value(&self, sample: &str) -> f64 {
        let found: Vec<f64> = self
            .0
            .lines()
            .filter_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap_or_else(|e| panic!("{sample}: {v}: {e}")))
            .collect();
        assert_eq!(found.len(), 1, "one sample {sample} in:\n{}", self.0);
        found[0]
    }
}

fn scrape(svc: &Service) -> Scrape {
    let (code, text) = svc.get("/metrics");
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF:\n{text}");
    Scrape(text)
}

fn web_rule(line: u32, action: &str, label: &str) -> String {
    format!(r#"{{rule="webserver.pf:{line}",chain="input",action="{action}",label="{label}"}}"#)
}

#[test]
fn metrics_move_with_traffic_and_match_phantomc_hits() {
    let ApiLab { lab, svc, dir } = api_lab(WEB);
    let _servers = Servers::start(&lab.srv, &[80, 443], &[443]);
    let web = web_rule(20, "pass", "web");
    let before = scrape(&svc);
    assert_eq!(before.value(&format!("phantomc_rule_packets_total{web}")), 0.0);
    assert_eq!(before.value(r#"phantomc_ruleset_state{state="in-sync"}"#), 1.0);
    assert_eq!(before.value(r#"phantomc_ruleset_state{state="drifted"}"#), 0.0);
    assert_eq!(before.value("phantomc_reloads_total"), 0.0, "no watcher runs");
    assert!(before.0.contains("# TYPE phantomc_rule_packets counter"), "{}", before.0);

    // Three connections (one SYN each in state new) and a blocked address.
    for port in [80, 80, 443] {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", port), Tcp::Connected);
    }
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 22), Tcp::TimedOut, "ssh is for the admin network only");
    let blocked = lab.srv.phantomc(&["block", "203.0.113.77", "--timeout", "1h"]);
    assert!(blocked.status.success(), "{}", stderr(&blocked));
    let after = scrape(&svc);
    assert_eq!(after.value(&format!("phantomc_rule_packets_total{web}")), 3.0);
    assert!(after.value(&format!("phantomc_rule_bytes_total{web}")) >= 3.0 * 60.0);
    let dropped = after.value(&format!("phantomc_rule_packets_total{}", web_rule(12, "block", "")));
    assert!(dropped >= 1.0, "the ssh SYN (and its retries) fell to the default policy: {dropped}");
    assert_eq!(after.value(r#"phantomc_set_entries{set="blocklist",nft_set="blocklist_v4"}"#), 1.0);

    // `phantomc hits` reads the same counters: every policy line agrees.
    let hits = lab.srv.phantomc(&["hits", WEB, "--format", "json"]);
    assert!(hits.status.success(), "{}", stderr(&hits));
    let hits: Value = serde_json::from_slice(&hits.stdout).expect("hits JSON");
    let mut compared = 0;
    for row in hits["rules"].as_array().expect("rules") {
        let (Some(id), Some(packets)) = (row["id"].as_str(), row["packets"].as_u64()) else { continue };
        if row["nft_rules"].as_u64() == Some(0) {
            continue;
        }
        let labels = format!(
            r#"{{rule="{id}",chain="{}",action="{}",label="{}"}}"#,
            row["chain"].as_str().expect("chain"),
            row["action"].as_str().expect("action"),
            row["label"].as_str().unwrap_or("")
        );
        let metric = after.value(&format!("phantomc_rule_packets_total{labels}"));
        // The scrapes themselves are loopback traffic: they keep counting on
        // `pass in on lo`, established replies and the output policy.
        if ["webserver.pf:14", "webserver.pf:16", "webserver.pf:18"].contains(&id) {
            assert!(packets as f64 >= metric, "{id}: loopback and replies grow with every scrape");
        } else {
            assert_eq!(packets as f64, metric, "{id}: hits and /metrics disagree");
            let bytes = row["bytes"].as_u64().expect("bytes") as f64;
            assert_eq!(bytes, after.value(&format!("phantomc_rule_bytes_total{labels}")), "{id}");
        }
        compared += 1;
    }
    assert!(compared >= 10, "{hits}");

    // Drift and the learner's pending findings.
    let out = lab.srv.nft(&["add", "rule", "inet", "phantomc", "input", "tcp", "dport", "9999", "accept"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = "+set learned_block = {\n+    # 192.0.2.1: trw-scan, syn-flood (confidence 0.99); seen x\n+    #   trw-scan: ratio\n+    192.0.2.1,\n+    # 192.0.2.2: syn-flood (confidence 0.6); seen y\n+}\n";
    std::fs::write(dir.path().join("proposals.diff"), diff).expect("write proposals");
    let drifted = scrape(&svc);
    assert_eq!(drifted.value(r#"phantomc_ruleset_state{state="drifted"}"#), 1.0);
    assert_eq!(drifted.value(r#"phantomc_ruleset_state{state="in-sync"}"#), 0.0);
    assert_eq!(drifted.value(r#"phantomc_learner_findings{detector="syn-flood"}"#), 2.0);
    assert_eq!(drifted.value(r#"phantomc_learner_findings{detector="trw-scan"}"#), 1.0);
}

#[test]
fn alerts_come_from_the_adaptive_state_directory() {
    let t = api_lab(WEB);
    let (code, body) = t.svc.get("/api/v1/alerts");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!((v["alerts"].as_array().map(Vec::len), &v["adaptive"]), (Some(0), &Value::Null), "nothing yet: {v}");
    let dir = t.dir.path().join("adaptive");
    std::fs::create_dir_all(&dir).expect("dir");
    let line = |src: &str, action: &str| {
        format!(
            r#"{{"time":1796500000,"source":"{src}","detector":"vertical-scan","confidence":0.75,"threshold":"t","counts":"c","examples":[],"baseline":null,"action":"{action}"}}"#
        )
    };
    let text = format!(
        "{}\n{}\nnot json\n{}\n",
        line("203.0.113.1", "observed"),
        line("203.0.113.2", "blocked"),
        line("203.0.113.3", "protected")
    );
    std::fs::write(dir.join("alerts.jsonl"), text).expect("alerts");
    let status = r#"{"mode":"observe","set":"attackers","findings":3,"proposals":2,
        "findings_by_detector":{"vertical-scan":{"observed":1,"blocked":1,"protected":1}}}"#;
    std::fs::write(dir.join("status.json"), status).expect("status");
    let v = t.svc.get_json("/api/v1/alerts?last=2");
    let sources: Vec<&str> =
        v["alerts"].as_array().expect("alerts").iter().filter_map(|a| a["source"].as_str()).collect();
    assert_eq!(sources, ["203.0.113.2", "203.0.113.3"], "the latest two, oldest first: {v}");
    assert_eq!((v["damaged_lines"].as_u64(), v["adaptive"]["mode"].as_str()), (Some(1), Some("observe")), "{v}");
    // The watcher's counts by detector and action, as Prometheus counters.
    let m = scrape(&t.svc);
    for (action, n) in [("observed", 1.0), ("blocked", 1.0), ("protected", 1.0)] {
        let sample = format!(r#"phantomc_adaptive_findings_total{{detector="vertical-scan",action="{action}"}}"#);
        assert_eq!(m.value(&sample), n);
    }
    assert_eq!(m.value("phantomc_adaptive_proposals"), 2.0);
    let (code, _) = t.svc.get("/api/v1/alerts?last=many");
    assert_eq!(code, 400, "a bad query is refused");
}

/// Issue 13: one API request could block everything. Blocks of the whole
/// address space, half of it, the server's own addresses, loopback and the
/// admin network are refused with 422 and the reason; the kernel's sets stay
/// as they were, and an ordinary block still works.
#[test]
fn blocks_that_would_lock_everyone_out_are_refused_and_change_nothing() {
    let ApiLab { lab, svc, .. } = api_lab(WEB);
    let set = |family: &str| stdout(&lab.srv.nft(&["list", "set", "inet", "phantomc", &format!("blocklist_{family}")]));
    let before = (set("v4"), set("v6"));
    for address in
        ["0.0.0.0/0", "::/0", "0.0.0.0/1", "198.51.100.1", "2001:db8:1::1", "127.0.0.1", "::1", "10.10.0.0/24"]
    {
        let (code, err) = svc.post("/api/v1/block", Some(TOKEN), &format!(r#"{{"address": "{address}"}}"#));
        assert_eq!(code, 422, "{address}: {err}");
        let reason = err["error"].as_str().expect("error");
        assert!(reason.starts_with("refused: ") && reason.len() > "refused: ".len() + 10, "{address}: {reason}");
    }
    assert_eq!((set("v4"), set("v6")), before, "nothing changed in the kernel");
    let (code, done) = svc.post("/api/v1/block", Some(TOKEN), r#"{"address": "203.0.113.9"}"#);
    assert_eq!(code, 200, "{done}");
    let after = set("v4");
    assert!(after.contains("203.0.113.9") && !after.contains("0.0.0.0"), "{after}");
}

/// `phantomc_kernel_reads_total{read="live"}` from a scrape.
fn live_reads(svc: &Service) -> u64 {
    let (code, text) = svc.get("/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("phantomc_kernel_reads_total{read=\"live\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no live read counter in {text}"))
}

/// Sends `paths` as GET requests on connections opened first, so they
/// arrive together; the status codes.
fn burst(ns: &Netns, port: u16, paths: Vec<&'static str>) -> Vec<String> {
    use std::io::{Read, Write};
    ns.run_in(move || {
        let mut conns: Vec<_> =
            paths.iter().map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
        for (c, path) in conns.iter_mut().zip(&paths) {
            let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            c.write_all(req.as_bytes()).expect("send");
        }
        conns
            .into_iter()
            .map(|mut c| {
                let mut answer = String::new();
                c.read_to_string(&mut answer).expect("answer");
                answer.lines().next().unwrap_or_default().to_string()
            })
            .collect()
    })
}

#[test]
fn concurrent_requests_share_one_kernel_read() {
    let ApiLab { lab, svc, dir: _dir } = api_lab(WEB);
    // Enough run-time entries that one read lasts while the others arrive.
    let entries: Vec<String> = (0..4000).map(|i| format!("10.{}.{}.1", 100 + i / 250, i % 250)).collect();
    let out =
        lab.srv.nft(&["add", "element", "inet", "phantomc", "blocklist_v4", &format!("{{ {} }}", entries.join(", "))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = live_reads(&svc);
    let requests = 8;
    let paths = (0..requests).map(|i| if i % 2 == 0 { "/api/v1/rules" } else { "/api/v1/threats" }).collect();
    for status in burst(&lab.srv, svc.port, paths) {
        assert!(status.contains(" 200 "), "{status}");
    }
    // The second scrape reads once itself.
    let reads = live_reads(&svc) - before - 1;
    assert!(reads >= 1 && reads <= requests / 2, "{requests} concurrent requests made {reads} kernel reads");
    // One at a time, each request reads afresh: nobody gets an answer older than its request.
    let before = live_reads(&svc);
    for _ in 0..3 {
        svc.get_json("/api/v1/rules");
    }
    assert_eq!(live_reads(&svc) - before - 1, 3, "sequential requests read each time");
}
