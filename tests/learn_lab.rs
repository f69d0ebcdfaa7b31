//! The learner end to end on a LAN of namespaces: benign clients (HTTP with
//! curl, DNS, a database session, one SSH login) and attackers (nmap SYN,
//! connect and UDP scans, an hping3 SYN flood, rapid SSH connections) talk to
//! one server while tcpdump captures there and `learn --conntrack --watch`
//! reads its conntrack table. Both must flag exactly the attackers and pass
//! exactly the services the benign clients used; the applied proposal keeps
//! the benign clients working and drops the attackers.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::lan::{curl, dns_lookup, dns_server, http_server, Capture, Lan};
use common::*;

const SERVER: &str = "10.77.0.1";
const SERVER_IP: [u8; 4] = [10, 77, 0, 1];
const SRV: usize = 0;
const WEB: usize = 1;
const DNS: usize = 2;
const DB: usize = 3;

/// The attackers: tag, address, and the detector that must name it from the
/// capture and from conntrack (which records no ICMP errors, so a UDP scan
/// is only many unanswered ports there).
const ATTACKERS: [(&str, &str, &str, &str); 5] = [
    ("syn", "10.77.0.101", "vertical-scan", "vertical-scan"),
    ("connect", "10.77.0.102", "vertical-scan", "vertical-scan"),
    ("flood", "10.77.0.103", "syn-flood", "syn-flood"),
    ("brute", "10.77.0.104", "brute-force", "brute-force"),
    ("udpscan", "10.77.0.105", "udp-scan", "vertical-scan"),
];

/// The server's policy before learning: nothing is open yet.
const BASELINE: &str = "# Lab server: closed until learned.
table phantomc

policy input   block
policy forward block
policy output  pass

pass  in on lo
block in state invalid
pass  in state { established, related }
pass  in proto icmp icmp-type echo-request
";

/// The pass rules the benign traffic calls for, as `learn` writes them.
const EXPECTED_PASSES: [&str; 2] = [
    "pass in proto tcp from 10.77.0.0/24 to port { 22, 80, 5432 } state new label \"learned\"",
    "pass in proto udp from 10.77.0.0/24 to port 53 state new label \"learned\"",
];

fn benign_round(lan: &Lan) {
    for _ in 0..3 {
        assert!(curl(lan.host(WEB), SERVER, 80), "web client gets the page");
        assert_eq!(dns_lookup(lan.host(DNS), SERVER, "www.lab.test"), Some(SERVER_IP), "DNS client resolves");
    }
    let mut session = Conn::open(lan.host(DB), SERVER, 5432);
    for _ in 0..3 {
        assert!(session.round_trip(b"SELECT * FROM orders;"), "database session works");
    }
    assert_eq!(tcp_connect(lan.host(DB), SERVER, 22), Tcp::Connected, "the admin logs in once");
}

