//! Snapshots of the compiler's output for every example policy, and of the
//! diagnostics for a corpus of broken policies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use phantomc::diag::render_plain;
use phantomc::ir;
use phantomc::policy::LoadError;

const EXAMPLES: &[&str] = &["webserver", "bastion", "router", "feed-blocklist"];

fn phantomc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().expect("run phantomc")
}

#[test]
fn example_policies_compile_to_stable_nft_and_json() {
    for name in EXAMPLES {
        let path = format!("policies/{name}.pf");
        for format in ["nft", "json"] {
            let out = phantomc(&["compile", "--format", format, &path]);
            assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).expect("utf-8 output");
            insta::assert_snapshot!(format!("{name}.{format}"), text);
            // Deterministic: a second run prints the same bytes.
            let again = phantomc(&["compile", "--format", format, &path]);
            assert!(text.as_bytes() == again.stdout.as_slice(), "{path} {format} is not deterministic");
        }
    }
}

/// Flowtables and `offload`, apart from constructs.pf: the kernel of the
/// analyzer-vs-kernel test has no flowtable support, so this policy is
/// compiled, never loaded, here.
#[test]
fn flowtables_compile_to_stable_nft_and_json() {
    let path = "testdata/language/flowtable.pf";
    for format in ["nft", "json", "ir"] {
        let out = phantomc(&["compile", "--format", format, path]);
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        insta::assert_snapshot!(format!("flowtable.{format}"), String::from_utf8(out.stdout).expect("utf-8"));
    }
}

/// The language constructs of docs/language.md (exclusions, expiry, ...) in one policy.
#[test]
fn language_constructs_compile_to_stable_nft_and_json() {
    let path = "testdata/language/constructs.pf";
    for format in ["nft", "json", "ir"] {
        // A fixed today: a dated set entry times out at the end of its day, counted from now.
        let out = Command::new(env!("CARGO_BIN_EXE_phantomc"))
            .args(["compile", "--format", format, path])
            .env("PHANTOMC_TODAY", "2026-12-01")
            .output()
            .expect("run phantomc");
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        insta::assert_snapshot!(format!("constructs.{format}"), String::from_utf8(out.stdout).expect("utf-8"));
        // The expired rule and entry are named on stderr, and left out.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rule constructs.pf:26 expired on 2020-01-01 and is left out"), "{err}");
        assert!(err.contains("entry 198.51.100.7 expired on 2020-01-01 and is left out"), "{err}");
    }
}

#[test]
fn lint_expired_lists_what_expired_and_warns_ahead() {
    let path = "testdata/language/constructs.pf";
    let out = phantomc(&["lint", "--expired", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expired entries fail `lint --expired`: {err}");
    assert_eq!(err.matches("expired on 2020-01-01").count(), 2, "{err}");
    // 14 days before 2099-12-31 the dated entry and rule are announced; 15 days before they are not.
    let at = |today: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_phantomc"))
            .args(args)
            .env("PHANTOMC_TODAY", today)
            .output()
            .expect("run phantomc");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let soon = at("2099-12-17", &["lint", path]);
    assert!(soon.contains("entry 198.51.100.8 expires on 2099-12-31 (14 days left)"), "{soon}");
    assert!(soon.contains("rule constructs.pf:27 expires on 2099-12-31 (14 days left)"), "{soon}");
    assert!(!at("2099-12-16", &["lint", path]).contains("expires-soon"));
    assert!(at("2099-12-01", &["lint", "--expires-within", "30", path]).contains("(30 days left)"));
    // After its day the rule is gone from the compiled ruleset.
    let after = Command::new(env!("CARGO_BIN_EXE_phantomc"))
        .args(["compile", path])
        .env("PHANTOMC_TODAY", "2100-01-01")
        .output()
        .expect("run phantomc");
    let nft = String::from_utf8_lossy(&after.stdout);
    assert!(!nft.contains("8080") && !nft.contains("198.51.100.8"), "{nft}");
}

#[test]
fn every_compiled_rule_names_its_policy_line() {
    for name in EXAMPLES {
        let out = phantomc(&["compile", &format!("policies/{name}.pf")]);
        let text = String::from_utf8_lossy(&out.stdout);
        let rules: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && !l.starts_with('#') && !l.starts_with("type ") && !l.contains('{') && l != &"}"
            })
            .filter(|l| {
                !l.starts_with("table ")
                    && !l.starts_with("delete ")
                    && !l.starts_with("flags ")
                    && !l.starts_with("timeout ")
            })
            .collect();
        assert!(!rules.is_empty());
        for rule in rules {
            assert!(
                rule.contains(&format!("comment \"{name}.pf:")) || rule.contains("comment \"router-hosts.pf:"),
                "{rule}"
            );
        }
    }
}

fn broken_policies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("testdata/errors")
        .expect("testdata/errors")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.as_bytes()[0].is_ascii_digit()))
        .collect();
    files.sort();
    files
}

fn diagnostics(path: &Path) -> (String, Vec<&'static str>) {
    match ir::compile_file(path) {
        Ok(_) => panic!("{} compiled, but it is in the broken corpus", path.display()),
        Err(LoadError::Policy(e)) => (render_plain(&e.diags, &e.sources), e.diags.iter().map(|d| d.code).collect()),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn broken_policies_get_located_diagnostics() {
    let mut codes = BTreeSet::new();
    let files = broken_policies();
    assert!(files.len() >= 25, "only {} broken policies", files.len());
    for path in &files {
        let (text, file_codes) = diagnostics(path);
        // Every report names a file:line:col.
        assert!(text.contains(".pf:"), "{}: no location in\n{text}", path.display());
        codes.extend(file_codes);
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("file stem").to_string();
        insta::assert_snapshot!(format!("error-{stem}"), text);
    }
    assert!(codes.len() >= 25, "only {} distinct error codes: {codes:?}", codes.len());
}

#[test]
fn policy_errors_exit_1_and_missing_files_exit_2() {
    let out = phantomc(&["compile", "testdata/errors/02-unknown-define.pf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("02-unknown-define.pf:1:24"));
    let out = phantomc(&["compile", "testdata/errors/no-such-file.pf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read testdata/errors/no-such-file.pf"));
    let out = phantomc(&["compile"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
