//! Differential kernel test of `apply`'s netlink load (`src/nft/wire/`):
//! every policy is loaded once by `nft -f` of its script and once by the
//! encoder's batch, each into a fresh namespace, and `nft list table` must
//! be identical. A policy using a construct the encoder leaves to nft must
//! say so (`Unsupported`), and `phantomc apply` must still load it.

mod common;

use common::*;
use phantomc::nft::apply::{load_over_netlink, unified, LoadPath};
use phantomc::nft::kernel::{self, describe, Snapshot};
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

/// Every rule expression and statement phantomc emits outside sets, one
/// line each (the set encodings are tested with the example policies).
const RULE_CONSTRUCTS: &str = "table phantomc
policy input block log \"in\"
policy forward block
policy output pass priority 10
pass in on lo
pass in on !eth0 proto udp to port 443
block in on eth1* proto tcp to port 80
pass in proto gre
pass in ipv4 proto icmp icmp-type echo-request limit 5/second burst 10
pass in ipv6 proto icmpv6 icmp-type echo-request
reject in proto udp to port 51820 with icmpx admin-prohibited
reject in ipv4 proto udp to port 51821 with icmp host-prohibited
reject in ipv6 proto udp to port 51822 with icmpv6 addr-unreachable
reject in proto tcp to port 5432 with icmpx port-unreachable
reject in proto tcp to port 113 with tcp reset
reject in on eth1 from urpf-failed proto udp
block in from urpf-failed proto tcp to port 22 early
pass in proto udp from 10.10.0.0/16 to port 53 early notrack
pass out proto udp from port 53 early notrack
match in on eth1 proto tcp to port 53 set mark 0x35
pass in proto tcp to port 53 mark 0x35 set mark 7
pass in proto tcp from 203.0.113.0/24 to port 8443 counter \"partners\"
pass in proto tcp from 10.10.0.0/16 to port 8081 state new set ct mark 0x51
pass in ct mark 0x51
match in on eth1 proto tcp from 10.10.0.128/25 set mark 0x52 set ct mark from mark
match in on eth1 ct mark 0x52 set mark from ct mark
pass in proto tcp to self port 22
block out proto tcp to !self port 25
dnat in proto tcp to self port 8080 -> 172.17.0.2 port 80
pass forward proto tcp to 172.17.0.2 port 80
masquerade out on !eth1 from 192.168.50.0/24
pass in ipv4 proto udp to port 9000 quota 2 kbytes
pass in proto tcp to port 9001 log \"g\" group 3
pass in proto tcp from 192.0.2.1 to port 9002 log \"r\" limit 1/second
block in from !10.0.0.0/8 to port 9003 proto tcp
pass in state new proto tcp to port 9004
pass in proto tcp to port 9005 limit 3/minute per-source burst 3
pass in ipv6 proto tcp to port 9006 limit 3/minute per-source
";

/// `nft list table inet NAME` and the drift check's netlink snapshot after
/// `load` ran in a fresh namespace.
fn loaded(tag: &str, rs: &phantomc::ir::Ruleset, load: impl FnOnce(&Netns)) -> (String, Snapshot) {
    let ns = Netns::new(tag);
    load(&ns);
    let out = ns.nft(&["list", "table", "inet", &rs.table]);
    assert!(out.status.success(), "list: {}", stderr(&out));
    // Every set's elements, the run-time and feed sets' too (the drift
    // check's snapshot leaves those out).
    let table = rs.table.clone();
    let snap = ns.run_in(move || kernel::snapshot(&table, &|_| false).expect("snapshot").expect("table loaded"));
    (stdout(&out), snap)
}

/// Loads `text` both ways and compares; returns why the encoder left it to
/// nft, if it did.
fn differential(name: &str, text: &str) -> Option<String> {
    differential_of(name, phantomc::ir::compile(name, text).unwrap_or_else(|e| panic!("{name}: {e:?}")))
}

fn differential_of(name: &str, compiled: phantomc::ir::Compiled) -> Option<String> {
    differential_with(name, compiled, &Elements::default())
}

