//! The rule optimizer changes no decision: on the example policies and on
//! generated ones, the optimized and the unoptimized IR give every packet
//! the same verdict from the same policy line (the line whose counter
//! counts it), and the analyzer's `diff` between the two is empty.

use std::net::IpAddr;

use phantomc::analyze::diff;
use phantomc::ir::eval::{decide, Packet, SetContents};
use phantomc::ir::optimize::optimize;
use phantomc::ir::{self, names, Compiled, Hook, Ruleset};
use proptest::prelude::*;

const ADDRS: [&str; 8] =
    ["10.0.0.0", "10.0.0.1", "10.0.0.3", "10.0.1.7", "192.0.2.9", "2001:db8::1", "2001:db8::2", "2001:db8:1::5"];
const PORTS: [u16; 7] = [22, 53, 80, 81, 443, 1000, 8080];
const IFACES: [&str; 4] = ["eth0", "eth1", "lo", "wg0"];

/// The policy line that decided `p`: for a merged rule, the part holding
/// the packet's value. Only a line that counts or logs can be told apart
/// from another one with the same verdict (the optimizer may move a quiet
/// line past a quiet one with the same verdict), so a quiet line is `None`.
fn deciding_line(rs: &Ruleset, p: &Packet, sets: &SetContents) -> (ir::Action, Option<String>, bool) {
    let d = decide(rs, p, sets);
    let seen = |r: &ir::Rule| r.counter || r.log.is_some() || r.counter_name.is_some();
    let line = d
        .rule
        .map(|i| {
            let rule = &rs.chain(p.hook).rules[i];
            match &rule.merged {
                Some(m) => &m.part_for(p).expect("a merged rule matches only its parts' values").rule,
                None => rule,
            }
        })
        .filter(|r| seen(r))
        .map(|r| r.origin.id.clone());
    (d.verdict, line, d.rate_limited)
}

