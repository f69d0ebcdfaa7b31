//! Kernel tests of language constructs whose effect the analyzer-vs-kernel
//! test cannot see: `early` drops before conntrack, for local and forwarded
//! packets alike; `notrack` passes that leave no connection entry; marks set
//! by `match` rules that later rules decide by; connection marks set by the
//! first packet of a connection that decide its later packets; `to self`,
//! which follows the host's own addresses in a `dnat` and an `out` rule.

mod common;

use common::*;

const POLICY: &str = "table phantomc
policy input block priority 10
policy forward pass
pass in on lo
pass in state { established, related }
block in from 198.51.100.2 early
pass in proto tcp to port 80
";

/// The two ways a compiled policy reaches the kernel: `apply` (nft JSON) and
/// `nft -f` of `phantomc compile --format nft`.
#[derive(Clone, Copy, Debug)]
enum Load {
    Json,
    Script,
}

impl Load {
    fn run(self, ns: &Netns, policy: &str) {
        match self {
            Load::Json => apply(ns, policy),
            Load::Script => {
                let file = format!("{policy}.nft");
                std::fs::write(&file, stdout(&ns.phantomc(&["compile", "--format", "nft", policy]))).expect("script");
                let out = ns.nft(&["-f", &file]);
                assert!(out.status.success(), "{}", stderr(&out));
            }
        }
    }
}

/// `phantomc hits --format json`'s row for the policy line `id`.
fn rule_row(hits: &serde_json::Value, id: &str) -> serde_json::Value {
    hits["rules"].as_array().expect("rules").iter().find(|r| r["id"] == id).expect("row").clone()
}

fn hits_row(ns: &Netns, policy: &str, id: &str) -> serde_json::Value {
    let out = ns.phantomc(&["hits", policy, "--format", "json"]);
    rule_row(&serde_json::from_str(&stdout(&out)).expect("hits json"), id)
}

/// Counts, after conntrack (priority -150), the packets from 198.51.100.2.
const AFTER_CONNTRACK: &str = "table inet seen {
  chain pre { type filter hook prerouting priority -150; policy accept;
    ip saddr 198.51.100.2 counter
  }
}
";

fn packets_after_conntrack(ns: &Netns) -> u64 {
    let out = stdout(&ns.nft(&["-j", "list", "table", "inet", "seen"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    let exprs = v["nftables"].as_array().expect("array").iter().filter_map(|o| o.get("rule")?.get("expr")?.as_array());
    exprs.flatten().find_map(|e| e.get("counter")?.get("packets")?.as_u64()).expect("counter")
}

/// The server routes between the public side and the admin LAN.
fn routed(lab: &WebLab) {
    lab.srv.sysctl("net.ipv4.ip_forward=1");
    lab.publ.route(&["10.10.0.0/24", "via", "198.51.100.1"]);
    lab.adm.route(&["198.51.100.0/24", "via", "10.10.0.1"]);
}

#[test]
fn early_rules_drop_before_conntrack_for_local_and_forwarded_packets() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let adm_web = Servers::start(&lab.adm, &[80], &[]);
    routed(&lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let (policy, seen) = (dir.path().join("early.pf"), dir.path().join("seen.nft"));
    std::fs::write(&policy, POLICY).expect("policy");
    std::fs::write(&seen, AFTER_CONNTRACK).expect("observer");
    apply(&lab.srv, policy.to_str().expect("path"));
    let out = lab.srv.nft(&["-f", seen.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));

    // `priority 10` is the input chain's nft priority.
    let chain = stdout(&lab.srv.nft(&["-j", "list", "chain", "inet", "phantomc", "input"]));
    assert!(chain.contains("\"prio\": 10"), "{chain}");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "other sources pass");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "listed source, to this host");
    assert_eq!(tcp_connect(&lab.publ, "10.10.0.2", 80), Tcp::TimedOut, "listed source, forwarded");
    assert!(adm_web.peers.lock().expect("peers").is_empty(), "nothing was forwarded");
    // Dropped at raw priority: nothing reached conntrack, nothing is tracked.
    assert_eq!(packets_after_conntrack(&lab.srv), 0);
    let tracked = lab.srv.exec(&["conntrack", "-L", "-s", "198.51.100.2"]);
    assert!(stdout(&tracked).trim().is_empty(), "{}", stdout(&tracked));
    // The same policy without `early` tracks the attempt.
    std::fs::write(&policy, POLICY.replace(" early", "")).expect("policy");
    apply(&lab.srv, policy.to_str().expect("path"));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut);
    assert!(packets_after_conntrack(&lab.srv) > 0);
    // And only an early rule stops forwarded packets: the input rule does not.
    assert_eq!(tcp_connect(&lab.publ, "10.10.0.2", 80), Tcp::Connected, "forwarded without early");
    assert_eq!(adm_web.peers.lock().expect("peers").len(), 1);
}