fn attack(lan: &Lan) {
    let host = |tag: &str| lan.host(4 + ATTACKERS.iter().position(|a| a.0 == tag).expect("attacker"));
    let nmap = |tag: &str, args: &[&str]| {
        let mut full = vec!["nmap", "-Pn", "-n", "-T4"];
        full.extend_from_slice(args);
        full.push(SERVER);
        let out = host(tag).exec(&full);
        assert!(out.status.success(), "nmap {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let syn = nmap("syn", &["-sS", "-p", "1-1024"]);
    assert!(open(&syn, "22/tcp") && open(&syn, "80/tcp"), "{syn}");
    let connect = nmap("connect", &["-sT", "-p", "1-1024"]);
    assert!(open(&connect, "80/tcp"), "{connect}");
    let flood = host("flood").exec(&["hping3", "-S", "-p", "80", "-c", "3000", "-i", "u200", "-q", SERVER]);
    assert!(
        stderr(&flood).contains("3000 packets transmitted") || stdout(&flood).contains("3000 packets transmitted"),
        "{}",
        stderr(&flood)
    );
    let logins = host("brute").run_in(|| {
        (0..60)
            .filter(|i| {
                let Ok(mut s) = TcpStream::connect((SERVER, 22)) else { return false };
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut greeting = [0u8; 2];
                s.read_exact(&mut greeting).is_ok() && s.write_all(format!("root:guess{i}\n").as_bytes()).is_ok()
            })
            .count()
    });
    assert_eq!(logins, 60, "every brute-force attempt reached the server");
    let udp = nmap("udpscan", &["-sU", "--max-retries", "1", "-p", "1-200"]);
    assert!(open(&udp, "53/udp"), "{udp}");
}

/// nmap's report lists `port` as open.
fn open(report: &str, port: &str) -> bool {
    report.lines().any(|l| l.split_whitespace().take(2).eq([port, "open"]))
}

/// `flagged IP detector: ...` lines of learn's stderr, by source.
fn flagged(out: &Output) -> BTreeMap<String, Vec<String>> {
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stderr(out).lines() {
        let Some(rest) = line.strip_prefix("flagged ") else { continue };
        let mut words = rest.split_whitespace();
        let (ip, detector) = (words.next().unwrap(), words.next().unwrap().trim_end_matches(':'));
        by_source.entry(ip.to_string()).or_default().push(detector.to_string());
    }
    by_source
}

/// Learn's verdict must name every attacker and nobody else, and the policy
/// it wrote must pass exactly the services used and block every attacker.
fn assert_learned(what: &str, out: &Output, policy: &Path, from_conntrack: bool) {
    assert!(out.status.success(), "{what}: {}{}", stdout(out), stderr(out));
    let flagged = flagged(out);
    let attackers: Vec<&str> = ATTACKERS.iter().map(|a| a.1).collect();
    assert_eq!(
        flagged.keys().map(String::as_str).collect::<Vec<_>>(),
        attackers,
        "{what} flags exactly the attackers:\n{}",
        stderr(out)
    );
    for (_, ip, in_capture, in_conntrack) in ATTACKERS {
        let detector = if from_conntrack { in_conntrack } else { in_capture };
        assert!(flagged[ip].iter().any(|d| d == detector), "{what}: {ip} flagged by {detector}: {:?}", flagged[ip]);
    }
    let text = std::fs::read_to_string(policy).unwrap();
    let passes: Vec<&str> = text.lines().filter(|l| l.starts_with("pass") && !BASELINE.contains(l)).collect();
    assert_eq!(passes, EXPECTED_PASSES, "{what} passes exactly the services used:\n{text}");
    let blocked: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("    ")?.strip_suffix(',')).collect();
    assert_eq!(blocked, attackers, "{what} blocks exactly the attackers:\n{text}");
    assert!(text.contains("block in from <learned_block>"), "{text}");
}

fn phantomc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().expect("run phantomc")
}

