//! The hand-written policy parser (`src/policy/descent.rs`) against the pest
//! grammar it mirrors: on every policy in the repository, the generated bench
//! policies, the docs' examples, generated valid policies and keyword soup,
//! pest's AST (spans included) and the hand-written parser's must be the same,
//! and the hand-written one must leave to pest everything pest rejects.

mod common;

use std::path::{Path, PathBuf};

use phantomc::policy::parse_with_both;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The two parsers agree on `text`: the same statements where pest reads it,
/// nothing from the hand-written one where pest reports an error.
fn assert_parity(what: &str, text: &str) {
    match parse_with_both(text) {
        (Ok(pest), Some(descent)) => {
            assert!(
                pest == descent,
                "{what}: the parsers differ\npest: {pest:#?}\ndescent: {descent:#?}\n--- text ---\n{text}"
            )
        }
        (Ok(_), None) => panic!("{what}: the hand-written parser left valid text to pest\n--- text ---\n{text}"),
        (Err(d), Some(_)) => {
            panic!("{what}: the hand-written parser accepted text pest rejects ({d:?})\n--- text ---\n{text}")
        }
        (Err(_), None) => {}
    }
}

fn policy_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            policy_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "pf") {
            out.push(path);
        }
    }
}

#[test]
fn every_policy_file_parses_the_same() {
    let mut files = Vec::new();
    for dir in ["policies", "testdata", "tests"] {
        policy_files(Path::new(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} policy files", files.len());
    let mut valid = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read policy");
        assert_parity(&file.display().to_string(), &text);
        valid += usize::from(parse_with_both(&text).0.is_ok());
    }
    assert!(valid > 40, "only {valid} of the policy files are valid");
}

#[test]
fn the_bench_policies_parse_the_same() {
    // benches/lib.sh's generator, as benches/compile_apply.sh uses it.
    let out = std::process::Command::new("bash")
        .args(["-c", ". benches/lib.sh; bench_interleaved 2000"])
        .output()
        .expect("run bench_interleaved");
    assert!(out.status.success());
    let body = String::from_utf8(out.stdout).expect("utf-8");
    let text = format!(
        "table phantomc\nset blocklist dynamic\npolicy input block\npass in on lo\npass in state {{ established, related }}\n{body}"
    );
    assert_eq!(text.lines().count(), 2005);
    assert!(parse_with_both(&text).0.is_ok());
    assert_parity("bench_interleaved 2000", &text);
}

#[test]
fn the_docs_examples_parse_the_same() {
    let mut blocks = 0;
    for page in ["docs/language.md", "README.md"] {
        let text = std::fs::read_to_string(page).expect("read docs");
        // Fenced blocks: every other piece between fences, less the fence's info line.
        for block in text.split("```").skip(1).step_by(2).filter_map(|b| b.split_once('\n').map(|(_, body)| body)) {
            assert_parity(page, block);
            blocks += usize::from(parse_with_both(block).0.is_ok());
        }
    }
    assert!(blocks > 5, "only {blocks} policy examples in the docs");
}

// ---- generated policies ----

fn pick(words: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::sample::select(words).prop_map(str::to_string).boxed()
}

/// Whitespace and comments, as anyone may write them between tokens.
const GAPS: &[&str] = &[" ", " ", " ", "  ", "\n", "\t", " # note\n", "\n\n  ", "\r\n", "#x\n"];

/// `parts` joined by generated gaps.
fn spaced(parts: Vec<String>) -> BoxedStrategy<String> {
    let n = parts.len();
    proptest::collection::vec(proptest::sample::select(GAPS), n)
        .prop_map(move |gaps| {
            let mut out = String::new();
            for (part, gap) in parts.iter().zip(gaps) {
                if !out.is_empty() {
                    out.push_str(gap);
                }
                out.push_str(part);
            }
            out
        })
        .boxed()
}

fn seq(parts: Vec<BoxedStrategy<String>>) -> BoxedStrategy<String> {
    parts.prop_flat_map(spaced).boxed()
}

fn optional(part: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![Just(String::new()), part].boxed()
}

fn lit(s: &'static str) -> BoxedStrategy<String> {
    Just(s.to_string()).boxed()
}

/// Literals the grammar reads but the parser's checks refuse (host bits,
/// out of range, no such day): the pest path must report them.
const BAD_LITERALS: &[&str] = &[
    "10.0.0.1/8",
    "10.0.0.0/33",
    "300.1.1.1",
    "abc:",
    "1:2:3",
    "99999999999999999999",
    "5-99999999999",
    "udp 1-99999999999",
    "2001:db8::1/64",
];

fn item() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u8..=255, 0u8..=255, 0u8..4, prop::option::of(prop_oneof![Just(8u8), Just(16), Just(24), Just(32)]))
            .prop_map(|(a, b, c, len)| match len {
                Some(l) if l < 32 => format!("{}.0.0.0/{l}", a),
                Some(l) => format!("{a}.{b}.{c}.0/{l}"),
                None => format!("{a}.{b}.{c}.1"),
            }),
        2 => pick(&["2001:db8::/32", "::1", "fd00:1:2::/48", "fe80::1", "2001:db8::/64", "::/0"]),
        3 => (0u32..70_000).prop_map(|n| n.to_string()),
        1 => pick(&["1-1024", "1000-2000", "0-65535"]),
        3 => pick(&[
            "eth0", "lo", "wg-0", "x_y", "include", "portal", "anyhost", "tcp", "udp", "icmp", "new", "established",
            "echo-request", "eth*", "a.b",
        ]),
        1 => pick(&["$a", "$ports", "<blocklist>", "<a>"]),
        2 => pick(&["tcp 80", "udp 1000-2000", "tcp $p", "sctp 9", "tcp\n22"]),
        1 => prop::bool::weighted(0.1).prop_flat_map(|bad| if bad { pick(BAD_LITERALS) } else { pick(&["10.1.2.3"]) }),
    ]
    .boxed()
}