/// `quota`: the rule matches until its bytes are used, then packets fall
/// through to the default policy, which drops (and counts) them.
#[test]
fn a_used_up_quota_lets_packets_fall_through_to_the_drop() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("quota.pf");
    std::fs::write(&policy, "pass in on lo\npass in ipv4 proto udp to port 5000 quota 2 kbytes\n").expect("write");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    let _servers = Servers::start(&lab.srv, &[], &[5000]);
    assert!(udp_echo(&lab.publ, "198.51.100.1", 5000), "under the quota the echo gets through");
    // 20 datagrams of 228 IP bytes: 4560 bytes, more than the 2048 left.
    lab.publ.run_in(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..20 {
            s.send_to(&[0u8; 200], "198.51.100.1:5000").expect("send");
        }
    });
    assert!(!udp_echo(&lab.publ, "198.51.100.1", 5000), "the quota is used up: dropped");
    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    let hits: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    let row = |id: &str| {
        let rows = hits["rules"].as_array().expect("rules");
        rows.iter().find(|r| r["id"] == id).expect("row")["packets"].as_u64().expect("counted")
    };
    let passed = row("quota.pf:2");
    assert!((2..=12).contains(&passed), "about 2 KiB of datagrams passed: {passed}");
    assert!(row("default:input") >= 10, "the rest met the default drop: {hits}");
}

/// Connection entries in `ns` for UDP port `port` (either direction).
fn tracked_udp(ns: &Netns, port: u16) -> usize {
    let p = port.to_string();
    let listed = |dir: &str| stdout(&ns.exec(&["conntrack", "-L", "-p", "udp", dir, &p])).lines().count();
    listed("--dport") + listed("--sport")
}

const NOTRACK: &str = "table phantomc
policy input block
pass in on lo
pass in state { established, related }
pass in proto udp to port 5353 early notrack
pass out proto udp from port 5353 early notrack
pass in proto udp to port 5354
pass in proto icmpv6 icmp-type { nd-neighbor-solicit, nd-neighbor-advert }
";

/// `notrack`: DNS-like UDP passes without a conntrack entry (both ways),
/// while the same traffic to a plain `pass` rule is tracked; the script and
/// the JSON output load alike.
#[test]
fn notrack_passes_udp_without_a_connection_entry() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[], &[5353, 5354, 5355]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("notrack.pf");
    std::fs::write(&policy, NOTRACK).expect("policy");
    let policy = policy.to_str().expect("utf-8 path");
    for load in [Load::Json, Load::Script] {
        load.run(&lab.srv, policy);
        lab.srv.exec(&["conntrack", "-F"]);
        assert!(udp_echo(&lab.publ, "198.51.100.1", 5353), "{load:?}: notrack rule passes");
        assert!(udp_echo(&lab.adm, "fd00:10::1", 5353), "{load:?}: and over IPv6");
        assert_eq!(tracked_udp(&lab.srv, 5353), 0, "{load:?}: no entry for untracked traffic");
        assert!(udp_echo(&lab.publ, "198.51.100.1", 5354), "{load:?}: plain pass");
        assert!(tracked_udp(&lab.srv, 5354) > 0, "{load:?}: the plain pass is tracked");
        assert!(!udp_echo(&lab.publ, "198.51.100.1", 5355), "{load:?}: no rule: the default drops");
    }
    // The notrack rule counted its packets in the input chain (4 datagrams: 2 echoes, v4 and v6).
    let row = hits_row(&lab.srv, policy, "notrack.pf:5");
    assert_eq!(row["chain"], "early", "{row}");
    assert!(row["packets"].as_u64().expect("counted") >= 2, "{row}");
}

