//! The learner on real captures: labelled scan traces (NCSA bro-simple-scan),
//! backscatter, pcap-parser's format corner cases, and the proposal diff.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod common;

use common::pcapng::{segment, PcapNg};
use phantomc::ir::{self, eval};
use phantomc::learn::{self, propose, reader, Config, Report};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(rel)
}

fn learn_file(path: &Path, cfg: &Config) -> (learn::Capture, Report) {
    let mut capture = learn::read_flows(path, cfg, &|_| {}).expect("capture opens");
    let report = learn::analyze(std::mem::take(&mut capture.flows), cfg, &[]);
    (capture, report)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn each_scan_trace_flags_exactly_its_scanner() {
    // Sources from the traces' expected-notice.log (Zeek + bro-simple-scan).
    let cases = [
        ("scans/445_scan.pcap", "176.192.150.3"),
        ("scans/multiport_scan.pcap", "125.27.226.209"),
        ("scans/port_scan.pcap", "192.168.2.154"),
        ("scans/scan_with_zero_windows.pcap", "10.0.0.1"),
    ];
    for (file, scanner) in cases {
        let (capture, report) = learn_file(&data(file), &Config::default());
        assert!(capture.read.damage.is_none(), "{file}: {:?}", capture.read.damage);
        assert_eq!(report.flagged(), vec![ip(scanner)], "{file}: {:#?}", report.findings);
    }
}

#[test]
fn port_scan_is_vertical_and_address_scans_are_caught_by_trw() {
    let cfg = Config::default();
    let detectors = |file: &str| -> Vec<learn::Detector> {
        learn_file(&data(file), &cfg).1.findings.iter().map(|f| f.detector).collect()
    };
    assert_eq!(detectors("scans/port_scan.pcap"), vec![learn::Detector::VerticalScan]);
    assert!(detectors("scans/445_scan.pcap").contains(&learn::Detector::Trw));
    assert!(detectors("scans/multiport_scan.pcap").contains(&learn::Detector::Trw));
    // One label per source: the specific scan, with TRW folded into it.
    let (_, zero) = learn_file(&data("scans/scan_with_zero_windows.pcap"), &cfg);
    assert_eq!(zero.findings.len(), 1);
    assert_eq!(zero.findings[0].detector, learn::Detector::HorizontalScan);
    assert_eq!(zero.findings[0].also, vec![learn::Detector::Trw]);
}

#[test]
fn backscatter_flags_nobody() {
    let (capture, report) = learn_file(&data("scans/backscatter.trace"), &Config::default());
    assert_eq!(capture.read.packets, 4771);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.flows > 2000, "{} flows", report.flows);
}

#[test]
fn roles_come_from_the_handshake_not_the_ports() {
    // Backscatter is SYN-ACKs from 202.229.120.98:80 to spoofed clients: it is
    // the server of every TCP flow, and no client attempt was ever seen.
    let cfg = Config::default();
    let capture = learn::read_flows(&data("scans/backscatter.trace"), &cfg, &|_| {}).unwrap();
    let victim = ip("202.229.120.98");
    let tcp: Vec<_> = capture.flows.iter().filter(|f| f.proto == 6).collect();
    assert!(tcp.len() > 1000);
    let mut with_synack = 0;
    for f in &tcp {
        assert!(!f.attempt_seen, "{}", f.describe());
        if f.history.contains('h') || f.history.contains('H') {
            with_synack += 1;
            assert_eq!(f.server.ip(), victim, "{} {}", f.describe(), f.history);
            assert!(
                matches!(f.state, learn::ConnState::OTH | learn::ConnState::RSTRH | learn::ConnState::SHR),
                "{} {}",
                f.describe(),
                f.history
            );
        } else {
            // A lone RST seen mid-stream: no handshake, so no roles to trust.
            assert_eq!(f.state, learn::ConnState::OTH, "{} {}", f.describe(), f.history);
        }
    }
    assert!(with_synack > 1000, "{with_synack}");
    // The ICMP errors quote the victim's SYN-ACKs, so they are not pinned on anyone.
    assert!(capture.flows.iter().all(|f| f.icmp_error.is_none()));
}

