//! Policy tests: `test "name" { expect pass PACKET ... }` blocks, in the
//! policy itself or in `*.pftest` files (which hold only test blocks), run
//! against the policy with the exact evaluator.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::diag::{Diag, SourceMap};
use crate::ir::{self, Action, Compiled, TestCase};
use crate::policy::LoadError;

use super::explain::{self, Explanation};
use super::packet;

/// Test cases with the sources they were written in.
pub struct Suite {
    pub sources: SourceMap,
    pub cases: Vec<TestCase>,
}

/// Reads a `.pftest` file: test blocks only.
pub fn load_pftest(path: &Path) -> Result<Suite, LoadError> {
    let c = ir::compile_file(path)?;
    let stray: Vec<Diag> = c
        .ruleset
        .chains
        .iter()
        .flat_map(|ch| &ch.rules)
        .map(|r| r.origin.span)
        .chain(c.ruleset.nat.iter().map(|n| n.origin.span))
        .map(|span| {
            Diag::error("rule-in-pftest", span, "a .pftest file holds only `test` blocks", "rule here")
                .with_help("move the rule into the policy; tests run against the policy given on the command line")
        })
        .collect();
    if !stray.is_empty() {
        return Err(LoadError::Policy(crate::policy::PolicyError { sources: c.sources, diags: stray }));
    }
    Ok(Suite { sources: c.sources, cases: c.ruleset.tests })
}

/// The tests written in a policy itself.
pub fn inline(c: &Compiled) -> Vec<TestCase> {
    c.ruleset.tests.clone()
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    /// `file:line` of the `expect`.
    pub location: String,
    pub packet: String,
    pub expect: Action,
    /// How the policy decided the packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// Why the packet could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub passed: bool,
    #[serde(skip)]
    pub diag: Option<Diag>,
}

/// Runs every case of a suite against the policy.
pub fn run(policy: &Compiled, suite_sources: &SourceMap, cases: &[TestCase]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let location = suite_sources.origin(case.span);
            match packet::parse(&case.packet) {
                Ok(p) => {
                    let e = explain::explain(&policy.ruleset, &policy.sources, &p);
                    let passed = e.verdict == case.expect;
                    let diag = (!passed).then(|| {
                        Diag::error(
                            "test-failed",
                            case.span,
                            format!(
                                "test `{}` failed: expected {}, got {}",
                                case.name,
                                case.expect.keyword(),
                                e.verdict.keyword()
                            ),
                            format!("{} by {}", e.verdict.keyword(), e.decided_by.rule),
                        )
                        .with_help(format!("decided by {} `{}`", e.decided_by.rule, e.decided_by.text))
                    });
                    CaseResult {
                        name: case.name.clone(),
                        location,
                        packet: case.packet.clone(),
                        expect: case.expect,
                        explanation: Some(e),
                        error: None,
                        passed,
                        diag,
                    }
                }
                Err(err) => {
                    let start = case.span.start + err.offset;
                    let span =
                        crate::diag::Span::new(case.span.file, start, (start + err.len).min(case.span.end.max(start)));
                    let diag =
                        Diag::error("bad-packet", span, format!("test `{}`: {}", case.name, err.message), "here")
                            .with_help(err.help);
                    CaseResult {
                        name: case.name.clone(),
                        location,
                        packet: case.packet.clone(),
                        expect: case.expect,
                        explanation: None,
                        error: Some(err.message),
                        passed: false,
                        diag: Some(diag),
                    }
                }
            }
        })
        .collect()
}

/// The pass/fail table.
pub fn table(results: &[CaseResult]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            let got = match &r.explanation {
                Some(e) => format!("{} ({})", e.verdict.keyword(), e.decided_by.rule),
                None => "bad packet".into(),
            };
            [
                if r.passed { "ok" } else { "FAIL" }.into(),
                r.location.clone(),
                r.name.clone(),
                format!("{} -> {got}", r.expect.keyword()),
                r.packet.clone(),
            ]
        })
        .collect();
    let header = ["result", "where", "test", "expect -> got", "packet"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let _ = writeln!(out, "{} tests: {} passed, {} failed", results.len(), results.len() - failed, failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_inline_tests_and_reports_failures_at_the_expect() {
        let text = "pass in proto tcp to port 22\ntest \"ssh\" {\n  expect pass tcp 192.0.2.1 -> 192.0.2.2:22\n  expect pass tcp 192.0.2.1 -> 192.0.2.2:23\n  expect block tcp 192.0.2.1 -> 192.0.2.2\n}\n";
        let c = ir::compile("t.pf", text).expect("compiles");
        let results = run(&c, &c.sources, &inline(&c));
        let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, vec![true, false, false]);
        assert_eq!(results[1].location, "t.pf:4");
        assert_eq!(results[1].diag.as_ref().map(|d| d.code), Some("test-failed"));
        assert_eq!(results[2].diag.as_ref().map(|d| d.code), Some("bad-packet"));
        assert!(table(&results).ends_with("3 tests: 1 passed, 2 failed\n"));
    }
}
