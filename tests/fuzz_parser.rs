//! Bounded fuzzing of the policy front end: no input may panic the parser,
//! the lowering or the emitters. Runs a fixed number of cases in CI.

mod common;

use phantomc::{ir, nft};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::tokens::POLICY_TOKENS as TOKENS;

fn examples() -> Vec<String> {
    ["webserver", "bastion", "router"]
        .iter()
        .map(|n| std::fs::read_to_string(format!("policies/{n}.pf")).expect("example policy"))
        .collect()
}

fn check(text: &str) {
    // Ok or a diagnostic, never a panic; whatever compiles must also emit.
    if let Ok(c) = ir::compile("fuzz.pf", text) {
        let table = nft::build(&c.ruleset, &nft::Elements::default());
        assert!(nft::script::script(&table, "").contains("table inet"));
        let json = nft::to_json(&table.replace_batch());
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok_and(|v| v.is_object()), "{json}");
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[test]
fn arbitrary_text_never_panics() {
    runner(3000)
        .run(&any::<String>(), |s| {
            check(&s);
            Ok(())
        })
        .expect("no panic on arbitrary text");
}

#[test]
fn keyword_soup_never_panics() {
    let soup = proptest::collection::vec(proptest::sample::select(TOKENS), 0..40).prop_map(|t| t.join(" "));
    runner(5000)
        .run(&soup, |s| {
            check(&s);
            Ok(())
        })
        .expect("no panic on keyword soup");
}

#[test]
fn mutated_examples_never_panic() {
    let bases = examples();
    let n = bases.len();
    let strategy = (0..n, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8));
    runner(3000)
        .run(&strategy, |(which, edits)| {
            let mut bytes = bases[which].clone().into_bytes();
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => {
                        bytes.remove(i);
                    }
                    1 => bytes.insert(i, byte),
                    _ => bytes[i] = byte,
                }
            }
            check(&String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .expect("no panic on mutated examples");
}