fn packets() -> Vec<Packet> {
    let mut out = Vec::new();
    for hook in [Hook::Input, Hook::Forward, Hook::Output] {
        for (i, src) in ADDRS.iter().enumerate() {
            for dst in ADDRS.iter().skip(i % 3).step_by(3) {
                let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
                if src.is_ipv4() != dst.is_ipv4() {
                    continue;
                }
                for (j, &port) in PORTS.iter().enumerate() {
                    for proto in [names::TCP, names::UDP] {
                        for state in ["new", "established"] {
                            out.push(Packet {
                                hook,
                                iif: (hook != Hook::Output).then(|| IFACES[(i + j) % 4].to_string()),
                                oif: (hook != Hook::Input).then(|| IFACES[(i + j + 1) % 4].to_string()),
                                src,
                                dst,
                                proto,
                                sport: Some(PORTS[(j + 3) % PORTS.len()]),
                                dport: Some(port),
                                icmp_type: None,
                                ct_state: names::ct_state_bit(state).unwrap(),
                                mark: 0,
                                ct_mark: ((i + j) % 3) as u32,
                                urpf_failed: (i + j) % 4 == 1,
                                dst_local: (i + j) % 3 == 2,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

fn assert_equivalent(c: &Compiled) -> usize {
    let opt = optimize(&c.ruleset);
    let sets = SetContents::new();
    for p in packets() {
        assert_eq!(deciding_line(&c.ruleset, &p, &sets), deciding_line(&opt, &p, &sets), "packet {p:?}");
    }
    let optimized = Compiled { sources: Default::default(), ruleset: opt.clone(), unused: Vec::new() };
    let d = diff::diff(c, &optimized);
    assert!(d.regions.is_empty(), "diff between unoptimized and optimized:\n{}", diff::render(&d));
    opt.chains.iter().flat_map(|ch| &ch.rules).filter(|r| r.merged.is_some()).count()
}

#[test]
fn example_policies_decide_alike_optimized() {
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pf") {
            assert_equivalent(&ir::compile_file(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display())));
        }
    }
}

#[test]
fn runs_of_blocks_ports_and_interfaces_merge_and_decide_alike() {
    let text = "table t\npolicy input block\npass in on lo\nblock in from 10.0.0.1\nblock in from 10.0.0.3\nblock in from 10.0.1.0/24\nblock in from 2001:db8::1\nblock in from 2001:db8::2\npass in proto tcp to port 22\npass in proto tcp to port 80-81\npass in proto tcp to port 443\npass in on eth0 proto udp to port 53\npass in on eth1 proto udp to port 53\nblock in from 10.0.0.0/30 log\nblock in from 10.0.0.0/30\nblock in from 10.0.0.1\npass in proto udp to port 1000 limit 10/second\npass in proto udp to port 8080 limit 10/second\n";
    let c = ir::compile("t.pf", text).unwrap();
    assert_eq!(assert_equivalent(&c), 5, "v4 blocks, v6 blocks, tcp ports, interfaces, limited udp ports");
    // The logged and the overlapping rules stay as they were; the two
    // rate-limited ones keep their own rules behind a verdict map.
    let opt = optimize(&c.ruleset);
    let input = &opt.chain(Hook::Input).rules;
    assert_eq!(input.len(), 9, "{input:#?}");
    assert!(input[5..8].iter().all(|r| r.merged.is_none()), "{:#?}", &input[5..]);
    let map = input[8].merged.as_ref().unwrap();
    assert!(map.dispatch && input[1..5].iter().all(|r| !r.merged.as_ref().unwrap().dispatch));
    let limits: Vec<_> =
        map.parts.iter().map(|p| (p.origin.id.as_str(), p.rule.limit.as_ref().map(|l| l.rate))).collect();
    assert_eq!(limits, [("t.pf:17", Some(10)), ("t.pf:18", Some(10))]);
    assert!(input[8].limit.is_none() && !input[8].counter, "the map rule itself only dispatches");
    let m = input[1].merged.as_ref().unwrap();
    let ids: Vec<&str> = m.parts.iter().map(|p| p.origin.id.as_str()).collect();
    assert_eq!(ids, ["t.pf:4", "t.pf:5", "t.pf:6"]);
}

/// A negated interface is no value to merge on: `on !eth0` never joins the
/// set of `on eth0` and `on eth1`; rules that share one negation merge on
/// another field and keep it (`iifname != "eth0"` before the set lookup).
#[test]
fn negated_interfaces_never_merge_with_plain_ones() {
    let text = "table t\npolicy input block\npass in on eth0 proto udp to port 53\npass in on !eth0 proto udp to port 53\npass in on eth1 proto udp to port 53\nblock in on !eth0 proto tcp to port 22\nblock in on !eth0 proto tcp to port 80\n";
    let c = ir::compile("t.pf", text).unwrap();
    assert_eq!(assert_equivalent(&c), 1, "only the two tcp blocks merge");
    let opt = optimize(&c.ruleset);
    let input = &opt.chain(Hook::Input).rules;
    let merged: Vec<&ir::Rule> = input.iter().filter(|r| r.merged.is_some()).collect();
    let iif = merged[0].matches.iif.as_ref().expect("the negation stays");
    assert!(iif.negated && iif.names == ["eth0"], "{iif:?}");
    assert_eq!(merged[0].merged.as_ref().unwrap().describe_fields(), "destination port");
    // The three udp lines stay three rules, in their order.
    let udp: Vec<&str> =
        input.iter().filter(|r| r.matches.proto == Some(names::UDP)).map(|r| r.origin.id.as_str()).collect();
    assert_eq!(udp, ["t.pf:3", "t.pf:4", "t.pf:5"]);
    let script = phantomc::nft::script_for(&c, &phantomc::nft::emit::build(&c.ruleset, &Default::default()));
    assert!(script.contains("iifname != \"eth0\" tcp dport @"), "{script}");
}

/// Connection marks: rules that match different ct marks are disjoint (the
/// optimizer may move one past another), a rule that sets one has a side
/// effect (it never moves or merges); constructs.pf has every mark construct.
#[test]
fn connection_mark_rules_decide_alike_optimized() {
    let text = "table t\npolicy input block\nmatch in on eth0 set ct mark from mark\npass in proto tcp to port 22 ct mark 1 nocounter\nblock in proto udp ct mark 2 nocounter\npass in proto tcp to port 80 ct mark 2 set ct mark 1 nocounter\npass in proto tcp to port 443 ct mark 1 nocounter\npass in proto tcp to port 81 nocounter\npass in proto tcp to port 53 ct mark 1 nocounter\n";
    let c = ir::compile("t.pf", text).unwrap();
    assert_eq!(assert_equivalent(&c), 1, "22 and 53 with ct mark 1 merge; the setting rule stays");
    let opt = optimize(&c.ruleset);
    // Nothing moves past the line that sets a ct mark, either way.
    let rules = &opt.chain(Hook::Input).rules;
    let setter = rules.iter().position(|r| !r.set_marks.is_empty()).unwrap();
    let line = |r: &ir::Rule| r.origin.id.trim_start_matches("t.pf:").parse::<usize>().unwrap();
    assert!(
        rules[..setter].iter().all(|r| line(r) < 6) && rules[setter + 1..].iter().all(|r| line(r) > 6),
        "{rules:#?}"
    );
    assert_equivalent(&ir::compile_file(std::path::Path::new("testdata/language/constructs.pf")).unwrap());
}

/// `from urpf-failed` is part of a rule's match: reverse-path rules merge
/// only with each other (the nft rule keeps the fib test before the set
/// lookup), never with the same line without it, and the diff is empty.
#[test]
fn reverse_path_rules_merge_only_with_each_other() {
    let text = "table t\npolicy input block\nblock in from urpf-failed proto tcp to port 22\nblock in proto tcp to port 23\nblock in from urpf-failed proto tcp to port 80\npass in proto tcp to port { 22, 80 }\nblock in from urpf-failed proto tcp to port 443\n";
    let c = ir::compile("t.pf", text).unwrap();
    assert_eq!(assert_equivalent(&c), 1, "22, 80 and 443 with urpf-failed merge");
    let opt = optimize(&c.ruleset);
    let input = &opt.chain(Hook::Input).rules;
    let merged: Vec<&ir::Rule> = input.iter().filter(|r| r.merged.is_some()).collect();
    assert!(merged[0].matches.urpf_failed, "{merged:#?}");
    let ids: Vec<&str> = merged[0].merged.as_ref().unwrap().parts.iter().map(|p| p.origin.id.as_str()).collect();
    // 443 moves up past the pass of 22 and 80 (no packet matches both), 80 past port 23.
    assert_eq!(ids, ["t.pf:3", "t.pf:5", "t.pf:7"]);
    let plain = input.iter().find(|r| r.origin.id == "t.pf:4").unwrap();
    assert!(!plain.matches.urpf_failed && plain.merged.is_none(), "{plain:#?}");
    let script = phantomc::nft::script_for(&c, &phantomc::nft::emit::build(&opt, &Default::default()));
    assert!(script.contains("fib saddr . mark . iif oif missing tcp dport @"), "{script}");
}

/// `to self` is part of a rule's match like `from urpf-failed`: rules with
/// it merge only with each other, `to !self` ones apart, and the diff of the
/// two IRs is empty on packets both addressed here and elsewhere.
#[test]
fn self_rules_merge_only_with_each_other() {
    let text = "table t\npolicy output block\nblock out proto tcp to self port 22\nblock out proto tcp to !self port 25\nblock out proto tcp to self port 80\nblock out proto tcp to port 443\nblock out proto tcp to self port 8080\n";
    let c = ir::compile("t.pf", text).unwrap();
    assert_eq!(assert_equivalent(&c), 1, "22, 80 and 8080 to self merge");
    let opt = optimize(&c.ruleset);
    let output = &opt.chain(Hook::Output).rules;
    let merged: Vec<&ir::Rule> = output.iter().filter(|r| r.merged.is_some()).collect();
    assert_eq!(merged.len(), 1, "{merged:#?}");
    assert_eq!(merged[0].matches.dst_local, Some(true));
    let ids: Vec<&str> = merged[0].merged.as_ref().unwrap().parts.iter().map(|p| p.origin.id.as_str()).collect();
    assert_eq!(ids, ["t.pf:3", "t.pf:5", "t.pf:7"]);
    for (id, local) in [("t.pf:4", Some(false)), ("t.pf:6", None)] {
        let r = output.iter().find(|r| r.origin.id == id).unwrap();
        assert!(r.matches.dst_local == local && r.merged.is_none(), "{r:#?}");
    }
    let script = phantomc::nft::script_for(&c, &phantomc::nft::emit::build(&opt, &Default::default()));
    assert!(script.contains("fib daddr type local tcp dport @"), "{script}");
    assert!(script.contains("fib daddr type != local tcp dport 25"), "{script}");
}

/// An `offload` rule has a side effect (its connections leave the chain):
/// it neither merges nor moves, and the diff of the two IRs is empty.
#[test]
fn offload_rules_decide_alike_optimized() {
    let c = ir::compile_file(std::path::Path::new("testdata/language/flowtable.pf")).unwrap();
    assert_equivalent(&c);
    let opt = optimize(&c.ruleset);
    let forward = &opt.chain(Hook::Forward).rules;
    assert_eq!(forward[0].offload.as_deref(), Some("fast"), "{forward:#?}");
    assert!(forward[0].merged.is_none());
}

/// The five interleaved shapes of `benches/compile_apply.sh`: three of them
/// merge into concatenated sets although no two lines of a shape are
/// adjacent; the rate-limited and the logged lines each go behind a verdict
/// map, keeping their own rules.
#[test]
fn interleaved_shapes_merge_into_concatenated_sets() {
    let mut text = String::from("table t\npolicy input block\npass in on lo\n");
    for i in 0..40 {
        text += &match i % 5 {
            0 => format!("pass in proto tcp from 10.0.{i}.0/24 to port {} state new\n", 1000 + i),
            1 => format!("block in proto udp from 10.0.0.{i} to port {{ 53, 123, {} }}\n", 2000 + i),
            2 => format!("pass in proto tcp from 2001:db8:{i:x}::/48 to port 22 limit 10/minute\n"),
            3 => format!("reject in proto tcp from 192.0.2.{i} to port 1000-2000 log\n"),
            _ => format!("pass in on eth{} proto udp to port {} nocounter\n", i % 4, 3000 + i),
        };
    }
    // Overlapping values of one shape: 10.0.0.0/16 holds an earlier rule's
    // network, so it can neither join that group nor move past it.
    text += "pass in proto tcp from 10.0.0.0/16 to port 1000 state new\nblock in proto udp from 10.0.0.6 to port 53\n";
    let c = ir::compile("t.pf", &text).unwrap();
    assert_eq!(assert_equivalent(&c), 5);
    let opt = optimize(&c.ruleset);
    let input = &opt.chain(Hook::Input).rules;
    let fields: Vec<(String, bool)> =
        input.iter().filter_map(|r| r.merged.as_ref()).map(|m| (m.describe_fields(), m.dispatch)).collect();
    let want = [
        ("source address . destination port", false),
        ("source address . destination port", false),
        ("source address", true),
        ("source address", true),
        ("input interface . destination port", false),
    ];
    assert_eq!(fields, want.map(|(f, d)| (f.to_string(), d)));
    // lo, 3 merged, 2 verdict maps (8 limited, 8 logged), the two overlapping lines at the end.
    assert_eq!(input.len(), 1 + 3 + 2 + 2, "{input:#?}");
    let last: Vec<&str> = input[input.len() - 2..].iter().map(|r| r.origin.id.as_str()).collect();
    assert_eq!(last, ["t.pf:44", "t.pf:45"]);
    let explained = phantomc::ir::optimize::explain(&opt);
    assert!(
        explained.contains("t.pf:9 ") && explained.contains("(moved up past 4 rule(s): no packet matches both)"),
        "{explained}"
    );
    assert!(
        explained.contains("  t.pf:12                  192.0.2.8/32 : jump opt_input_4_2  (moved up past 1 rule(s)"),
        "{explained}"
    );
    assert!(
        explained
            .ends_with("5 merged rule(s) (2 over a verdict map), 28 line(s) moved; 8 rules in the optimized chains\n"),
        "{explained}"
    );
}

const ACTIONS: [&str; 3] = ["pass", "block", "reject"];
const DIRS: [&str; 3] = ["in", "in", "out"];
const ON: [&str; 9] =
    ["", "on eth0", "on eth1", "on eth*", "on lo", "on { eth0, wg0 }", "on !eth0", "on !{ eth1, wg* }", "on !lo"];
const PROTOS: [&str; 3] = ["", "proto tcp", "proto udp"];
/// Source and destination pools of one address family each, so that a run compiles.
const SRCS: [&[&str]; 2] = [
    &["any", "10.0.0.1", "10.0.0.3", "10.0.0.0/30", "10.0.1.0/24", "! 10.0.0.1", "{ 10.0.0.1, 192.0.2.9 }"],
    &["any", "2001:db8::1", "2001:db8::2", "2001:db8::/64", "2001:db8:1::/48", "! 2001:db8::1"],
];
const DSTS: [&[&str]; 2] = [&["any", "10.0.0.1", "10.0.1.7", "10.0.0.0/30"], &["any", "2001:db8::2", "2001:db8::/126"]];
const SPORTS: [&str; 4] = ["", "1000", "22", "1000-2000"];
const DPORTS: [&str; 8] = ["", "22", "80", "81", "80-443", "{ 22, 8080 }", "! 22", "53"];
/// Lines that keep their own rule behind a verdict map (limits, a per-source
/// limit, a quota, logs, a rate-limited log, a named counter), and lines
/// that share one over a set; connection marks.
const EXTRAS: [&str; 15] = [
    "",
    "",
    "",
    "state new",
    "nocounter",
    "log",
    "limit 5/second",
    "limit 5/second per-source",
    "quota 1 mbytes",
    "log limit 1/second nocounter",
    "counter \"c\"",
    "limit 5/second log",
    "ct mark 1",
    "ct mark 2",
    "from urpf-failed",
];

/// A run of policy lines that share every clause but one, which steps
/// through its pool of values (overlapping ones included), in half the runs
/// with the action changing too: the shape the optimizer merges, and the
/// places where it must not.
fn run_text(pick: &[usize; 10], len: usize) -> String {
    let vary = pick[9] % 5;
    let mut out = String::new();
    for i in 0..len {
        let at =
            |field: usize, pool: usize| (pick[field] + if vary == field { i * (1 + pick[8] % 2) } else { 0 }) % pool;
        let on = ON[at(0, ON.len())];
        let family = (pick[9] / 5) % 2;
        let src = SRCS[family][at(1, SRCS[family].len())];
        let sport = SPORTS[at(2, SPORTS.len())];
        let dport = DPORTS[at(3, DPORTS.len())];
        let dst = DSTS[family][at(4, DSTS[family].len())];
        let proto = PROTOS[pick[5] % PROTOS.len()];
        let port = |p: &str| if proto.is_empty() || p.is_empty() { String::new() } else { format!("port {p}") };
        out += &format!(
            "{} {} {on} {proto} from {src} {} to {dst} {} {}\n",
            ACTIONS[(pick[6] + if pick[6] >= 32 { i } else { 0 }) % 3],
            DIRS[pick[7] % 3],
            port(sport),
            port(dport),
            // In some runs each line has its own extra: a verdict map's lines differ in theirs.
            EXTRAS[(pick[8] / 2 + if pick[8] >= 40 { i } else { 0 }) % EXTRAS.len()]
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn generated_policies_decide_alike_optimized(
        runs in prop::collection::vec((prop::array::uniform10(0..64usize), 1..5usize), 1..10),
        default in 0..2usize,
    ) {
        let mut text = format!("table t\npolicy input {}\n", ["block", "pass"][default]);
        for (pick, len) in &runs {
            text += &run_text(pick, *len);
        }
        // Lines the compiler refuses (a v6 source with a v4 destination) are not the optimizer's to test.
        if let Ok(c) = ir::compile("t.pf", &text) {
            assert_equivalent(&c);
        }
    }

    /// The same runs with their lines interleaved (line 1 of each run, then
    /// line 2 of each, ...): no two adjacent lines share a shape, so every
    /// merge moves rules past others, over overlapping values too.
    #[test]
    fn interleaved_policies_decide_alike_optimized(
        runs in prop::collection::vec((prop::array::uniform10(0..64usize), 1..6usize), 2..8),
        default in 0..2usize,
    ) {
        let texts: Vec<String> = runs.iter().map(|(pick, len)| run_text(pick, *len)).collect();
        let mut text = format!("table t\npolicy input {}\n", ["block", "pass"][default]);
        for i in 0.. {
            let lines: Vec<&str> = texts.iter().filter_map(|t| t.lines().nth(i)).collect();
            if lines.is_empty() {
                break;
            }
            for l in lines {
                text += l;
                text.push('\n');
            }
        }
        if let Ok(c) = ir::compile("t.pf", &text) {
            assert_equivalent(&c);
        }
    }
}