/// A static set entry with its own timeout: blocked once loaded, then the
/// kernel removes the entry on its own and the source passes again.
#[test]
fn a_timed_set_entry_blocks_until_the_kernel_removes_it() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("timed.pf");
    let text = "set temp = { 198.51.100.2 timeout 3s, 192.0.2.0/24 }
pass in on lo
block in from <temp>
pass in proto tcp to port 80
";
    std::fs::write(&policy, text).expect("write");
    let policy = policy.to_str().expect("utf-8 path");
    // The analyzer sees the set as loaded: the entry is there.
    let explained = lab.srv.phantomc(&["explain", policy, "tcp 198.51.100.2:40000 -> 198.51.100.1:80"]);
    assert!(stdout(&explained).contains("block"), "{}", stdout(&explained));
    let started = std::time::Instant::now();
    apply(&lab.srv, policy);
    let listed = stdout(&lab.srv.nft(&["list", "set", "inet", "phantomc", "temp_v4"]));
    assert!(listed.contains("198.51.100.2 timeout 3s") && listed.contains("flags interval,timeout"), "{listed}");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "blocked while the entry lasts");
    // Poll: the kernel's garbage collection removes it some time after 3 s.
    let mut passed = false;
    while started.elapsed() < std::time::Duration::from_secs(30) {
        if tcp_connect(&lab.publ, "198.51.100.1", 80) == Tcp::Connected {
            passed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(passed, "the timed entry never expired");
    let listed = stdout(&lab.srv.nft(&["list", "set", "inet", "phantomc", "temp_v4"]));
    assert!(!listed.contains("198.51.100.2") && listed.contains("192.0.2.0/24"), "{listed}");
    // The drift check does not count the entry's absence as drift.
    assert_eq!(lab.srv.phantomc(&["status", policy]).status.code(), Some(0), "in sync");
}

const MARKS: &str = "table phantomc
policy input block
pass in on lo
pass in state { established, related }
match in on eth1 proto tcp to port 80 set mark 0x50
pass in proto tcp to port 80 mark 0x50 set mark 9
";

/// A `match` rule marks TCP to port 80 arriving on eth1 before the filter
/// chains; the pass rule matches that mark, so the same port is open from
/// the admin LAN and closed from the public side. Script and JSON alike.
#[test]
fn a_mark_set_by_a_match_rule_decides_a_later_rule() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("marks.pf");
    std::fs::write(&policy, MARKS).expect("policy");
    let policy = policy.to_str().expect("utf-8 path");
    for load in [Load::Json, Load::Script] {
        load.run(&lab.srv, policy);
        assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "{load:?}: marked on eth1, passed");
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "{load:?}: unmarked on eth0, dropped");
    }
    // The match rule counted both loads' SYNs from the admin LAN only.
    let row = hits_row(&lab.srv, policy, "marks.pf:5");
    assert!(row["packets"].as_u64().expect("counted") >= 1, "{row}");
}

const CT_MARKS: &str = "table phantomc
policy input block
pass in on lo
pass in proto tcp to port 7000 state new set ct mark 0x70
pass in ct mark 0x70
pass in proto tcp to port 7001 state new
pass in proto tcp to port 7002 state new set mark 0x72 set ct mark from mark
match in ct mark 0x72 set mark from ct mark
pass in mark 0x72
pass in proto icmpv6 icmp-type { nd-neighbor-solicit, nd-neighbor-advert }
";

