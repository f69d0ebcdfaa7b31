//! The API's writes beyond block/unblock, against `phantomc serve` in a
//! server namespace: accepting and rejecting adaptive mode's proposals,
//! and submitting a whole policy (`POST /api/v1/rules`) with
//! confirm-or-rollback. Every write needs the token and is refused
//! cross-origin; a refused write changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use phantomc::guard::Protected;
use phantomc::learn::{self, services::Service as Used, Detector, Finding};
use phantomc::watch::adaptive::proposals::{self, Kind, Store};
use serde_json::Value;

const TOKEN: &str = "writes-token-93ac";
const PORT: u16 = 9181;

struct Lab {
    lab: WebLab,
    svc: Service,
    dir: tempfile::TempDir,
}

impl Lab {
    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.pf")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.policy()).expect("policy")
    }

    /// The live table's rules, without handles and counters.
    fn ruleset(&self) -> String {
        let out = self.lab.srv.nft(&["list", "table", "inet", "phantomc"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        // Counters move with every packet; the rules are what matters.
        text.lines()
            .map(|l| match (l.find(" packets "), l.find(" bytes ")) {
                (Some(p), Some(b)) if p < b => {
                    let rest = &l[b + 7..];
                    format!("{}{}", &l[..p], rest.find(' ').map_or("", |i| &rest[i..]))
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn finding(source: &str) -> Finding {
    Finding {
        source: source.parse().unwrap(),
        detector: Detector::VerticalScan,
        threshold: "10 failed ports on one host >= 10 within 300s".into(),
        counts: "8 distinct ports of 198.51.100.1 failed".into(),
        first_seen_us: 1_796_000_000_000_000,
        last_seen_us: 1_796_000_008_000_000,
        examples: vec![format!("tcp {source}:40000 -> 198.51.100.1:1000 REJ")],
        confidence: 0.45,
        also: Vec::new(),
    }
}

/// Proposals as adaptive mode makes them: two sources it did not block and
/// a service it saw used.
fn propose(state: &Path, policy: &Path) -> Vec<proposals::Item> {
    let mut store = Store::empty(state);
    for src in ["203.0.113.50", "203.0.113.51"] {
        store.finding(&finding(src), "low-confidence", None, None, 1_796_000_010);
    }
    let used = Used {
        proto: 6,
        port: 8080,
        servers: ["198.51.100.1".parse().unwrap()].into(),
        clients: ["198.51.100.2".parse().unwrap()].into(),
        connections: 4,
    };
    store.services(vec![used], 1_796_000_010);
    store.refresh(policy, &learn::Config::default(), &Protected::default(), 1_796_000_010);
    proposals::pending(state).expect("proposals written")
}

fn lab() -> Lab {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.pf");
    std::fs::copy(WEB, &policy).expect("copy the policy");
    apply(&lab.srv, policy.to_str().expect("path"));
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let run_dir = format!("PHANTOMC_RUN_DIR={}", dir.path().join("run").display());
    let state_file = dir.path().join("no-watcher.json");
    let args = [
        policy.to_str().expect("path"),
        "--token-file",
        token.to_str().expect("path"),
        "--state-dir",
        dir.path().to_str().expect("path"),
        "--state-file",
        state_file.to_str().expect("path"),
    ];
    let svc = Service::start_wrapped(&lab.srv, PORT, &["env", &run_dir], &args);
    Lab { lab, svc, dir }
}

#[test]
fn proposals_accept_and_reject_need_the_token_and_a_fresh_hunk() {
    let t = lab();
    let state = t.dir.path().join("adaptive");
    let items = propose(&state, &t.policy());
    let id_of = |subject: &str| {
        items.iter().find(|i| i.subject == subject).unwrap_or_else(|| panic!("{subject}: {items:?}")).id.clone()
    };
    let (first, second, web) = (id_of("203.0.113.50"), id_of("203.0.113.51"), id_of("tcp/8080"));
    let listed = t.svc.get_json("/api/v1/proposals");
    let mut ids: Vec<&str> =
        listed["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![first.as_str(), second.as_str(), web.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{listed}");
    assert!(listed["items"][0]["diff"].as_str().is_some_and(|d| d.starts_with("--- a/")), "{listed}");

    let original = t.text();
    let accept = format!("/api/v1/proposals/{first}/accept");
    let reject = format!("/api/v1/proposals/{web}/reject");
    for path in [accept.as_str(), reject.as_str(), "/api/v1/rules", "/api/v1/rules/confirm"] {
        let (code, err) = t.svc.post(path, None, "{}");
        assert_eq!(code, 401, "{path} without a token: {err}");
        let (code, err) = t.svc.post(path, Some("wrong"), "{}");
        assert_eq!(code, 403, "{path} with a wrong token: {err}");
        // A form on another site: not JSON, another origin (and it could not add the token).
        let form = [("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")];
        let code = form_post(&t.svc, path, Some(TOKEN), &form);
        assert_eq!(code, 403, "{path}: a cross-origin form post");
        let code = json_post(&t.svc, path, Some(TOKEN), &[("Origin", "http://evil.example")]);
        assert_eq!(code, 403, "{path}: a cross-origin fetch");
        let code = json_post(&t.svc, path, Some(TOKEN), &[("Sec-Fetch-Site", "cross-site")]);
        assert_eq!(code, 403, "{path}: a cross-site fetch");
    }
    assert_eq!(t.text(), original, "no refused write changed the policy");
    assert!(!state.join(proposals::DECISIONS_FILE).exists(), "nor decided anything");

    // Accept: the hunk goes into the policy file, the old text is kept.
    let (code, done) = t.svc.post(&accept, Some(TOKEN), "{}");
    assert_eq!(code, 200, "{done}");
    let text = t.text();
    assert!(text.contains("    203.0.113.50 expires ") && text.contains("block in from <learned_block>"), "{text}");
    assert!(text.contains("#   vertical-scan: 10 failed ports"), "the evidence comes along: {text}");
    assert_eq!(std::fs::read_to_string(done["backup"].as_str().expect("backup")).expect("backup"), original);
    assert!(phantomc::ir::compile_file(&t.policy()).is_ok(), "the accepted policy compiles");
    let (code, again) = t.svc.post(&accept, Some(TOKEN), "{}");
    assert_eq!(code, 409, "accepted already: {again}");

    // The second source's proposal was made against the text before: stale.
    let (code, stale) = t.svc.post(&format!("/api/v1/proposals/{second}/accept"), Some(TOKEN), "{}");
    assert_eq!(code, 409, "{stale}");
    assert!(stale["error"].as_str().is_some_and(|e| e.contains("no longer applies")), "{stale}");
    assert_eq!(t.text(), text, "a stale proposal changes nothing");

    // Reject: remembered and no longer listed.
    let (code, done) = t.svc.post(&reject, Some(TOKEN), "{}");
    assert_eq!(code, 200, "{done}");
    assert_eq!(proposals::decisions(&state).expect("decisions")[&web].decision, "rejected");
    let listed = t.svc.get_json("/api/v1/proposals");
    let left: Vec<&str> = listed["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(left, [second.as_str()], "{listed}");
    let (code, _) = t.svc.post("/api/v1/proposals/000000000000/accept", Some(TOKEN), "{}");
    assert_eq!(code, 404);
    assert!(items.iter().all(|i| i.kind == Kind::Block || i.subject == "tcp/8080"));
}

/// A POST whose body is what an HTML form sends.
fn form_post(svc: &Service, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    headers.extend_from_slice(extra);
    svc.send("POST", path, &headers, Some(("application/x-www-form-urlencoded", "address=198.51.100.2"))).0
}

fn json_post(svc: &Service, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    headers.extend_from_slice(extra);
    svc.request("POST", path, &headers, Some("{}")).0
}

fn submit(t: &Lab, policy: &str, timeout: &str) -> (u16, Value) {
    let body = serde_json::json!({ "policy": policy, "confirm_timeout": timeout }).to_string();
    t.svc.post("/api/v1/rules", Some(TOKEN), &body)
}

#[test]
fn a_submitted_policy_is_checked_applied_and_kept_only_when_confirmed() {
    let t = lab();
    let _ssh = echo_server(&t.lab.srv, 22);
    let mut session = Conn::open(&t.lab.adm, "10.10.0.1", 22);
    assert!(session.round_trip(b"hello"), "the operator's session works");
    let original = t.text();
    let live = t.ruleset();

    // Does not compile: refused with diagnostics, nothing changed.
    let broken = original.replace("pass   in to port $web", "pass   in to prot $web");
    let (code, err) = submit(&t, &broken, "10s");
    assert_eq!(code, 422, "{err}");
    let d = &err["diagnostics"][0];
    assert_eq!((d["severity"].as_str(), d["line"].as_u64()), (Some("error"), Some(20)), "{err}");
    assert!(d["rendered"].as_str().is_some_and(|r| r.contains("prot")), "{err}");

    // Would cut the operator's session: refused by the lockout guard.
    let cut = original.replace(
        "pass   in state { established, related }\n",
        "block in from 10.10.0.0/24\npass   in state { established, related }\n",
    );
    let (code, err) = submit(&t, &cut, "10s");
    assert_eq!(code, 422, "{err}");
    assert!(err["error"].as_str().is_some_and(|e| e.contains("lockout guard")), "{err}");
    assert!(err["reasons"].to_string().contains("10.10.0.2"), "the session is named: {err}");
    // A failing test in the policy: refused.
    let failing = format!("{original}\ntest \"ssh from anywhere\" {{ expect pass in proto tcp from 198.51.100.2 to 198.51.100.1 port 22 state new }}\n");
    let (code, err) = submit(&t, &failing, "10s");
    assert_eq!(code, 422, "{err}");
    assert!(err["error"].as_str().is_some_and(|e| e.contains("1 of 1 tests failed")), "{err}");
    assert_eq!((t.text(), t.ruleset()), (original.clone(), live.clone()), "refusals change nothing");
    assert!(session.round_trip(b"still"), "the session survived");

    // A good one: loaded at once, written only when confirmed.
    let wider = original.replace("pass   in to port $web state new", "pass   in to port { $web, tcp 8443 } state new");
    let (code, done) = submit(&t, &wider, "30s");
    assert_eq!(code, 200, "{done}");
    assert!(t.ruleset().contains("8443"), "loaded: {}", t.ruleset());
    assert_eq!(t.text(), original, "not written before the confirmation");
    let (code, err) = submit(&t, &wider, "30s");
    assert_eq!(code, 409, "one waits already: {err}");
    let (code, ok) = t.svc.post("/api/v1/rules/confirm", Some(TOKEN), "{}");
    assert_eq!(code, 200, "{ok}");
    assert_eq!(t.text(), wider, "written once confirmed");
    assert!(t.ruleset().contains("8443"));

    // Not confirmed in time: the previous ruleset comes back, the file stays.
    let narrower = wider
        .replace("pass   in to port { $web, tcp 8443 } state new", "pass   in to port { $web, tcp 8444 } state new");
    let (code, done) = submit(&t, &narrower, "5s");
    assert_eq!(code, 200, "{done}");
    assert!(t.ruleset().contains("8444"));
    eventually_within(Duration::from_secs(15), "the unconfirmed policy is rolled back", || {
        let now = t.ruleset();
        now.contains("8443") && !now.contains("8444")
    });
    eventually_within(Duration::from_secs(5), "the API sees the outcome", || {
        t.svc.post("/api/v1/rules/confirm", Some(TOKEN), "{}").0 == 409
    });
    assert_eq!(t.text(), wider, "the file was never written");
    assert!(session.round_trip(b"done"), "the session survived");
}
