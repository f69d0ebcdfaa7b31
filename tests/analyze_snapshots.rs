//! Snapshots of the analyzer's reports (lint, explain, diff, test), and the
//! exit codes CI relies on.

use std::path::Path;
use std::process::Command;

use phantomc::analyze::{cases, diff, explain, lint, packet, report};
use phantomc::ir::{self, Compiled};

fn compile(path: &str) -> Compiled {
    ir::compile_file(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn phantomc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().expect("run phantomc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn lint_findings_text_and_github() {
    let (c, d) =
        lint::lint_file(Path::new("testdata/analyze/findings.pf"), &lint::Options::default()).expect("compiles");
    insta::assert_snapshot!("lint-findings.txt", report::render(&d, &c.sources, report::Format::Text, false));
    insta::assert_snapshot!("lint-findings.github", report::render(&d, &c.sources, report::Format::Github, false));
    let codes: Vec<&str> = d.iter().map(|x| x.code).collect();
    for code in [
        "shadowed",
        "redundant",
        "never-matches",
        "after-catch-all",
        "unused-define",
        "unused-set",
        "overlapping-entries",
    ] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
}

#[test]
fn explain_reports() {
    let web = compile("policies/webserver.pf");
    let router = compile("policies/router.pf");
    let cases = [
        (&web, "web-ssh-public", "tcp 203.0.113.5:51000 -> 198.51.100.1:22 in eth0 new"),
        (&web, "web-ping", "icmp 203.0.113.5 -> 198.51.100.1 in eth0 echo-request"),
        (&router, "router-bad-host", "tcp 192.168.50.20:40000 -> 198.51.100.3:443 in eth1 out eth0 new"),
    ];
    for (c, name, pkt) in cases {
        let e = explain::explain(&c.ruleset, &c.sources, &packet::parse(pkt).expect("packet"));
        insta::assert_snapshot!(format!("explain-{name}"), explain::render(&e));
    }
}

#[test]
fn diff_reports() {
    let d = diff::diff(&compile("policies/webserver.pf"), &compile("testdata/analyze/webserver-changed.pf"));
    insta::assert_snapshot!("diff-webserver", diff::render(&d));
    assert!(d.widens());
    let same = diff::diff(&compile("policies/router.pf"), &compile("policies/router.pf"));
    assert_eq!(diff::render(&same), "no packet changes verdict\n");
}

#[test]
fn test_table() {
    let c = compile("policies/webserver.pf");
    let suite = cases::load_pftest(Path::new("policies/webserver.pftest")).expect("pftest");
    let results = cases::run(&c, &suite.sources, &suite.cases);
    assert!(results.iter().all(|r| r.passed));
    insta::assert_snapshot!("test-webserver", cases::table(&results));
}

#[test]
fn exit_codes_for_ci() {
    assert_eq!(phantomc(&["lint", "policies/webserver.pf"]).0, 0);
    assert_eq!(phantomc(&["lint", "testdata/analyze/findings.pf"]).0, 1, "errors fail lint");
    for p in ["webserver", "bastion", "router", "feed-blocklist"] {
        let (code, out, err) = phantomc(&["test", &format!("policies/{p}.pf")]);
        assert_eq!(code, 0, "{p}: {out}{err}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
    let (code, out, _) =
        phantomc(&["diff", "policies/webserver.pf", "testdata/analyze/webserver-changed.pf", "--fail-on", "widen"]);
    assert_eq!(code, 5, "{out}");
    assert_eq!(phantomc(&["diff", "policies/webserver.pf", "testdata/analyze/webserver-changed.pf"]).0, 0);
    assert_eq!(
        phantomc(&["diff", "testdata/analyze/webserver-changed.pf", "policies/webserver.pf", "--fail-on", "widen"]).0,
        0,
        "only narrows"
    );
    let (code, _, err) = phantomc(&["explain", "policies/webserver.pf", "tcp 1.2.3.4 => 5.6.7.8:22"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected `->`"), "{err}");
}

#[test]
fn failing_test_points_at_the_expect_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("wrong.pftest");
    std::fs::write(&t, "test \"wrong\" {\n  expect pass tcp 203.0.113.5:51000 -> 198.51.100.1:22 in eth0 new\n}\n")
        .expect("write");
    let (code, out, err) = phantomc(&["test", "policies/webserver.pf", &t.display().to_string()]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL    wrong.pftest:2"), "{out}");
    assert!(err.contains("expected pass, got block") && err.contains("wrong.pftest:2:15"), "{err}");
}

#[test]
fn diff_against_a_git_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir.path()).args(args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    for f in ["router.pf", "router-hosts.pf"] {
        std::fs::copy(format!("policies/{f}"), dir.path().join(f)).expect("copy");
    }
    git(&["add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "base"]);
    // An edit in the included file widens the LAN's reach.
    let hosts = dir.path().join("router-hosts.pf");
    let text = std::fs::read_to_string(&hosts).expect("read").replace("203.0.113.66, 198.51.100.0/28", "203.0.113.66");
    std::fs::write(&hosts, text).expect("write");
    let policy = dir.path().join("router.pf").display().to_string();
    let (code, out, err) = phantomc(&["diff", "--git", "HEAD", &policy, "--fail-on", "widen"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.contains("to 198.51.100.0/28")
            && out.contains("block (HEAD:router.pf:24)")
            && out.contains("pass (router.pf:25)"),
        "{out}"
    );
    let (code, _, err) = phantomc(&["diff", "--git", "no-such-rev", &policy]);
    assert_eq!((code, err.contains("no-such-rev")), (2, true), "{err}");
}