/// The connection mark, with no `state established` rule: the first packet
/// of a connection to 7000 sets its ct mark, and the later packets of that
/// connection pass only by it (data echoes); 7001 passes its first packet
/// too but marks nothing, so its data is dropped. On 7002 the first packet
/// saves its packet mark on the connection, and a match rule restores it on
/// every later packet, which then passes by `mark`. Script and JSON alike.
#[test]
fn a_ct_mark_set_on_the_first_packet_decides_the_later_packets() {
    let lab = web_lab();
    let _echo: Vec<Servers> = [7000, 7001, 7002].into_iter().map(|port| echo_server(&lab.srv, port)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("ctmarks.pf");
    std::fs::write(&policy, CT_MARKS).expect("policy");
    let policy = policy.to_str().expect("utf-8 path");
    for load in [Load::Json, Load::Script] {
        load.run(&lab.srv, policy);
        lab.srv.exec(&["conntrack", "-F"]);
        let mut marked = Conn::open(&lab.publ, "198.51.100.1", 7000);
        assert!(marked.round_trip(b"marked connection"), "{load:?}: later packets pass by the ct mark");
        let listed = stdout(&lab.srv.exec(&["conntrack", "-L", "-p", "tcp", "--dport", "7000"]));
        assert!(listed.contains("mark=112"), "{load:?}: the connection carries mark 0x70: {listed}");
        let mut unmarked = Conn::open(&lab.adm, "10.10.0.1", 7001);
        assert!(!unmarked.round_trip(b"unmarked"), "{load:?}: no ct mark: later packets dropped");
        let mut restored = Conn::open(&lab.adm, "fd00:10::1", 7002);
        assert!(restored.round_trip(b"restored mark"), "{load:?}: mark saved, restored, matched");
    }
    // The restoring match rule runs in the connmark chain and counted the later packets.
    let row = hits_row(&lab.srv, policy, "ctmarks.pf:8");
    assert_eq!(row["chain"], "connmark", "{row}");
    assert!(row["packets"].as_u64().expect("counted") >= 2, "{row}");
}

/// This kernel has no flowtable support (`# CONFIG_NF_FLOW_TABLE is not
/// set`): `apply` of a policy with a flowtable is refused before anything
/// changes, with an error that says so at the flowtable's line; the policy
/// loaded before stays, and so does its traffic. `--dry-run` says the same.
#[test]
fn apply_without_kernel_flowtable_support_fails_cleanly_and_keeps_the_old_ruleset() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (dir.path().join("old.pf"), dir.path().join("fast.pf"));
    std::fs::write(&old, POLICY).expect("policy");
    let flowtable = "flowtable fast { devices { eth0, eth1 } }\npass forward state { established, related } offload\n";
    std::fs::write(&new, format!("{POLICY}{flowtable}")).expect("policy");
    let (old, new) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));
    apply(&lab.srv, old);
    let before = rule_handles(&lab.srv);
    for args in [vec!["apply", new], vec!["apply", "--dry-run", new]] {
        let out = lab.srv.phantomc(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for needle in
            ["flowtable-unsupported", "no flowtable support", "CONFIG_NF_FLOW_TABLE", "nf_flow_table", "fast.pf:8"]
        {
            assert!(err.contains(needle), "{args:?}: `{needle}` missing: {err}");
        }
        assert!(err.contains("nothing was changed"), "{err}");
    }
    assert_eq!(rule_handles(&lab.srv), before, "the old ruleset is still the one loaded");
    let tables = stdout(&lab.srv.nft(&["list", "tables"]));
    assert_eq!(tables.trim(), "table inet phantomc", "the probe left nothing behind");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "old rules still pass port 80");
}