#[test]
fn learns_a_lan_from_its_capture_and_its_conntrack_table() {
    require_tools();
    for tool in ["tcpdump", "nmap", "hping3", "curl", "conntrack"] {
        require_tool(tool);
    }
    let mut hosts = vec![("srv", SERVER), ("web", "10.77.0.11"), ("dns", "10.77.0.12"), ("db", "10.77.0.13")];
    hosts.extend(ATTACKERS.iter().map(|a| (a.0, a.1)));
    let lan = Lan::new(&hosts);
    let srv = lan.host(SRV);
    // Linux answers one closed UDP port per second by default; a UDP scan
    // against it would take minutes.
    srv.sysctl("net.ipv4.icmp_ratelimit=0");
    srv.track_connections();
    let _web = http_server(srv, 80);
    let _dns = dns_server(srv, 53, SERVER_IP);
    let _db = echo_server(srv, 5432);
    let _ssh = Servers::start(srv, &[22], &[]);

    let dir = tempfile::tempdir().expect("temp dir");
    let pcap_policy = dir.path().join("from-capture.pf");
    let ct_policy = dir.path().join("from-conntrack.pf");
    std::fs::write(&pcap_policy, BASELINE).unwrap();
    std::fs::write(&ct_policy, BASELINE).unwrap();
    let capture = Capture::start(srv, "eth0", &dir.path().join("lab.pcap"));
    let mut watcher = Watcher(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &srv.name,
                env!("CARGO_BIN_EXE_phantomc"),
                "learn",
                "--conntrack",
                "--watch",
                "10m",
                "--write",
                "--policy",
            ])
            .arg(&ct_policy)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start learn --conntrack"),
    );
    let mut watcher_err = BufReader::new(watcher.0.stderr.take().unwrap());
    let mut first = String::new();
    watcher_err.read_line(&mut first).unwrap();
    assert!(first.starts_with("collecting"), "{first}");

    // A database session that stays open across learning and applying.
    let mut long_session = Conn::open(lan.host(DB), SERVER, 5432);
    assert!(long_session.round_trip(b"BEGIN;"));
    benign_round(&lan);
    attack(&lan);
    benign_round(&lan);

    let tcpdump = capture.stop();
    eprintln!("tcpdump: {tcpdump}");
    // SAFETY: signals our own child (ip netns exec has exec'd phantomc).
    unsafe { libc::kill(watcher.0.id() as i32, libc::SIGINT) };
    let mut ct_out = Output { status: watcher.0.wait().unwrap(), stdout: Vec::new(), stderr: first.into_bytes() };
    watcher.0.stdout.take().unwrap().read_to_end(&mut ct_out.stdout).unwrap();
    watcher_err.read_to_end(&mut ct_out.stderr).unwrap();

    let pcap = dir.path().join("lab.pcap");
    let pcap_out = phantomc(&["learn", pcap.to_str().unwrap(), "--policy", pcap_policy.to_str().unwrap(), "--write"]);
    eprintln!("--- learn CAPTURE:\n{}{}", stderr(&pcap_out), stdout(&pcap_out));
    eprintln!("--- learn --conntrack:\n{}{}", stderr(&ct_out), stdout(&ct_out));
    assert_learned("learn CAPTURE", &pcap_out, &pcap_policy, false);
    assert_learned("learn --conntrack", &ct_out, &ct_policy, true);

    apply(srv, pcap_policy.to_str().unwrap());
    assert_applied(&lan);
    assert!(long_session.round_trip(b"COMMIT;"), "the open session survives the new policy");
    apply(srv, ct_policy.to_str().unwrap());
    assert_applied(&lan);
}

/// `learn --conntrack --watch` running in the server; killed if the test fails first.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Benign clients still work; every attacker's packets are dropped.
fn assert_applied(lan: &Lan) {
    assert!(curl(lan.host(WEB), SERVER, 80));
    assert_eq!(dns_lookup(lan.host(DNS), SERVER, "www.lab.test"), Some(SERVER_IP));
    assert!(Conn::open(lan.host(DB), SERVER, 5432).round_trip(b"SELECT 1;"));
    assert_eq!(tcp_connect(lan.host(DB), SERVER, 22), Tcp::Connected);
    std::thread::scope(|s| {
        for (i, (tag, ip, ..)) in ATTACKERS.iter().enumerate() {
            let host = lan.host(4 + i);
            s.spawn(move || {
                for port in [22, 80, 5432] {
                    assert_eq!(
                        tcp_connect(host, SERVER, port),
                        Tcp::TimedOut,
                        "{tag} ({ip}) to port {port} is dropped"
                    );
                }
                assert_eq!(dns_lookup(host, SERVER, "www.lab.test"), None, "{tag} ({ip}) gets no DNS answer");
                assert!(!ping(host, SERVER), "{tag} ({ip}) gets no ping answer");
            });
        }
    });
}
