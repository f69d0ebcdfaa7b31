//! Differential kernel test of `apply`'s netlink load (`src/nft/wire/`):
//! every policy is loaded once by `nft -f` of its script and once by the
//! encoder's batch, each into a fresh namespace, and `nft list table` must
//! be identical. A policy using a construct the encoder leaves to nft must
//! say so (`Unsupported`), and `phantomc apply` must still load it.

mod common;

use common::*;
use phantomc::nft::apply::{load_over_netlink, LoadPath};
use phantomc::nft::{build, script_for, wire, Elements};

/// The language constructs the encoder covers, one line each.
const CONSTRUCTS: &str = "table phantomc
set blocklist dynamic
policy input block priority 10
policy forward pass
pass in on lo
pass in state { established, related }
block in state invalid
block in from 198.51.100.2
pass in proto tcp from 10.1.2.0/24 to port 22 state new
pass in proto tcp from 10.1.2.128/25 to port 2222
pass in proto udp from fd00:1::/48 to port 53
pass in proto tcp from fd00:2::1 to port 1000-2000 limit 10/minute
reject in proto tcp from 192.168.3.4 to port 1000-2000 log
pass out on eth0 proto udp to port 123
";

/// `nft list table inet NAME` after `load` ran in a fresh namespace.
fn listing(tag: &str, table: &str, load: impl FnOnce(&Netns)) -> String {
    let ns = Netns::new(tag);
    load(&ns);
    let out = ns.nft(&["list", "table", "inet", table]);
    assert!(out.status.success(), "list: {}", stderr(&out));
    stdout(&out)
}

/// Loads `text` both ways and compares; returns why the encoder left it to
/// nft, if it did.
fn differential(name: &str, text: &str) -> Option<String> {
    differential_of(name, phantomc::ir::compile(name, text).unwrap_or_else(|e| panic!("{name}: {e:?}")))
}

fn differential_of(name: &str, compiled: phantomc::ir::Compiled) -> Option<String> {
    let table = build(&compiled.ruleset, &Elements::default());
    let script = script_for(&compiled, &table);
    let messages = match wire::replace_messages(&table) {
        Ok(m) => m,
        Err(why) => return Some(why.0),
    };
    let by_nft = listing("nlnft", &table.name, |ns| {
        let out = ns.command(&["nft", "-f", "-"]).stdin_with(&script);
        assert!(out.status.success(), "{name}: nft -f: {}", stderr(&out));
    });
    let by_netlink = listing("nlwire", &table.name, move |ns| {
        ns.run_in(move || {
            phantomc::netlink::batch(wire::NFNL_SUBSYS_NFTABLES, &messages).expect("netlink batch");
            // Loaded again over the live table: the same replacement.
            phantomc::netlink::batch(wire::NFNL_SUBSYS_NFTABLES, &messages).expect("netlink batch again");
        })
    });
    assert_eq!(by_netlink, by_nft, "{name}: the netlink load differs from nft -f");
    None
}

trait StdinWith {
    fn stdin_with(&mut self, input: &str) -> std::process::Output;
}

impl StdinWith for std::process::Command {
    fn stdin_with(&mut self, input: &str) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child =
            self.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        child.wait_with_output().expect("wait")
    }
}

#[test]
fn the_constructs_fixture_loads_identically_over_netlink() {
    require_tools();
    assert_eq!(differential("constructs.pf", CONSTRUCTS), None, "the fixture must be encodable");
}

#[test]
fn the_language_constructs_fixture_loads_identically_or_falls_back() {
    require_tools();
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/language/constructs.pf"));
    let compiled = phantomc::ir::compile_file(path).expect("compile");
    eprintln!("constructs.pf: {:?}", differential_of("constructs.pf", compiled));
}

#[test]
fn example_policies_load_identically_or_fall_back() {
    require_tools();
    let mut report = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).expect("policies") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "pf") {
            continue;
        }
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        let compiled = phantomc::ir::compile_file(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        report.push((name.clone(), differential_of(&name, compiled)));
    }
    assert!(report.len() >= 5, "{report:?}");
    eprintln!("{report:#?}");
}

/// compile_apply.sh's policy body at a small size (its five shapes).
fn bench_policy(n: usize) -> String {
    let mut p = String::from("table phantomc\nset blocklist dynamic\npolicy input block\npass in on lo\npass in state { established, related }\n");
    for i in 0..n {
        let (a, b) = ((i / 250) % 250, i % 250);
        p += &match i % 5 {
            0 => format!("pass in proto tcp from 10.{a}.{b}.0/24 to port {} state new\n", 1000 + i % 60000),
            1 => format!("block in proto udp from 172.16.{a}.{b} to port {{ 53, 123, {} }}\n", 2000 + i % 50000),
            2 => format!("pass in proto tcp from fd00:{a:x}:{b:x}::/48 to port 22 limit 10/minute\n"),
            3 => format!("reject in proto tcp from 192.168.{a}.{b} to port 1000-2000 log\n"),
            _ => format!("pass in on eth{} proto udp to port {} counter\n", i % 4, 3000 + i % 60000),
        };
    }
    p
}

#[test]
fn generated_policies_load_identically_or_fall_back() {
    require_tools();
    // One line of each shape stays unmerged by the optimizer.
    for n in [4, 5] {
        let text = bench_policy(n);
        eprintln!("bench {n}: {:?}", differential(&format!("bench{n}.pf"), &text));
    }
    // Without the anonymous port set (left to nft), the other four shapes are encoded.
    let no_port_set: String =
        bench_policy(5).lines().filter(|l| !l.contains("{ 53, 123")).map(|l| format!("{l}\n")).collect();
    assert_eq!(differential("bench-shapes.pf", &no_port_set), None);
}

#[test]
fn an_unencodable_policy_falls_back_to_nft_and_loads() {
    require_tools();
    // A named counter is left to nft by the encoder.
    let text = "table phantomc\npolicy input block\npass in proto tcp to port 22 counter \"ssh\"\n";
    let compiled = phantomc::ir::compile("counter.pf", text).expect("compile");
    let table = build(&compiled.ruleset, &Elements::default());
    assert!(wire::replace_messages(&table).is_err(), "named counters are left to nft");
    assert!(matches!(load_over_netlink(&table), Err(LoadPath::NotAsked)), "the netlink load is opt-in");
    let ns = Netns::new("nlfallback");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("counter.pf");
    std::fs::write(&path, text).expect("write");
    let out = ns
        .command(&[env!("CARGO_BIN_EXE_phantomc"), "apply", path.to_str().expect("path")])
        .env("PHANTOMC_LOAD", "netlink")
        .output()
        .expect("run phantomc apply");
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let listed = stdout(&ns.nft(&["list", "table", "inet", "phantomc"]));
    assert!(listed.contains("counter name \"ssh\""), "{listed}");
}