const COUNTERS: &str = "table phantomc
policy input block
pass in on lo
pass in state { established, related }
pass in proto tcp to port 80 counter \"web\"
pass in proto tcp to port 443 counter \"web\"
pass in proto tcp to port 22 counter \"ssh\"
";

/// `counter "name"`: two lines share the named counter `web`; each new
/// connection's SYN is counted once (the rest of it is `established`), and
/// `hits` reads the counter by name. Script and JSON alike.
#[test]
fn two_rules_count_into_one_named_counter() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80, 443, 8080], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("counters.pf");
    std::fs::write(&policy, COUNTERS).expect("policy");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    for port in [80, 80, 80, 443, 443] {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", port), Tcp::Connected, "port {port}");
    }
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 8080), Tcp::TimedOut, "no rule: dropped");
    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    let hits: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    let counters = hits["counters"].as_array().expect("counters").clone();
    let web = counters.iter().find(|c| c["name"] == "web").expect("web counter");
    assert_eq!(web["packets"], 5, "{hits}");
    assert_eq!(web["lines"], serde_json::json!(["counters.pf:5", "counters.pf:6"]));
    let ssh = counters.iter().find(|c| c["name"] == "ssh").expect("ssh counter");
    assert_eq!(ssh["packets"], 0, "{hits}");
    let row = rule_row(&hits, "counters.pf:6");
    assert_eq!((row["counter_name"].as_str(), row["packets"].as_u64()), (Some("web"), Some(5)), "{row}");
    let text = stdout(&lab.srv.phantomc(&["hits", policy]));
    assert!(text.contains("named counters:") && text.contains(" web  (counters.pf:5, counters.pf:6)"), "{text}");

    // The nft script declares the same counter (loading it starts from 0).
    Load::Script.run(&lab.srv, policy);
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 443), Tcp::Connected);
    let listed = stdout(&lab.srv.nft(&["list", "counter", "inet", "phantomc", "web"]));
    assert!(listed.contains("packets 1 "), "{listed}");
}

const NEGATED: &str = "table phantomc
policy input block
policy forward block
pass in on lo
pass in state { established, related }
pass in on !eth0 proto tcp to port 80
pass forward state { established, related }
pass forward in on !eth1 out on !{ eth0, lo } proto tcp to port 80
";

/// Negated interfaces decide real packets: port 80 of this host is open
/// from every interface but eth0 (so from the admin LAN on eth1), and
/// forwarding to port 80 passes in from anything but eth1 and out to
/// anything but eth0 or lo: public to admin passes, admin to public does
/// not. Script and JSON alike; the same negations without `!` invert it.
#[test]
fn negated_interfaces_decide_local_and_forwarded_packets() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let adm_web = Servers::start(&lab.adm, &[80], &[]);
    let _pub_web = Servers::start(&lab.publ, &[80], &[]);
    routed(&lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("negated.pf");
    let policy_path = policy.to_str().expect("utf-8 path");
    for load in [Load::Json, Load::Script] {
        std::fs::write(&policy, NEGATED).expect("policy");
        load.run(&lab.srv, policy_path);
        assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "{load:?}: eth1 is not eth0");
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "{load:?}: eth0 is excluded");
        assert_eq!(tcp_connect(&lab.publ, "10.10.0.2", 80), Tcp::Connected, "{load:?}: in eth0, out eth1");
        assert_eq!(tcp_connect(&lab.adm, "198.51.100.2", 80), Tcp::TimedOut, "{load:?}: in eth1 is excluded");
        // Without the `!`, the same lines decide the other way round.
        std::fs::write(&policy, NEGATED.replace("!{ eth0, lo }", "eth0").replace('!', "")).expect("policy");
        load.run(&lab.srv, policy_path);
        assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::TimedOut, "{load:?}: only eth0");
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "{load:?}: eth0");
        assert_eq!(tcp_connect(&lab.publ, "10.10.0.2", 80), Tcp::TimedOut, "{load:?}: only in eth1");
        assert_eq!(tcp_connect(&lab.adm, "198.51.100.2", 80), Tcp::Connected, "{load:?}: in eth1, out eth0");
    }
    assert_eq!(adm_web.peers.lock().expect("peers").len(), 2, "one forwarded connection per load");
    // `explain` agrees with the kernel about the negated policy.
    std::fs::write(&policy, NEGATED).expect("policy");
    let verdict = |packet: &str| stdout(&lab.srv.phantomc(&["explain", policy_path, packet]));
    assert!(verdict("tcp 198.51.100.2:40000 -> 198.51.100.1:80 in eth0").contains("verdict: block"));
    assert!(verdict("tcp 10.10.0.2:40000 -> 10.10.0.1:80 in eth1").contains("verdict: pass"));
}