/// [`differential_of`] with `elements` in the run-time and feed sets.
fn differential_with(name: &str, compiled: phantomc::ir::Compiled, elements: &Elements) -> Option<String> {
    differential_edited(name, compiled, elements, |_| {})
}

/// [`differential_with`] of the table as `edit` leaves it.
fn differential_edited(
    name: &str,
    compiled: phantomc::ir::Compiled,
    elements: &Elements,
    edit: impl FnOnce(&mut phantomc::nft::NftTable),
) -> Option<String> {
    let mut table = build(&compiled.ruleset, elements);
    edit(&mut table);
    differential_table(name, &compiled, table)
}

/// Loads `table` (compiled from `compiled`) both ways and compares.
fn differential_table(name: &str, compiled: &phantomc::ir::Compiled, table: phantomc::nft::NftTable) -> Option<String> {
    let script = script_for(compiled, &table);
    differential_script(name, compiled, table, script)
}

/// [`differential_table`] with nft loading `script`.
fn differential_script(
    name: &str,
    compiled: &phantomc::ir::Compiled,
    table: phantomc::nft::NftTable,
    script: String,
) -> Option<String> {
    let messages = match wire::replace_messages(&table) {
        Ok(m) => m,
        Err(why) => return Some(why.0),
    };
    let (nft_listing, nft_snap) = loaded("nlnft", &compiled.ruleset, |ns| {
        let out = ns.command(&["nft", "-f", "-"]).stdin_with(&script);
        assert!(out.status.success(), "{name}: nft -f: {}", stderr(&out));
    });
    let (listing, snap) = loaded("nlwire", &compiled.ruleset, move |ns| {
        ns.run_in(move || {
            phantomc::netlink::batch(wire::NFNL_SUBSYS_NFTABLES, &messages).expect("netlink batch");
            // Loaded again over the live table: the same replacement.
            phantomc::netlink::batch(wire::NFNL_SUBSYS_NFTABLES, &messages).expect("netlink batch again");
        })
    });
    assert_eq!(
        without_expiry(&listing),
        without_expiry(&nft_listing),
        "{name}: the netlink load lists differently from nft -f"
    );
    // What the drift check compares, byte for byte: chains, rules, set
    // definitions with nft's user data, and every set's elements.
    assert!(
        snap == nft_snap,
        "{name}: the kernel holds another table:\n{}",
        unified(&describe(&nft_snap), &describe(&snap), "nft -f", "netlink")
    );
    None
}

