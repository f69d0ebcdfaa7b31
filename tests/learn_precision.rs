//! What the learner proposes on labelled captures: real brute force is
//! caught, benign logins and clients are not, protected sources are never
//! proposed (and the output says why), the block rule goes after loopback
//! and established traffic, and a host's outbound connections never become
//! inbound pass rules.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::pcapng::TcpCapture;

use phantomc::guard::Kind;
use phantomc::ir::{self, eval};
use phantomc::learn::{self, propose, Config, Detector, Report};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(rel)
}

fn report(rel: &str, hosts: &[IpAddr]) -> Report {
    let cfg = Config::default();
    let capture = learn::read_flows(&data(rel), &cfg, &|_| ()).unwrap();
    learn::analyze(capture.flows, &cfg, hosts)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(r: &Report) -> Vec<(IpAddr, Detector)> {
    r.findings.iter().map(|f| (f.source, f.detector)).collect()
}

#[test]
fn zeek_brute_force_traces_are_brute_force_and_benign_logins_are_not() {
    // Zeek flags both (btest baselines next to the traces).
    let ssh = report("zeek/ssh-sshguess.pcap", &[]);
    assert_eq!(labels(&ssh), [(ip("192.168.56.1"), Detector::BruteForce)]);
    let f = &ssh.findings[0];
    assert!(f.counts.starts_with("11 of 11 sessions to tcp 192.168.56.103:22 failed"), "{}", f.counts);
    assert!(f.counts.contains("over 66.348s"), "exact span, not rounded: {}", f.counts);
    let ftp = report("zeek/ftp-bruteforce.pcap", &[]);
    assert_eq!(labels(&ftp), [(ip("192.168.56.1"), Detector::BruteForce)]);
    // Benign SSH and FTP sessions: nothing flagged, the services are learned.
    // ftp-ipv4 was captured at the client: the server is named.
    for (benign, hosts) in [
        ("zeek/ssh-ssh.pcap", vec![]),
        ("zeek/ssh-single-conn.pcap", vec![]),
        ("zeek/ftp-ipv4.pcap", vec![ip("199.233.217.249")]),
    ] {
        let r = report(benign, &hosts);
        assert_eq!(labels(&r), [], "{benign}");
        assert!(!r.services.is_empty(), "{benign}");
    }
}

#[test]
fn zeek_protocol_traces_flag_nobody_and_its_nmap_version_scan_is_caught() {
    // No attack in these (DNS, web, SMTP, DCE-RPC, IGMP joins to 150 groups,
    // neighbour discovery, ESP tunnels): 255 sources, none flagged.
    let mut sources = 0;
    for benign in [
        "dns-edns-ecs",
        "cisco-fabric-path",
        "igmp-many-sources",
        "igmp-many-groups",
        "icmp6-nd-options",
        "ip6-esp",
        "wikipedia",
        "smtp",
        "dce-rpc-mapi",
    ] {
        let r = report(&format!("zeek/{benign}.pcap"), &[]);
        assert_eq!(labels(&r), [], "{benign}");
        sources += r.sources;
    }
    assert_eq!(sources, 255);
    // nmap -sV against port 80 of a /24: the scanner alone.
    let r = report("zeek/nmap-vsn.pcap", &[]);
    assert_eq!(labels(&r), [(ip("192.168.1.71"), Detector::Trw)]);
}

const CLOSED: &str = "table phantomc
policy input block
pass in on lo
block in state invalid
pass in state { established, related }
";

fn propose_with(policy: &str, r: &Report, ctx: &propose::Context) -> propose::Proposal {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.pf");
    std::fs::write(&path, policy).unwrap();
    propose::propose(&path, r, &Config::default(), "capture", ctx).unwrap()
}

#[test]
fn block_rule_goes_after_loopback_and_established_and_drops_the_guesser() {
    let r = report("zeek/ssh-sshguess.pcap", &[]);
    let p = propose_with(CLOSED, &r, &propose::Context::default());
    assert_eq!(p.blocked, [ip("192.168.56.1")]);
    let text = &p.new_text;
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in {text}"));
    assert!(at("pass in on lo") < at("block in from <learned_block>"), "{text}");
    assert!(at("pass in state { established, related }") < at("block in from <learned_block>"), "{text}");
    let after = ir::compile("p.pf", text).unwrap().ruleset;
    let packet = |src: &str, state| eval::Packet {
        hook: ir::Hook::Input,
        iif: Some("lo".into()),
        oif: None,
        src: ip(src),
        dst: ip("192.168.56.103"),
        proto: 6,
        sport: Some(40000),
        dport: Some(22),
        icmp_type: None,
        ct_state: state,
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: false,
    };
    let sets = eval::SetContents::new();
    // Loopback still passes; the guesser's new connections are dropped.
    assert_eq!(eval::decide(&after, &packet("127.0.0.1", 1 << 3), &sets).verdict, ir::Action::Pass);
    let mut guess = packet("192.168.56.1", 1 << 3);
    guess.iif = Some("eth0".into());
    assert_eq!(eval::decide(&after, &guess, &sets).verdict, ir::Action::Block);
    // No pass rule for the attacker's network: the only client was flagged.
    assert!(p.passes.is_empty(), "{:?}", p.passes);
}

#[test]
fn protected_sources_are_never_proposed_and_the_reason_is_given() {
    let r = report("zeek/ssh-sshguess.pcap", &[]);
    let cases = [
        (
            format!("{CLOSED}pass in proto tcp from 192.168.56.0/24 to port 22\n"),
            propose::Context::default(),
            "pass rule",
        ),
        (format!("allow-always {{ 192.168.56.0/24 }}\n{CLOSED}"), propose::Context::default(), "allow-always"),
    ];
    for (policy, ctx, why) in cases {
        let p = propose_with(&policy, &r, &ctx);
        assert!(p.blocked.is_empty(), "{policy}");
        assert_eq!(p.spared.len(), 1);
        assert!(p.spared[0].why.contains(why), "{:?}", p.spared);
        assert!(!p.new_text.contains("learned_block"), "{}", p.new_text);
    }
    let mut ctx = propose::Context::default();
    ctx.protected.add(ip("192.168.56.1").into(), Kind::Operator, "your SSH client");
    let p = propose_with(CLOSED, &r, &ctx);
    assert!(p.blocked.is_empty());
    assert_eq!(p.spared[0].why, "your SSH client");
    assert_eq!(p.spared[0].detector, "brute-force");
}

#[test]
fn outbound_connections_of_the_host_never_become_inbound_pass_rules() {
    // 192.168.1.32 serves SSH to 192.168.1.31 and connects out to SSH
    // servers elsewhere: only its inbound service is learned.
    let r = report("zeek/ssh-ssh.pcap", &[ip("192.168.1.32")]);
    let servers: Vec<(u16, Vec<IpAddr>)> =
        r.services.iter().map(|s| (s.port, s.servers.iter().copied().collect())).collect();
    assert_eq!(servers, [(22, vec![ip("192.168.1.32")])]);
    let p = propose_with(CLOSED, &r, &propose::Context::default());
    assert_eq!(p.passes, ["pass in proto tcp from 192.168.1.0/24 to port 22 state new label \"learned\""]);
}

#[test]
fn expiry_dates_count_from_when_learn_ran() {
    let r = report("zeek/ftp-bruteforce.pcap", &[]);
    // The capture is from 2014; learn "ran" on 2026-01-01.
    let ctx = propose::Context { now_us: 1_767_225_600_000_000, ..Default::default() };
    let p = propose_with(CLOSED, &r, &ctx);
    // The entry ends with 2026-01-31 and the proposal, checked as of then, drops the guesser.
    assert!(p.new_text.contains(" expires 2026-01-31,\n"), "{}", p.new_text);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(!p.blocked.is_empty());
}

#[test]
fn baseline_is_learned_then_compared_and_a_bad_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.pf");
    std::fs::write(&policy, CLOSED).unwrap();
    let baseline = dir.path().join("state/learn/baseline.json");
    let learn = |capture: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_phantomc"))
            .arg("learn")
            .arg(data(capture))
            .arg("--policy")
            .arg(&policy)
            .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    // The learning phase: benign SSH sessions become the baseline.
    let out = learn("zeek/ssh-ssh.pcap", &["--update-baseline"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["services"]["tcp/22"]["clients"].as_array().unwrap().len(), 4);
    // The guesser is stated against it.
    let out = learn("zeek/ssh-sshguess.pcap", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("  compared: tcp/22: this source 9.9/min, 3211 server bytes per connection, 100% failed"),
        "{err}"
    );
    assert!(err.contains("baseline (1 updates, 4 clients)"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("#   compared: tcp/22"), "the evidence carries it");
    // A damaged baseline is refused with its path and why; nothing is proposed.
    std::fs::write(&baseline, "{\"version\": 1, \"updates\": 3, \"serv").unwrap();
    let out = learn("zeek/ssh-sshguess.pcap", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: not a phantomc baseline", baseline.display())), "{err}");
    assert!(out.stdout.is_empty());
    std::fs::write(&baseline, "{\"version\": 2}").unwrap();
    let err = String::from_utf8_lossy(&learn("zeek/ssh-sshguess.pcap", &[]).stderr).to_string();
    assert!(err.contains("baseline format version 2, this phantomc reads version 1"), "{err}");
}

/// A new TCP connection from `src` to `dst:port` arriving on eth0.
fn new_tcp(src: IpAddr, dst: IpAddr, port: u16) -> eval::Packet {
    eval::Packet {
        hook: ir::Hook::Input,
        iif: Some("eth0".into()),
        oif: None,
        src,
        dst,
        proto: 6,
        sport: Some(40000),
        dport: Some(port),
        icmp_type: None,
        ct_state: 1 << 3,
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: false,
    }
}

#[test]
fn a_slow_scan_split_between_quiet_sources_is_blocked_and_every_client_still_served() {
    // A public web server with SSH for its LAN. Four scanners from four
    // networks divide 24 ports between them, 6 each, one probe a minute,
    // starting 10 minutes apart: each is under every per-source threshold.
    let server = ([10, 50, 0, 1], 0);
    let to = |port: u16| (server.0, port);
    let scanners: [[u8; 4]; 4] = [[198, 51, 100, 7], [203, 0, 113, 9], [192, 0, 2, 33], [198, 51, 100, 200]];
    let closed: Vec<u16> = [21, 23, 25, 110, 111, 135, 139, 143, 389, 445, 465, 587]
        .into_iter()
        .chain([993, 995, 1433, 1521, 2049, 3306, 3389, 5900, 6379, 8080, 8443, 27017])
        .collect();
    let minute = 60_000_000;
    let start = 1_764_000_000_000_000;
    let mut capture = TcpCapture::default();
    for (i, scanner) in scanners.iter().enumerate() {
        for (j, port) in closed[i * 6..i * 6 + 6].iter().enumerate() {
            let at = start + (i as u64 * 10 + j as u64) * minute;
            capture.refused(at, (*scanner, 41000 + j as u16), to(*port));
        }
    }
    // Benign: web clients inside and outside the LAN, an admin over SSH,
    // and a client that tried the old port 8080 three times before using 80.
    let web: [[u8; 4]; 4] = [[10, 50, 0, 11], [10, 50, 0, 12], [192, 0, 2, 80], [203, 0, 113, 44]];
    for (i, client) in web.iter().enumerate() {
        for k in 0..30u64 {
            let at = start + k * 2 * minute + i as u64 * 7_000_000;
            capture.session(at, (*client, 50000 + k as u16), to(80), 300, 4000);
        }
    }
    let admin = [10, 50, 0, 20];
    for k in 0..3u64 {
        capture.session(start + k * 20 * minute, (admin, 52000 + k as u16), to(22), 3000, 40_000);
    }
    let moved = [10, 50, 0, 30];
    for k in 0..3u16 {
        capture.refused(start + u64::from(k) * 1_000_000, (moved, 53000 + k), to(8080));
    }
    for k in 0..20u64 {
        capture.session(start + 5_000_000 + k * minute, (moved, 54000 + k as u16), to(80), 300, 4000);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("distributed.pcapng");
    capture.write(&path);

    let cfg = Config::default();
    let flows = learn::read_flows(&path, &cfg, &|_| ()).unwrap().flows;
    let r = learn::analyze(flows, &cfg, &[ip("10.50.0.1")]);
    let mut expected: Vec<(IpAddr, Detector)> =
        scanners.iter().map(|s| (IpAddr::from(*s), Detector::DistributedScan)).collect();
    expected.sort();
    assert_eq!(labels(&r), expected);
    assert!(r.findings[0].threshold.starts_with("4 sources >= 2 failed against 24 distinct targets of 10.50.0.0/24"));

    // Judged by what the learned policy does.
    let public_web = format!("{CLOSED}pass in proto tcp to port 80\n");
    let p = propose_with(&public_web, &r, &propose::Context::default());
    let after = ir::compile("p.pf", &p.new_text).unwrap().ruleset;
    let sets = eval::SetContents::new();
    let verdict = |src: [u8; 4], port| eval::decide(&after, &new_tcp(src.into(), ip("10.50.0.1"), port), &sets).verdict;
    for scanner in scanners {
        for port in [22, 80] {
            assert_eq!(verdict(scanner, port), ir::Action::Block, "{scanner:?} to {port}:\n{}", p.new_text);
        }
    }
    for client in web.into_iter().chain([moved]) {
        assert_eq!(verdict(client, 80), ir::Action::Pass, "{client:?} still gets the web site:\n{}", p.new_text);
    }
    assert_eq!(verdict(admin, 22), ir::Action::Pass, "the admin still logs in:\n{}", p.new_text);
}