/// File, packets before any damage, and the damage (offset, reason fragment) if any.
type FormatCase = (&'static str, u64, Option<(u64, &'static str)>);

const FORMATS: &[FormatCase] = &[
    ("formats/ntp.pcap", 12, None),
    ("formats/modified-format.pcap", 1, None),
    ("formats/test001-be.pcapng", 4, None),
    ("formats/test001-le.pcapng", 4, None),
    ("formats/test010-le.pcapng", 4, None),
    ("formats/test016-be.pcapng", 4, None),
    ("formats/test016-le.pcapng", 4, None),
    ("formats/test017-be.pcapng", 0, None),
    ("formats/test017-le.pcapng", 0, None),
    ("formats/err-buffertoosmall.pcapng", 27, None),
    ("formats/wireshark_samples-test.pcapng", 5898, None),
    ("formats/err-eof.bin", 0, Some((0, "not a pcap or pcapng capture"))),
    ("formats/LICENSE-MIT", 0, Some((0, "not a pcap or pcapng capture"))),
];

#[test]
fn every_format_file_is_read_or_rejected_clearly() {
    // Packet counts agree with `capinfos` on the same files.
    for (file, packets, damage) in FORMATS {
        let mut frames = 0u64;
        let summary = reader::read_capture(&data(file), |_| frames += 1).unwrap();
        assert_eq!(summary.packets, *packets, "{file}");
        assert_eq!(frames, *packets, "{file}");
        match (damage, &summary.damage) {
            (None, None) => {}
            (Some((offset, why)), Some(d)) => {
                assert_eq!(d.offset, *offset, "{file}: {d}");
                assert!(d.reason.contains(why), "{file}: {d}");
            }
            (want, got) => panic!("{file}: expected damage {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn pcapng_byte_orders_read_the_same_packets() {
    let cfg = Config::default();
    for pair in [
        ["formats/test001-be.pcapng", "formats/test001-le.pcapng"],
        ["formats/test016-be.pcapng", "formats/test016-le.pcapng"],
    ] {
        let [be, le] = pair.map(|f| learn::read_flows(&data(f), &cfg, &|_| {}).unwrap());
        assert_eq!(be.read.packets, le.read.packets);
        assert_eq!(be.flows, le.flows, "{pair:?}");
        assert_eq!(be.read.linktypes, le.read.linktypes);
    }
}

#[test]
fn multi_section_pcapng_with_both_byte_orders_reads_every_section() {
    // Concatenated pcapng files are one file with several sections; here a
    // big-endian section follows a little-endian one.
    let mut bytes = std::fs::read(data("formats/test016-le.pcapng")).unwrap();
    bytes.extend(std::fs::read(data("formats/test001-be.pcapng")).unwrap());
    bytes.extend(std::fs::read(data("formats/test010-le.pcapng")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sections.pcapng");
    std::fs::write(&path, bytes).unwrap();
    let s = reader::read_capture(&path, |_| {}).unwrap();
    assert_eq!((s.sections, s.packets, s.damage.clone()), (3, 12, None), "{s:?}");
}

#[test]
fn interfaces_with_different_link_types_and_clocks_make_one_flow_table() {
    let mut w = PcapNg::section();
    w.interface(1, 65535, 6); // Ethernet, microseconds
    w.interface(113, 65535, 9); // Linux SLL, nanoseconds
    w.interface(276, 65535, 6); // Linux SLL2
    w.interface(101, 64, 6); // raw IP, 64-byte snaplen
    let (client, server) = ([10, 1, 0, 2], [10, 1, 0, 1]);
    // Ethernet + 802.1Q VLAN: the client's SYN.
    let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00];
    eth.extend(segment(client, server, 40000, 5432, "S", &[]));
    w.packet(0, 1_700_000_000_000_000, &eth, eth.len());
    // Linux SLL: the server's SYN-ACK, 1 ms later on a nanosecond clock.
    let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend(segment(server, client, 5432, 40000, "SA", &[]));
    w.packet(1, 1_700_000_000_001_000_000, &sll, sll.len());
    // Raw IP, cut by the snaplen after the TCP flags: the client's ACK with 1000 bytes.
    let mut ack = Vec::new();
    etherparse::PacketBuilder::ipv4(client, server, 64)
        .tcp(40000, 5432, 1001, 64000)
        .ack(1)
        .write(&mut ack, &[7u8; 1000])
        .unwrap();
    w.packet(3, 1_700_000_000_002_000, &ack[..40], ack.len());
    // Linux SLL2 + IPv6: a UDP query and its answer.
    let (c6, s6) = (
        "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
    );
    for (i, (src, dst, sport, dport)) in [(c6, s6, 50000u16, 53u16), (s6, c6, 53, 50000)].into_iter().enumerate() {
        let mut frame = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        etherparse::PacketBuilder::ipv6(src, dst, 64).udp(sport, dport).write(&mut frame, b"query").unwrap();
        w.packet(2, 1_700_000_000_003_000 + i as u64, &frame, frame.len());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.pcapng");
    std::fs::write(&path, &w.0).unwrap();

    let capture = learn::read_flows(&path, &Config::default(), &|_| {}).unwrap();
    assert_eq!(capture.read.linktypes, vec![1, 113, 276, 101]);
    assert_eq!((capture.read.packets, capture.read.damage.clone()), (5, None));
    let desc: Vec<String> =
        capture.flows.iter().map(|f| format!("{} {} {}", f.describe(), f.history, f.first_seen_us)).collect();
    assert_eq!(
        desc,
        vec![
            "tcp 10.1.0.2:40000 -> 10.1.0.1:5432 S1 ShD 1700000000000000".to_string(),
            "udp [fd00::2]:50000 -> [fd00::1]:53 SF Dd 1700000000003000".to_string(),
        ]
    );
    // Byte counts come from the IP header, not from the 64-byte snaplen.
    assert_eq!(capture.flows[0].orig.bytes, 40 + 40 + 1000);
    assert!(capture.flows[0].handshake_completed());
}

fn truncations_of(file: &str) {
    let bytes = std::fs::read(data(file)).unwrap();
    let full = reader::read_capture(&data(file), |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut");
    let mut last_packets = 0;
    for cut in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let s = reader::read_capture(&path, |_| {}).unwrap();
        // More file, never fewer packets; every packet read is a real one.
        assert!(s.packets >= last_packets && s.packets <= full.packets, "{file} cut at {cut}: {s:?}");
        last_packets = s.packets;
        if let Some(d) = &s.damage {
            assert!(d.offset <= cut as u64, "{file} cut at {cut}: {d}");
            assert!(!d.reason.is_empty());
        }
    }
    assert_eq!(last_packets, full.packets);
}

#[test]
fn truncated_captures_keep_the_packets_before_the_cut() {
    truncations_of("formats/ntp.pcap");
    truncations_of("formats/test001-be.pcapng");
    truncations_of("formats/test016-le.pcapng");
    // A cut in the middle of the 7th packet of ntp.pcap: 6 packets, then the offset of the 7th.
    let bytes = std::fs::read(data("formats/ntp.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    let mut offset = 24;
    for _ in 0..6 {
        let caplen = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap()) as usize;
        offset += 16 + caplen;
    }
    std::fs::write(&path, &bytes[..offset + 20]).unwrap();
    let s = reader::read_capture(&path, |_| {}).unwrap();
    assert_eq!(s.packets, 6);
    let d = s.damage.expect("damage reported");
    assert_eq!(d.offset, offset as u64, "{d}");
    assert!(d.reason.contains("truncated"), "{d}");
}

#[test]
fn a_record_longer_than_the_snapshot_length_is_a_damaged_length_not_a_cut() {
    // ntp.pcap with the 7th record's captured length set past the file's
    // snapshot length (and past its end): 6 packets, then the 7th's offset.
    let mut bytes = std::fs::read(data("formats/ntp.pcap")).unwrap();
    let snaplen = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    let mut offset = 24;
    for _ in 0..6 {
        let caplen = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap()) as usize;
        offset += 16 + caplen;
    }
    for lie in [snaplen + 1, 0x00ff_ffff, u32::MAX] {
        bytes[offset + 8..offset + 12].copy_from_slice(&lie.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lie.pcap");
        std::fs::write(&path, &bytes).unwrap();
        let s = reader::read_capture(&path, |_| {}).unwrap();
        assert_eq!(s.packets, 6, "{lie}");
        let d = s.damage.expect("damage reported");
        assert_eq!(d.offset, offset as u64, "{d}");
        assert!(
            d.reason.contains(&format!("record 7 claims {lie} captured bytes"))
                && d.reason.contains(&format!("snapshot length {snaplen}"))
                && d.reason.contains("length field damaged")
                && !d.reason.contains("truncated"),
            "{d}"
        );
    }
}

#[test]
fn corrupted_captures_never_panic() {
    // Seeded byte flips over real captures of both formats.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad");
    let cfg = Config::default();
    for file in ["formats/ntp.pcap", "formats/test016-be.pcapng", "scans/port_scan.pcap", "formats/test010-le.pcapng"] {
        let original = std::fs::read(data(file)).unwrap();
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            std::fs::write(&path, &bytes).unwrap();
            let capture = learn::read_flows(&path, &cfg, &|_| {}).unwrap();
            if let Some(d) = &capture.read.damage {
                assert!(d.offset <= bytes.len() as u64);
            }
            learn::analyze(capture.flows, &cfg, &[]);
        }
    }
}

fn example_policy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name)
}

#[test]
fn proposals_compile_and_drop_the_scanners() {
    let cfg = Config::default();
    for (file, scanner) in [
        ("scans/445_scan.pcap", "176.192.150.3"),
        ("scans/port_scan.pcap", "192.168.2.154"),
        ("scans/multiport_scan.pcap", "125.27.226.209"),
    ] {
        let (_, report) = learn_file(&data(file), &cfg);
        for policy in ["webserver.pf", "bastion.pf", "router.pf"] {
            let p =
                propose::propose(&example_policy(policy), &report, &cfg, file, &propose::Context::default()).unwrap();
            assert!(!p.diff.is_empty(), "{file} {policy}");
            assert_eq!(p.blocked, vec![ip(scanner)]);
            assert!(p.warnings.is_empty(), "{file} {policy}: {:?}", p.warnings);
            // The patched policy compiles, and the evaluator drops the scanner
            // even on a port the old policy let in.
            let after = ir::compile(&example_policy(policy).display().to_string(), &p.new_text).unwrap().ruleset;
            let before = ir::compile_file(&example_policy(policy)).unwrap().ruleset;
            let probe = |port| eval::Packet {
                hook: ir::Hook::Input,
                iif: None,
                oif: None,
                src: ip(scanner),
                dst: ip("192.0.2.1"),
                proto: 6,
                sport: Some(40000),
                dport: Some(port),
                icmp_type: None,
                ct_state: 1 << 3,
                mark: 0,
                ct_mark: 0,
                urpf_failed: false,
                dst_local: false,
            };
            let sets = eval::SetContents::new();
            assert_eq!(eval::decide(&after, &probe(22), &sets).verdict, ir::Action::Block, "{policy}");
            if policy == "webserver.pf" {
                assert_eq!(eval::decide(&before, &probe(80), &sets).verdict, ir::Action::Pass);
                assert_eq!(eval::decide(&after, &probe(80), &sets).verdict, ir::Action::Block);
            }
            // Only additions: the reviewer's policy is never rewritten.
            assert!(p.diff.lines().all(|l| !l.starts_with('-') || l.starts_with("---")), "{}", p.diff);
        }
    }
}

#[test]
fn pass_rules_cover_exactly_the_services_used() {
    // A real office capture: DNS and NTP to the LAN's servers are not in
    // webserver.pf; HTTP/HTTPS are, and the rest are ephemeral or unanswered.
    let cfg = Config::default();
    let (_, report) = learn_file(&data("formats/wireshark_samples-test.pcapng"), &cfg);
    let p = propose::propose(&example_policy("webserver.pf"), &report, &cfg, "sample", &propose::Context::default())
        .unwrap();
    assert_eq!(
        p.passes,
        vec!["pass in proto udp from 192.168.152.0/24 to port { 53, 123 } state new label \"learned\"".to_string()]
    );
    assert!(p.blocked.is_empty());
    let after = ir::compile("webserver.pf", &p.new_text).unwrap().ruleset;
    for s in &report.services {
        for c in &s.clients {
            let pkt = eval::Packet {
                hook: ir::Hook::Input,
                iif: None,
                oif: None,
                src: *c,
                dst: *s.servers.first().unwrap(),
                proto: s.proto,
                sport: Some(50000),
                dport: Some(s.port),
                icmp_type: None,
                ct_state: 1 << 3,
                mark: 0,
                ct_mark: 0,
                urpf_failed: false,
                dst_local: false,
            };
            assert_eq!(
                eval::decide(&after, &pkt, &eval::SetContents::new()).verdict,
                ir::Action::Pass,
                "{c} -> {}/{}",
                s.proto,
                s.port
            );
        }
        assert!(s.port < cfg.propose.ephemeral_from);
    }
    // Asked for it explicitly: any source.
    let mut any = cfg.clone();
    any.propose.any_source = true;
    let p = propose::propose(&example_policy("webserver.pf"), &report, &any, "sample", &propose::Context::default())
        .unwrap();
    assert_eq!(p.passes, vec!["pass in proto udp to port { 53, 123 } state new label \"learned\"".to_string()]);
}

#[test]
fn proposal_for_a_policy_without_input_rules_or_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bare.pf");
    std::fs::write(&policy, "policy input block").unwrap();
    let cfg = Config::default();
    let (_, scans) = learn_file(&data("scans/port_scan.pcap"), &cfg);
    let (_, office) = learn_file(&data("formats/wireshark_samples-test.pcapng"), &cfg);
    for report in [scans, office] {
        let p = propose::propose(&policy, &report, &cfg, "capture", &propose::Context::default()).unwrap();
        assert!(p.new_text.starts_with("policy input block\n"), "{}", p.new_text);
        ir::compile(&policy.display().to_string(), &p.new_text).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }
}

/// Learn ran at 2026-01-01T00:00:00Z: expiry dates count from there.
fn learned_on_new_year() -> propose::Context {
    propose::Context { now_us: 1_767_225_600_000_000, ..Default::default() }
}

#[test]
fn proposal_snapshot_port_scan() {
    let cfg = Config::default();
    let (_, report) = learn_file(&data("scans/port_scan.pcap"), &cfg);
    let p =
        propose::propose(Path::new("policies/webserver.pf"), &report, &cfg, "port_scan.pcap", &learned_on_new_year())
            .unwrap();
    insta::assert_snapshot!(p.diff);
}

#[test]
fn learning_again_after_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("webserver.pf");
    std::fs::copy(example_policy("webserver.pf"), &policy).unwrap();
    let bin = env!("CARGO_BIN_EXE_phantomc");
    let run = |capture: &str| {
        std::process::Command::new(bin)
            .arg("learn")
            .arg(data(capture))
            .arg("--policy")
            .arg(&policy)
            .arg("--write")
            .output()
            .unwrap()
    };
    let first = run("scans/445_scan.pcap");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let written = std::fs::read_to_string(&policy).unwrap();
    assert!(written.contains("    176.192.150.3 expires "), "{written}");
    let again = run("scans/445_scan.pcap");
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to propose"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), written);
    // A second scanner joins the existing set; no second block rule.
    let other = run("scans/port_scan.pcap");
    assert!(other.status.success(), "{}", String::from_utf8_lossy(&other.stderr));
    let both = std::fs::read_to_string(&policy).unwrap();
    assert!(both.contains("    192.168.2.154 expires ") && both.contains("    176.192.150.3 expires "), "{both}");
    assert_eq!(both.matches("block in from <learned_block>").count(), 1, "{both}");
    ir::compile_file(&policy).unwrap();
}

#[test]
fn damaged_capture_is_an_error_unless_allowed() {
    let bytes = std::fs::read(data("formats/ntp.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let bin = env!("CARGO_BIN_EXE_phantomc");
    let out = std::process::Command::new(bin)
        .arg("learn")
        .arg(&path)
        .arg("--policy")
        .arg(example_policy("webserver.pf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read past byte ") && err.contains("11 packets before it"), "{err}");
    let out = std::process::Command::new(bin)
        .arg("learn")
        .arg(&path)
        .arg("--policy")
        .arg(example_policy("webserver.pf"))
        .arg("--allow-damaged")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shipped_config_is_the_default_and_errors_name_the_line() {
    assert_eq!(Config::parse(learn::config::DEFAULT_YAML).unwrap(), Config::default());
    let err = Config::parse("scan:\n  vertical_ports: 5\n  horizontal: 3\n").unwrap_err();
    assert!(err.contains("line 3") && err.contains("horizontal"), "{err}");
    let err = Config::parse("trw:\n  theta0: 0.1\n  theta1: 0.5\n").unwrap_err();
    assert!(err.contains("theta1"), "{err}");
    let cfg = Config::parse("scan:\n  vertical_ports: 5\n").unwrap();
    assert_eq!(cfg.scan.vertical_ports, 5);
    assert_eq!(cfg.scan.horizontal_hosts, Config::default().scan.horizontal_hosts);
}

/// `learn --format json`: one document on stdout with the fields
/// docs/guide/learn.md documents, the same diff as the text form, and
/// nothing on stderr.
#[test]
fn learn_summary_json_has_the_documented_fields() {
    let run = |format: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_phantomc"))
            .arg("learn")
            .arg(data("scans/port_scan.pcap"))
            .arg("--policy")
            .arg(example_policy("webserver.pf"))
            .args(["--format", format])
            .output()
            .unwrap()
    };
    let (json, text) = (run("json"), run("text"));
    assert!(json.status.success() && text.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    assert!(json.stderr.is_empty(), "{}", String::from_utf8_lossy(&json.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    let keys = |v: &serde_json::Value| v.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
    let mut top = keys(&doc);
    top.sort();
    let want = [
        "destroyed",
        "entries",
        "findings",
        "floods",
        "flows",
        "input",
        "name",
        "not_decoded",
        "packets",
        "proposal",
        "ranking",
        "seconds",
        "sources",
        "spared",
        "warnings",
    ];
    assert_eq!(top, want);
    assert_eq!((doc["input"].as_str(), doc["name"].as_str()), (Some("capture"), Some("port_scan.pcap")));
    assert!(doc["packets"].as_u64().unwrap() > 0 && doc["flows"].as_u64().unwrap() > 0, "{doc}");
    let finding = &doc["findings"][0];
    let mut fk = keys(finding);
    fk.sort();
    assert_eq!(fk, ["compared", "confidence", "counts", "detector", "examples", "source", "threshold"]);
    assert_eq!(finding["source"], "192.168.2.154");
    let mut pk = keys(&doc["proposal"]);
    pk.sort();
    assert_eq!(pk, ["blocked", "diff", "limits", "passes", "policy", "written"]);
    assert_eq!(doc["proposal"]["blocked"], serde_json::json!(["192.168.2.154"]));
    assert_eq!(doc["proposal"]["written"], false);
    assert_eq!(doc["proposal"]["diff"].as_str(), Some(String::from_utf8_lossy(&text.stdout).as_ref()));
}

/// A classic pcap (raw IPv4) in which each of the admin network's 10.10.0.5,
/// 127.0.0.1, the server's own 198.51.100.1 (all spoofed) and a real scanner
/// 203.0.113.66 SYNs 300 ports of 198.51.100.1, each answered with a reset.
fn spoofed_scan_capture(path: &Path) {
    let server = [198, 51, 100, 1];
    let scanners: [[u8; 4]; 4] = [[10, 10, 0, 5], [127, 0, 0, 1], server, [203, 0, 113, 66]];
    let mut cap = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 101] {
        cap.extend_from_slice(&v.to_le_bytes());
    }
    let mut t_us = 1_700_000_000_000_000u64;
    let mut record = |cap: &mut Vec<u8>, frame: &[u8]| {
        t_us += 1000;
        for v in [(t_us / 1_000_000) as u32, (t_us % 1_000_000) as u32, frame.len() as u32, frame.len() as u32] {
            cap.extend_from_slice(&v.to_le_bytes());
        }
        cap.extend_from_slice(frame);
    };
    for src in scanners {
        for port in 1000..1300u16 {
            let mut syn = Vec::new();
            etherparse::PacketBuilder::ipv4(src, server, 64)
                .tcp(40000, port, 1, 1024)
                .syn()
                .write(&mut syn, &[])
                .unwrap();
            record(&mut cap, &syn);
            let mut rst = Vec::new();
            etherparse::PacketBuilder::ipv4(server, src, 64)
                .tcp(port, 40000, 0, 0)
                .rst()
                .ack(2)
                .write(&mut rst, &[])
                .unwrap();
            record(&mut cap, &rst);
        }
    }
    std::fs::write(path, &cap).unwrap();
}

/// `phantomc learn CAPTURE --policy POLICY --write --host 198.51.100.1`,
/// in `ns` when given; its stderr.
fn learn_write(ns: Option<&common::Netns>, capture: &Path, policy: &Path, state_dir: &Path) -> String {
    let args = [
        "learn",
        capture.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--write",
        "--host",
        "198.51.100.1",
        "--state-dir",
        state_dir.to_str().unwrap(),
    ];
    let out = match ns {
        Some(ns) => ns.phantomc(&args),
        None => std::process::Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().unwrap(),
    };
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    err
}

/// The written policy's lines that are not comments (the server's address
/// shows in the evidence comments, as the target).
fn assert_only_the_real_scanner_blocked(text: &str, err: &str) {
    let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(code.iter().any(|l| l.contains("203.0.113.66")), "the real scanner is blocked:\n{text}\n{err}");
    for spared in ["10.10.0.5", "127.0.0.1", "198.51.100.1"] {
        assert!(!code.iter().any(|l| l.contains(spared)), "{spared} is never proposed:\n{text}");
        assert!(err.contains(&format!("not proposed {spared} ")), "{spared}: the reason is said:\n{err}");
    }
}

/// Issue 13: spoofed scan packets from the admin network, loopback and the
/// server's own address never become proposed blocks; the real scanner
/// beside them is still blocked. Through `learn --write`.
#[test]
fn learn_write_never_blocks_spoofed_protected_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, policy) = (dir.path().join("spoofed.pcap"), dir.path().join("policy.pf"));
    spoofed_scan_capture(&capture);
    std::fs::copy(example_policy("webserver.pf"), &policy).unwrap();
    let err = learn_write(None, &capture, &policy, dir.path());
    assert_only_the_real_scanner_blocked(&std::fs::read_to_string(&policy).unwrap(), &err);
}

/// The same under `watch`, in namespaces: the admin's established session
/// to port 22 (an echo server) survives the reload of the learned policy,
/// and a new one from the admin network still connects.
#[test]
fn under_watch_the_learned_policy_keeps_the_admin_session() {
    use common::*;
    let lab = web_lab();
    let _ssh = echo_server(&lab.srv, 22);
    let dir = tempfile::tempdir().unwrap();
    let (capture, policy, health) =
        (dir.path().join("spoofed.pcap"), dir.path().join("policy.pf"), dir.path().join("health.json"));
    spoofed_scan_capture(&capture);
    std::fs::copy(example_policy("webserver.pf"), &policy).unwrap();
    let mut watcher = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.srv.name, env!("CARGO_BIN_EXE_phantomc"), "watch"])
        .arg(&policy)
        .arg("--state-file")
        .arg(&health)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--debounce-ms", "50"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("phantomc watch");
    let reloads = || phantomc::watch::read_health(&health).map_or(0, |h| h.reloads);
    eventually("first load", || reloads() == 1);
    let mut session = Conn::open(&lab.adm, "10.10.0.1", 22);
    assert!(session.round_trip(b"before"), "the admin session works");

    let err = learn_write(Some(&lab.srv), &capture, &policy, dir.path());
    assert_only_the_real_scanner_blocked(&std::fs::read_to_string(&policy).unwrap(), &err);
    eventually("the learned policy loaded", || reloads() == 2);
    let chain = stdout(&lab.srv.nft(&["list", "table", "inet", "phantomc"]));
    assert!(chain.contains("203.0.113.66"), "{chain}");
    assert!(session.round_trip(b"after the reload"), "the admin session survives");
    assert!(Conn::open(&lab.adm, "10.10.0.1", 22).round_trip(b"new"), "a new admin session connects");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(watcher.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(wait_exit(&mut watcher, std::time::Duration::from_secs(10)).code(), Some(0));
}

/// Every test capture, read keeping every flow and read summarizing flows
/// as they close (with one, two and four threads, each with its own shard
/// of the flow table): the same report and baseline
/// observations, and the summary kept fewer flows.
#[test]
fn summarized_reading_reports_what_keeping_every_flow_reports() {
    let cfg = Config::default();
    let mut files: Vec<PathBuf> = ["formats", "scans", "zeek"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(data(dir)).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| ["pcap", "pcapng", "trace"].contains(&e.to_str().unwrap())))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{files:?}");
    let mut kept_fewer = 0;
    for file in &files {
        let Ok(mut every) = learn::read_flows(file, &cfg, &|_| {}) else { continue };
        let count = every.flow_count();
        let (observed, report) = every.observe_and_analyze(&cfg, &[]);
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut summarized = pool.install(|| learn::read_summarized(file, &cfg, &|_| {})).unwrap();
            assert_eq!(summarized.flow_count(), count, "{}", file.display());
            kept_fewer += usize::from(summarized.flows.len() < count);
            let (observed_s, report_s) = pool.install(|| summarized.observe_and_analyze(&cfg, &[]));
            assert_eq!(observed_s, observed, "{}", file.display());
            assert_eq!(
                serde_json::to_string_pretty(&report_s).unwrap(),
                serde_json::to_string_pretty(&report).unwrap(),
                "{} with {threads} threads",
                file.display()
            );
        }
    }
    assert!(kept_fewer >= 10, "{kept_fewer}");
}

/// A capture read from a pipe (one thread reads it: a pipe can be read only
/// once) gives the report the same capture gives read from its file by
/// two threads, in chunks.
#[test]
fn a_capture_from_a_pipe_reports_what_its_file_reports() {
    let cfg = Config::default();
    let file = data("zeek/ftp-bruteforce.pcap");
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let report_of = |path: &Path| {
        let mut capture = two.install(|| learn::read_summarized(path, &cfg, &|_| {})).unwrap();
        let packets = capture.read.packets;
        let (_, report) = two.install(|| capture.observe_and_analyze(&cfg, &[]));
        (packets, serde_json::to_string_pretty(&report).unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("capture.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let (file, fifo) = (file.clone(), fifo.clone());
        std::thread::spawn(move || std::io::copy(&mut std::fs::File::open(file)?, &mut std::fs::File::create(fifo)?))
    };
    let from_pipe = report_of(&fifo);
    writer.join().unwrap().unwrap();
    let from_file = report_of(&file);
    assert!(from_file.0 > 500, "{}", from_file.0);
    assert_eq!(from_pipe, from_file);
    assert!(!from_file.1.contains("\"findings\": []"), "the guessing is found: {}", from_file.1);
}