/// A listing without the `expires 59m59s976ms` of timed elements (the
/// time left differs between two loads).
fn without_expiry(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut rest = listing;
    while let Some(at) = rest.find(" expires ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " expires ".len()..];
        let end = after.find([',', ' ', '\n']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
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
fn every_rule_construct_loads_identically_over_netlink() {
    require_tools();
    assert_eq!(differential("rules.pf", RULE_CONSTRUCTS), None, "every rule construct must be encodable");
}

#[test]
fn the_language_constructs_fixture_loads_identically_over_netlink() {
    require_tools();
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/language/constructs.pf"));
    let compiled = phantomc::ir::compile_file(path).expect("compile");
    assert_eq!(differential_of("constructs.pf", compiled), None, "the language fixture must be encodable");
}

#[test]
fn example_policies_load_identically_over_netlink() {
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
    assert!(report.len() >= 6, "{report:?}");
    report.sort();
    let left_to_nft: Vec<_> = report.iter().filter(|(_, why)| why.is_some()).collect();
    assert!(left_to_nft.is_empty(), "every example policy must be encodable: {left_to_nft:?}");
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
fn generated_policies_load_identically_with_and_without_the_optimizer() {
    require_tools();
    // One line of each shape stays unmerged by the optimizer (the port
    // list is an anonymous set); at 40 lines the optimizer merges each
    // shape: concatenated interval sets whose elements count and carry
    // their line, an interface concatenation, and verdict maps jumping to
    // per-line chains.
    for n in [4, 5, 40, 400] {
        assert_eq!(differential(&format!("bench{n}.pf"), &bench_policy(n)), None, "bench {n}");
    }
    // Without the optimizer: one rule per line.
    let compiled = phantomc::ir::compile("bench200.pf", &bench_policy(200)).expect("compile");
    let unoptimized = phantomc::nft::emit::build_with(&compiled.ruleset, &Elements::default());
    assert!(unoptimized.rule_count() > 200, "one rule per line: {}", unoptimized.rule_count());
    assert_eq!(differential_table("bench200-unoptimized.pf", &compiled, unoptimized), None);
    // With a feed looked up before them.
    let feed =
        "table phantomc\nfeed attackers {\n source \"/nonexistent\"\n format plain\n}\nblock in from <attackers>\n";
    let text = bench_policy(20).replacen("table phantomc\n", feed, 1);
    assert_eq!(differential("bench-feed.pf", &text), None);
}

/// `phantomc apply FILE` in `ns`, with nft behind a wrapper that logs its
/// arguments to `nft.log` in `dir`, and `env`; returns the output and the
/// nft calls that loaded a script.
fn apply_logging_nft(
    ns: &Netns,
    dir: &std::path::Path,
    name: &str,
    text: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, Vec<String>) {
    let policy = dir.join(name);
    std::fs::write(&policy, text).expect("write");
    let (wrapper, log) = logging_nft(dir);
    let mut cmd = ns.command(&[env!("CARGO_BIN_EXE_phantomc"), "apply", policy.to_str().expect("path")]);
    cmd.env("PHANTOMC_NFT", &wrapper).env_remove("PHANTOMC_LOAD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run phantomc apply");
    (out, script_loads(&log))
}

/// An nft wrapper in `dir` that logs its arguments; its path and the log's
/// (emptied).
fn logging_nft(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("nft.log");
    let _ = std::fs::remove_file(&log);
    let wrapper = dir.join("nft-logging");
    std::fs::write(&wrapper, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec nft \"$@\"\n", log.display()))
        .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (wrapper, log)
}

/// The logged nft calls that loaded a script (`-f`).
fn script_loads(log: &std::path::Path) -> Vec<String> {
    let calls = std::fs::read_to_string(log).unwrap_or_default();
    calls.lines().filter(|l| l.contains("-f")).map(str::to_string).collect()
}

const ENCODABLE: &str = "table phantomc\npolicy input block\npass in on lo\npass in proto tcp to port 22 state new\n";

#[test]
fn apply_loads_over_netlink_by_default_and_with_phantomc_load_nft_through_nft() {
    require_tools();
    let compiled = phantomc::ir::compile("plain.pf", ENCODABLE).expect("compile");
    let table = build(&compiled.ruleset, &Elements::default());
    assert!(wire::replace_messages(&table).is_ok(), "the policy must be encodable");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listings = Vec::new();
    for (env, loads_script) in [(&[][..], false), (&[("PHANTOMC_LOAD", "nft")][..], true)] {
        let ns = Netns::new("nldefault");
        let (out, scripts) = apply_logging_nft(&ns, dir.path(), "plain.pf", ENCODABLE, env);
        assert!(out.status.success(), "apply {env:?}: {}", stderr(&out));
        assert_eq!(!scripts.is_empty(), loads_script, "{env:?}: nft loads: {scripts:?}");
        let status = ns
            .command(&[env!("CARGO_BIN_EXE_phantomc"), "status", dir.path().join("plain.pf").to_str().expect("path")])
            .output()
            .expect("status");
        assert_eq!(status.status.code(), Some(0), "{env:?}: in sync: {}", stdout(&status));
        listings.push(stdout(&ns.nft(&["list", "table", "inet", "phantomc"])));
    }
    assert_eq!(listings[0], listings[1], "both paths load the same table");
}

#[test]
fn a_batch_the_kernel_refuses_is_reported_at_its_policy_line_and_changes_nothing() {
    require_tools();
    // Encodable, but the kernel refuses the burst: nft then names the line.
    let text = format!("{ENCODABLE}pass in proto tcp to port 80 limit 1/day burst 4294967295\n");
    let compiled = phantomc::ir::compile("refused.pf", &text).expect("compile");
    assert!(wire::replace_messages(&build(&compiled.ruleset, &Elements::default())).is_ok(), "encodable");
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new("nlrefused");
    let (out, _) = apply_logging_nft(&ns, dir.path(), "first.pf", ENCODABLE, &[]);
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let before = stdout(&ns.nft(&["list", "table", "inet", "phantomc"]));
    let (out, scripts) = apply_logging_nft(&ns, dir.path(), "refused.pf", &text, &[]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("nft refused the rule compiled from refused.pf:5"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(scripts.len(), 1, "nft runs once, after the refused batch: {scripts:?}");
    assert_eq!(stdout(&ns.nft(&["list", "table", "inet", "phantomc"])), before, "the old table stays");
}

#[test]
fn an_unencodable_table_falls_back_to_nft_and_loads() {
    require_tools();
    // phantomc emits nothing the encoder leaves to nft (but flowtables,
    // which this kernel cannot load): a set of marks stands in for one.
    let text = "table phantomc\nset blocklist dynamic\npolicy input block\npass in on lo\nblock in from <blocklist>\n";
    let compiled = phantomc::ir::compile("fallback.pf", text).expect("compile");
    let mut prepared = phantomc::nft::apply::prepare_with(&compiled, Elements::default());
    let marks = nftables::schema::Set {
        name: "marks".into(),
        set_type: nftables::schema::SetTypeValue::Single(nftables::schema::SetType::Mark),
        flags: None,
        timeout: None,
        ..prepared.table.sets[0].clone()
    };
    prepared.table.sets.push(marks);
    assert!(matches!(load_over_netlink(&prepared.table), Err(LoadPath::Unsupported(_))), "left to nft");
    let dir = tempfile::tempdir().expect("tempdir");
    let (nft, log) = logging_nft(dir.path());
    let rules = prepared.table.rule_count();
    let ns = Netns::new("nlfallback");
    let loaded = ns.run_in(move || {
        phantomc::nft::apply::load(&phantomc::nft::Nft { program: nft }, &compiled, &prepared)
            .map_err(|e| e.to_string())
    });
    assert_eq!(loaded, Ok(rules), "the nft script loads it");
    assert_eq!(script_loads(&log).len(), 1, "nft loads the script");
    let listed = stdout(&ns.nft(&["list", "table", "inet", "phantomc"]));
    assert!(listed.contains("set marks {"), "{listed}");
}

/// Named sets with elements: prefixes, adjacent networks, single
/// addresses, an address at the top of the range, timed entries, and
/// run-time entries with timeouts and comments.
const SETS: &str = "table phantomc
set partners = { 203.0.113.0/24, 198.51.100.7, 10.0.0.0/24, 10.0.1.0/24, 192.0.2.0/25, 255.255.255.255 }
set partners6 = { fd00::/64, fd00:0:0:1::/64, 2001:db8::1 }
set temporary = { 192.0.2.128/25, 198.18.0.0/15 timeout 1d, 203.0.113.50 timeout 1h }
set blocklist dynamic timeout 1h
policy input block
block in from <blocklist>
pass in proto tcp from <partners> to port 22
pass in proto tcp from <partners6> to port 22
pass in proto tcp from <temporary> to port 443
";

#[test]
fn named_sets_with_elements_load_identically_over_netlink() {
    require_tools();
    let compiled = phantomc::ir::compile("sets.pf", SETS).expect("compile");
    let elem = |net: &str, timeout: Option<u32>, comment: Option<&str>| phantomc::nft::SetElem {
        net: net.parse().expect("net"),
        timeout,
        comment: comment.map(str::to_string),
    };
    let mut runtime = Elements::default();
    runtime.by_set.insert(
        "blocklist_v4".into(),
        vec![elem("192.0.2.9/32", Some(600), Some("scanner")), elem("10.9.0.0/16", None, None)],
    );
    runtime.by_set.insert("blocklist_v6".into(), vec![elem("2001:db8::/32", Some(60), None)]);
    assert_eq!(differential_with("sets.pf", compiled, &runtime), None, "named sets must be encodable");
}

/// A feed's kernel sets holding thousands of networks (several element messages).
#[test]
fn a_feed_with_thousands_of_networks_loads_identically_over_netlink() {
    require_tools();
    let text = "table phantomc\nfeed attackers {\n source \"/nonexistent\"\n format plain\n}\npolicy input block\nblock in from <attackers>\npass in proto tcp to port 22\n";
    let compiled = phantomc::ir::compile("feed.pf", text).expect("compile");
    let mut nets = Vec::new();
    for i in 0..3000u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + i * 256);
        // /24s, single addresses and some adjacent /25 pairs.
        nets.push(match i % 3 {
            0 => format!("{a}/24"),
            1 => format!("{}/32", std::net::Ipv4Addr::from(u32::from(a) + 7)),
            _ => format!("{a}/25"),
        });
        if i % 3 == 2 {
            nets.push(format!("{}/25", std::net::Ipv4Addr::from(u32::from(a) + 128)));
        }
    }
    let elems = nets
        .iter()
        .map(|n| phantomc::nft::SetElem { net: n.parse().expect("net"), timeout: None, comment: None })
        .collect();
    let set = compiled.ruleset.sets.iter().find(|s| s.nft_name.starts_with("attackers")).expect("feed set");
    let mut feed = Elements::default();
    feed.by_set.insert(set.nft_name.clone(), elems);
    // The feed's sets only: its lookups are rule expressions (covered elsewhere).
    let only_sets = |t: &mut phantomc::nft::NftTable| {
        for c in &mut t.chains {
            c.rules.retain(|r| !serde_json::to_string(&r.expr).expect("json").contains("attackers"));
        }
    };
    assert_eq!(differential_edited("feed.pf", compiled, &feed, only_sets), None, "feed sets must be encodable");
}

/// Rule literals `{ ... }`: anonymous sets of ports, port ranges,
/// addresses with prefixes and interfaces, each created before its rule
/// with an id of its own.
const ANONYMOUS: &str = "table phantomc
policy input block
pass in proto tcp to port { 53, 123, 2053 }
block in from { 10.0.0.0/24, 192.0.2.1, 10.0.1.0/24 } state new
pass in proto udp to port { 1-5, 7, 65535 }
block in from { fd00::/64, 2001:db8::1 }
pass in on { eth0, eth1 } proto tcp from port { 80, 443 }
block in proto tcp from !{ 198.51.100.0/24, 203.0.113.9 } to port 25
pass in ipv4 proto icmp icmp-type { echo-request, destination-unreachable }
pass in ipv6 proto icmpv6 icmp-type { echo-request, nd-neighbor-solicit }
pass in on { wg*, eth2 } proto udp to port 51820
pass in from { 10.10.0.0/16, !10.10.1.0/24, !10.10.200.7 } proto udp to port 53
";

#[test]
fn anonymous_sets_load_identically_over_netlink() {
    require_tools();
    assert_eq!(differential("anonymous.pf", ANONYMOUS), None, "anonymous sets must be encodable");
}

/// Set options phantomc does not emit today (size, policy, gc interval, comment),
/// encoded as nft loads them: the script gets the same options by hand.
#[test]
fn set_size_policy_and_gc_interval_load_identically_over_netlink() {
    require_tools();
    let text = "table phantomc\nset blocklist dynamic timeout 1h\npolicy input block\nblock in from <blocklist>\n";
    let compiled = phantomc::ir::compile("options.pf", text).expect("compile");
    let mut table = build(&compiled.ruleset, &Elements::default());
    let set = table.sets.iter_mut().find(|s| s.name == "blocklist_v4").expect("set");
    (set.size, set.policy, set.gc_interval) = (Some(1000), Some(nftables::schema::SetPolicy::Memory), Some(30));
    set.comment = Some("run-time blocks".into());
    let script = script_for(&compiled, &table);
    let declared = "\tset blocklist_v4 {\n\t\ttype ipv4_addr\n";
    assert!(script.contains(declared), "{script}");
    let script =
        script.replace(declared, &format!("{declared}\t\tsize 1000\n\t\tpolicy memory\n\t\tgc-interval 30s\n"));
    assert_eq!(differential_script("options.pf", &compiled, table, script), None, "set options must be encodable");
}