const TO_SELF: &str = "table phantomc
policy input block
policy forward block
policy output pass
pass in on lo
pass in state { established, related }
pass forward state { established, related }
dnat in proto tcp to self port 8080 -> 10.63.0.2 port 80
pass forward proto tcp to 10.63.0.2 port { 80, 8080 }
block out proto tcp to self except 127.0.0.0/8 port 7000
";

/// A client, a host with two addresses and a backend behind it: `to self`
/// DNATs tcp/8080 to either of the host's addresses to the backend's port 80,
/// and leaves 8080 to the backend's own address alone (refused there: nothing
/// listens); the host's own connections to port 7000 are blocked on its
/// addresses but loopback's, and `explain` says the same.
#[test]
fn to_self_follows_the_hosts_own_addresses() {
    for load in [Load::Json, Load::Script] {
        let (cli, host, back) = (Netns::new("self-cli"), Netns::new("self-host"), Netns::new("self-back"));
        link(&cli, "eth0", &host, "eth0");
        link(&host, "eth1", &back, "eth0");
        cli.addr("eth0", "10.61.0.2/24");
        host.addr("eth0", "10.61.0.1/24");
        host.addr("eth1", "10.63.0.1/24");
        back.addr("eth0", "10.63.0.2/24");
        cli.route(&["default", "via", "10.61.0.1"]);
        back.route(&["default", "via", "10.63.0.1"]);
        host.sysctl("net.ipv4.ip_forward=1");
        let _backend = Servers::start(&back, &[80], &[]);
        let _own = Servers::start(&host, &[7000], &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("self.pf");
        std::fs::write(&policy, TO_SELF).expect("write");
        let policy = policy.to_str().expect("utf-8");
        load.run(&host, policy);

        // Before the ruleset decides anything, the dnat must be what answers.
        assert_eq!(tcp_connect(&cli, "10.61.0.1", 8080), Tcp::Connected, "{load:?}: host's near address");
        assert_eq!(tcp_connect(&cli, "10.63.0.1", 8080), Tcp::Connected, "{load:?}: host's far address");
        assert_eq!(tcp_connect(&cli, "10.63.0.2", 8080), Tcp::Refused, "{load:?}: not this host's, no dnat");
        assert_eq!(tcp_connect(&cli, "10.63.0.2", 80), Tcp::Connected, "{load:?}: backend directly");
        for (dst, want, verdict) in [
            ("127.0.0.1", Tcp::Connected, "pass"),
            ("10.61.0.1", Tcp::TimedOut, "block"),
            ("10.63.0.1", Tcp::TimedOut, "block"),
        ] {
            assert_eq!(tcp_connect(&host, dst, 7000), want, "{load:?}: host to its own {dst}:7000");
            let out = host.phantomc(&["explain", policy, &format!("output tcp {dst} -> {dst}:7000 out lo local")]);
            assert!(stdout(&out).contains(&format!("verdict: {verdict}")), "{load:?} {dst}: {}", stdout(&out));
        }
        assert_eq!(tcp_connect(&host, "10.63.0.2", 80), Tcp::Connected, "{load:?}: host to the backend");
    }
}