fn entry() -> BoxedStrategy<String> {
    (
        prop::bool::weighted(0.2),
        item(),
        prop_oneof![
            6 => Just(String::new()),
            1 => Just(" expires 2026-12-31".to_string()),
            1 => Just(" timeout 1h".to_string()),
            1 => Just(" expires 2027-02-28 timeout 30s".to_string()),
            1 => Just(" timeout 5m expires 2030-01-01".to_string()),
        ],
    )
        .prop_map(|(neg, item, tail)| format!("{}{item}{tail}", if neg { "!" } else { "" }))
        .boxed()
}

fn value() -> BoxedStrategy<String> {
    prop_oneof![
        2 => item(),
        1 => (proptest::collection::vec(entry(), 0..5), prop::bool::ANY, proptest::sample::select(GAPS)).prop_map(
            |(entries, trailing, gap)| {
                let sep = format!(",{gap}");
                format!("{{{gap}{}{}{gap}}}", entries.join(&sep), if trailing && !entries.is_empty() { "," } else { "" })
            }
        ),
    ]
    .boxed()
}

fn host_clause(keyword: &'static str) -> BoxedStrategy<String> {
    seq(vec![
        lit(keyword),
        prop_oneof![
            Just(String::new()),
            Just("any".to_string()),
            value(),
            value().prop_map(|v| format!("!{v}")),
            (value(), value()).prop_map(|(a, b)| format!("{a} except {b}")),
        ]
        .boxed(),
        optional(
            prop_oneof![value().prop_map(|v| format!("port {v}")), value().prop_map(|v| format!("port !{v}"))].boxed(),
        ),
    ])
}

fn rate() -> BoxedStrategy<String> {
    (1u32..1000, pick(&["second", "minute", "hour", "day"])).prop_map(|(n, u)| format!("{n}/{u}")).boxed()
}

fn log_clause() -> BoxedStrategy<String> {
    seq(vec![
        lit("log"),
        optional(pick(&["\"ssh \"", "\"x\""])),
        proptest::collection::vec(
            prop_oneof![
                seq(vec![lit("limit"), rate(), optional(pick(&["burst 5", "burst 1"]))]),
                pick(&["group 2", "group 0"]),
            ],
            0..3,
        )
        .prop_flat_map(spaced)
        .boxed(),
    ])
}

fn rule_opt() -> BoxedStrategy<String> {
    prop_oneof![
        host_clause("from"),
        host_clause("to"),
        seq(vec![
            pick(&["proto", "state", "on", "in on", "out on", "icmp-type", "on !", "in on !", "out on!"]),
            value()
        ]),
        log_clause(),
        pick(&[
            "counter",
            "nocounter",
            "counter \"web\"",
            "ipv4",
            "ipv6",
            "quota 10 mbytes",
            "quota 5 bytes",
            "label \"x y\"",
            "expires 2026-12-31",
            "with tcp reset",
            "with icmp port-unreachable",
            "with icmpv6 admin-prohibited",
            "with icmpx no-route",
            "early",
            "notrack",
            "mark 0x10",
            "mark 7",
            "set mark 0xff",
            "ct mark 3",
            "ct mark 0x1f",
            "set ct mark 5",
            "set ct mark from mark",
            "set mark from ct mark",
            "set mark from mark",
            "set ct mark from ct mark",
            "ct markx",
            "set ct  mark\n from  ct mark",
            "offload",
            "offload fast",
            "offload  # c\n fast",
            "offloadx",
            "set mark 99999999999999999999999",
            "expires 2026-02-30",
        ]),
        seq(vec![lit("limit"), rate(), optional(lit("per-source")), optional(pick(&["burst 10", "burst 1"]))]),
    ]
    .boxed()
}

fn statement() -> BoxedStrategy<String> {
    let opts = || proptest::collection::vec(rule_opt(), 0..6).prop_flat_map(spaced).boxed();
    prop_oneof![
        6 => seq(vec![pick(&["pass", "block", "reject"]), pick(&["in", "out", "forward"]), opts()]),
        1 => seq(vec![
            pick(&["masquerade", "snat", "dnat"]),
            pick(&["in", "out", "forward"]),
            opts(),
            optional(seq(vec![lit("->"), value(), optional(seq(vec![lit("port"), value()]))])),
        ]),
        1 => seq(vec![lit("match"), pick(&["in", "out"]), opts()]),
        1 => seq(vec![lit("define"), pick(&["a", "ports", "lan"]), lit("="), value()]),
        1 => seq(vec![lit("set"), pick(&["a", "blocklist"]), prop_oneof![
            value().prop_map(|v| format!("= {v}")),
            pick(&["dynamic", "dynamic timeout 1h", "dynamic timeout 1d"]),
        ].boxed()]),
        1 => pick(&[
            "table phantomc", "include \"other.pf\"", "allow-always { 10.0.0.0/8, 192.0.2.1 }",
            "feed spamhaus { source \"https://x/y\"; format plain; refresh 1h; max-entries 1000 }",
            "provider otx { key-env OTX_KEY; min-confidence 50; }",
            "adaptive { mode block; set blocklist; timeout 1h; max-blocks 100; }",
            "adaptive { mode observe }",
            "flowtable fast { devices { eth0, eth1 } }",
            "flowtable f { devices eth0; }",
            "flowtable f{devices{eth0}}",
            "flowtable { devices eth0 }",
            "test \"ssh\" { expect pass tcp 10.0.0.1:1234 -> 10.0.0.2:22\n expect block udp 1.2.3.4:5 -> 6.7.8.9:53 }",
        ]),
        1 => seq(vec![
            lit("policy"),
            pick(&["input", "forward", "output"]),
            pick(&["pass", "block", "reject"]),
            optional(log_clause()),
            optional(pick(&["counter", "nocounter"])),
            optional(pick(&["priority -10", "priority 5", "priority -99999999999999999999"])),
        ]),
    ]
    .boxed()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[test]
fn generated_policies_parse_the_same() {
    let policies = proptest::collection::vec(statement(), 1..12).prop_flat_map(spaced);
    let valid = std::cell::Cell::new(0);
    runner(1000)
        .run(&policies, |text| {
            assert_parity("generated policy", &text);
            valid.set(valid.get() + usize::from(parse_with_both(&text).0.is_ok()));
            Ok(())
        })
        .expect("parity on generated policies");
    // Most are valid (the rest hold a bad literal on purpose).
    assert!(valid.get() > 500, "only {} of 1000 generated policies are valid", valid.get());
}

#[test]
fn keyword_soup_parses_the_same() {
    use common::tokens::POLICY_TOKENS as TOKENS;
    let soup = proptest::collection::vec(proptest::sample::select(TOKENS), 0..30).prop_flat_map(|t| {
        let n = t.len();
        proptest::collection::vec(prop_oneof![Just(" "), Just(""), Just("\n")], n)
            .prop_map(move |gaps| t.iter().zip(gaps).map(|(tok, gap)| format!("{tok}{gap}")).collect::<String>())
    });
    runner(3000)
        .run(&soup, |text| {
            assert_parity("keyword soup", &text);
            Ok(())
        })
        .expect("parity on keyword soup");
}

#[test]
fn arbitrary_text_parses_the_same() {
    runner(2000)
        .run(&any::<String>(), |text| {
            assert_parity("arbitrary text", &text);
            Ok(())
        })
        .expect("parity on arbitrary text");
}
