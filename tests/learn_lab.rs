//! The learner judged by what its policy does, on a LAN of namespaces.
//!
//! Benign hosts use one server the way real ones do: web clients with curl
//! and no keep-alive (2-10 requests/s), a reverse proxy without connection
//! pooling (different paths, health checks), an application opening a
//! database connection per query, a monitoring scraper, many users behind
//! one NAT address, an admin with a long-lived SSH session and a few more
//! logins, a DNS client. Attackers: SYN, connect and UDP scans, a slow scan
//! (`nmap -T2`), a scan split over three sources (6 ports each, under every
//! per-source threshold), an hping3 SYN flood,
//! a SYN flood from 300 spoofed sources, a ping flood, `nmap -sV`, and
//! password guessing like hydra with 1 and with 8 tasks.
//!
//! The SSH and database servers are stand-ins that have the flow-level
//! shape of sshd and PostgreSQL (see `fake_sshd`, `fake_postgres`): the
//! guessing fails logins the way sshd does (banner, key-exchange-sized
//! blobs, three refused passwords, hang-up), not with real SSH.
//!
//! tcpdump captures at the server while `learn --conntrack --watch` reads its
//! conntrack table. Both learned policies are applied in turn: every benign
//! host's services still work (0 false positives), every attacker is dropped,
//! and the spoofed flood gets a rate limit instead of 300 blocks.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::lan::*;
use common::*;

const SERVER: &str = "10.77.0.1";
const SERVER_IP: [u8; 4] = [10, 77, 0, 1];

/// Benign hosts: tag and address.
const BENIGN: [(&str, &str); 8] = [
    ("web1", "10.77.0.11"),
    ("web2", "10.77.0.12"),
    ("proxy", "10.77.0.13"),
    ("app", "10.77.0.14"),
    ("monitor", "10.77.0.15"),
    ("nat", "10.77.0.16"),
    ("admin", "10.77.0.17"),
    ("dns", "10.77.0.18"),
];

/// Attackers: tag, address, the label `learn` must give from the capture and
/// from conntrack (which records no ICMP errors, so a UDP scan is only many
/// unanswered ports there).
const ATTACKERS: [(&str, &str, &str, &str); 12] = [
    ("syn", "10.77.0.101", "vertical-scan", "vertical-scan"),
    ("connect", "10.77.0.102", "vertical-scan", "vertical-scan"),
    ("flood", "10.77.0.103", "syn-flood", "syn-flood"),
    ("hydra1", "10.77.0.104", "brute-force", "brute-force"),
    ("udpscan", "10.77.0.105", "udp-scan", "vertical-scan"),
    ("hydra8", "10.77.0.106", "brute-force", "brute-force"),
    ("slow", "10.77.0.107", "vertical-scan", "vertical-scan"),
    ("dist1", "10.77.0.108", "distributed-scan", "distributed-scan"),
    ("dist2", "10.77.0.109", "distributed-scan", "distributed-scan"),
    ("dist3", "10.77.0.110", "distributed-scan", "distributed-scan"),
    ("pingflood", "10.77.0.111", "icmp-flood", "icmp-flood"),
    ("probe", "10.77.0.112", "service-probe", "service-probe"),
];

/// Sends SYNs from spoofed addresses; its own address never shows.
const SPOOFER: (&str, &str) = ("spoofer", "10.77.0.113");

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
    "pass in proto tcp from 10.77.0.0/24 to port { 22, 80, 5432, 9100 } state new label \"learned\"",
    "pass in proto udp from 10.77.0.0/24 to port 53 state new label \"learned\"",
];

struct Lab {
    lan: Lan,
}

impl Lab {
    fn host(&self, tag: &str) -> &Netns {
        let i = self.lan.hosts.iter().position(|(_, a)| *a == addr_of(tag)).expect("host");
        self.lan.host(i)
    }
}

fn addr_of(tag: &str) -> String {
    let all = BENIGN.iter().copied().chain(ATTACKERS.iter().map(|a| (a.0, a.1))).chain([SPOOFER, ("srv", SERVER)]);
    all.into_iter().find(|(t, _)| *t == tag).expect("known tag").1.to_string()
}

/// Benign traffic running in the background until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u32>>,
}

impl Load {
    fn start(lab: &Lab) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut every = |ns: &Netns, pause_ms: u64, work: fn(u32) -> bool| {
            let stop = stop.clone();
            threads.push(ns.spawn(move || {
                let mut failures = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    failures += u32::from(!work(i));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
                failures
            }));
        };
        // curl without keep-alive, 2-10 requests/s.
        every(lab.host("web1"), 250, |_| curl_here(SERVER, 80));
        every(lab.host("web2"), 100, |_| curl_here(SERVER, 80));
        // A reverse proxy: each request on a new connection, different paths.
        every(lab.host("proxy"), 100, |i| http_get_here(SERVER, 80, &format!("/api/items/{}", i * 7919 % 1000)));
        every(lab.host("proxy"), 1000, |_| http_get_here(SERVER, 80, "/health"));
        // An application without a connection pool: twice a second.
        every(lab.host("app"), 500, |_| pg_query_here(SERVER, 5432));
        every(lab.host("monitor"), 500, |_| http_get_here(SERVER, 9100, "/metrics"));
        // Many users behind one NAT address.
        for user in 0..4u32 {
            every(lab.host("nat"), 150 + u64::from(user) * 40, |i| {
                http_get_here(SERVER, 80, &format!("/shop/{}/page{}.html", i % 13, i % 5))
            });
        }
        every(lab.host("dns"), 300, |_| dns_lookup_here(SERVER, "www.lab.test").is_some());
        Load { stop, threads }
    }

    /// Stops the load; how many requests failed.
    fn stop(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().expect("load thread")).sum()
    }
}

fn curl_here(addr: &str, port: u16) -> bool {
    let out = Command::new("curl").args(["-s", "--max-time", "2", &format!("http://{addr}:{port}/")]).output();
    out.is_ok_and(|o| o.status.success() && o.stdout == b"hello")
}

/// nmap in an attacker's namespace; its report.
fn nmap(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["nmap", "-Pn", "-n"];
    full.extend_from_slice(args);
    full.push(SERVER);
    let out = ns.exec(&full);
    assert!(out.status.success(), "nmap {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Password guessing like hydra: `tasks` parallel workers, each opening
/// `sessions` sessions of three wrong passwords.
fn guess_passwords(ns: &Netns, tasks: usize, sessions: usize) -> usize {
    let words = ["root:123456", "root:password", "root:admin", "root:letmein", "root:qwerty", "root:toor"];
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..tasks)
            .map(|t| {
                s.spawn(move || {
                    (0..sessions)
                        .filter(|i| {
                            let w = (t + i) % 4;
                            SshSession::login(ns, SERVER, &words[w..w + 3]).is_none()
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("guesser")).sum()
    })
}

fn attack(lab: &Lab) {
    let started = std::time::Instant::now();
    let step = |what: &str| eprintln!("{:>6.1}s {what}", started.elapsed().as_secs_f64());
    let host = |tag: &str| lab.host(tag);
    std::thread::scope(|s| {
        // The slow ones run beside the rest.
        let slow = s.spawn(|| nmap(host("slow"), &["-sS", "-T2", "-p", "1-12"]));
        let probe = s.spawn(|| nmap(host("probe"), &["-sV", "-p", "80"]));
        step("start");
        let syn = nmap(host("syn"), &["-T4", "-sS", "-p", "1-1024"]);
        assert!(open(&syn, "22/tcp") && open(&syn, "80/tcp"), "{syn}");
        let connect = nmap(host("connect"), &["-T4", "-sT", "-p", "1-1024"]);
        assert!(open(&connect, "80/tcp"), "{connect}");
        // Each of three sources probes 6 closed ports: too few to flag alone.
        for (tag, ports) in [("dist1", "1000-1005"), ("dist2", "1006-1011"), ("dist3", "1012-1017")] {
            nmap(host(tag), &["-T4", "-sT", "-p", ports]);
        }
        step("scans");
        let flood = host("flood").exec(&["hping3", "-S", "-p", "80", "-c", "3000", "-i", "u200", "-q", SERVER]);
        assert!(format!("{}{}", stdout(&flood), stderr(&flood)).contains("3000 packets transmitted"));
        assert_eq!(spoofed_syns(host(SPOOFER.0), SERVER_IP, 80, 600), 600, "spoofed SYNs sent");
        step("floods");
        assert_eq!(guess_passwords(host("hydra1"), 1, 12), 12, "hydra -t 1: every session fails");
        assert_eq!(guess_passwords(host("hydra8"), 8, 3), 24, "hydra -t 8: every session fails");
        step("guessing");
        let ping = host("pingflood").exec(&["ping", "-f", "-c", "500", "-q", SERVER]);
        assert!(stdout(&ping).contains("500 packets transmitted"), "{}", stdout(&ping));
        let udp = nmap(host("udpscan"), &["-T4", "-sU", "--max-retries", "1", "-p", "1-200"]);
        assert!(open(&udp, "53/udp"), "{udp}");
        step("udp scan");
        slow.join().expect("slow scan");
        let probe = probe.join().expect("probe");
        assert!(probe.contains("80/tcp open  http"), "{probe}");
        step("slow scan and probe");
    });
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

/// Learn's verdict names every attacker with its one label and nobody else;
/// the policy it wrote passes exactly the services used, blocks exactly the
/// attackers and rate-limits the spoofed flood.
fn assert_learned(what: &str, out: &Output, policy: &Path, from_conntrack: bool) {
    assert!(out.status.success(), "{what}: {}{}", stdout(out), stderr(out));
    let flagged = flagged(out);
    let mut attackers: Vec<&str> = ATTACKERS.iter().map(|a| a.1).collect();
    attackers.sort();
    assert_eq!(
        flagged.keys().map(String::as_str).collect::<Vec<_>>(),
        attackers,
        "{what} flags exactly the attackers:\n{}",
        stderr(out)
    );
    for (tag, ip, in_capture, in_conntrack) in ATTACKERS {
        let label = if from_conntrack { in_conntrack } else { in_capture };
        assert_eq!(flagged[ip], [label], "{what}: {tag} ({ip}) has one label");
    }
    assert!(
        stderr(out).contains("flood on tcp 10.77.0.1:80: "),
        "{what}: the spoofed flood is named:\n{}",
        stderr(out)
    );
    let text = std::fs::read_to_string(policy).unwrap();
    let passes: Vec<&str> =
        text.lines().filter(|l| l.starts_with("pass in") && l.contains("from 10.77.0.0/24 to port {")).collect();
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("pass in proto udp")).collect();
    assert_eq!([passes, udp].concat(), EXPECTED_PASSES, "{what} passes exactly the services used:\n{text}");
    let entries: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("    ")?.strip_suffix(',')).collect();
    // Each learned block ends: `ADDRESS expires DATE` (the kernel removes it then).
    let blocked: Vec<&str> = entries.iter().filter_map(|e| Some(e.split_once(" expires ")?.0)).collect();
    assert_eq!(blocked.len(), entries.len(), "{what}: every learned entry expires: {entries:?}");
    let mut sorted = blocked.clone();
    sorted.sort();
    assert_eq!(sorted, attackers, "{what} blocks exactly the attackers:\n{text}");
    assert!(text.contains("block in from <learned_block>"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("pass  in proto tcp to port 80 state new limit ")),
        "{what} rate-limits the flooded service:\n{text}"
    );
    assert!(!text.contains("10.77.64."), "{what}: no spoofed address is blocked:\n{text}");
    assert!(text.contains("tcp_syncookies=1") && text.contains("nft `synproxy`"), "{what}: SYN flood advice:\n{text}");
}

fn phantomc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().expect("run phantomc")
}

#[test]
fn learned_policies_drop_every_attacker_and_no_benign_host() {
    require_tools();
    for tool in ["tcpdump", "nmap", "hping3", "curl", "conntrack"] {
        require_tool(tool);
    }
    let mut hosts = vec![("srv", SERVER)];
    hosts.extend(BENIGN);
    hosts.extend(ATTACKERS.iter().map(|a| (a.0, a.1)));
    hosts.push(SPOOFER);
    let lab = Lab { lan: Lan::new(&hosts) };
    let srv = lab.host("srv");
    // Linux answers one closed UDP port per second by default; a UDP scan
    // against it would take minutes.
    srv.sysctl("net.ipv4.icmp_ratelimit=0");
    srv.track_connections();
    let _web = http_server(srv, 80);
    let _metrics = http_server(srv, 9100);
    let _dns = dns_server(srv, 53, SERVER_IP);
    let _db = fake_postgres(srv, 5432);
    let _ssh = fake_sshd(srv, 22);

    let dir = tempfile::tempdir().expect("temp dir");
    let pcap_policy = dir.path().join("from-capture.pf");
    let ct_policy = dir.path().join("from-conntrack.pf");
    std::fs::write(&pcap_policy, BASELINE).unwrap();
    std::fs::write(&ct_policy, BASELINE).unwrap();
    let capture = Capture::start(srv, "eth0", &dir.path().join("lab.pcap"));
    let mut watcher = Watcher(
        Command::new("ip")
            .args(["netns", "exec", &srv.name, env!("CARGO_BIN_EXE_phantomc"), "learn", "--conntrack"])
            .args(["--watch", "10m", "--write", "--dump-flows"])
            .arg(dir.path().join("ct-flows.jsonl"))
            .arg("--policy")
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

    // The admin's SSH session stays open across learning and applying.
    let mut admin = SshSession::login(lab.host("admin"), SERVER, &[SSH_PASSWORD]).expect("admin logs in");
    assert!(admin.run("uptime"));
    let load = Load::start(&lab);
    std::thread::sleep(Duration::from_secs(2));
    attack(&lab);
    for _ in 0..2 {
        assert!(SshSession::login(lab.host("admin"), SERVER, &["admin:typo", SSH_PASSWORD]).is_some());
        assert!(admin.run("tail -n 20 /var/log/syslog"));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(load.stop(), 0, "benign traffic worked throughout");

    let tcpdump = capture.stop();
    eprintln!("tcpdump: {tcpdump}");
    // SAFETY: signals our own child (ip netns exec has exec'd phantomc).
    unsafe { libc::kill(watcher.0.id() as i32, libc::SIGINT) };
    let mut ct_out = Output { status: watcher.0.wait().unwrap(), stdout: Vec::new(), stderr: first.into_bytes() };
    watcher.0.stdout.take().unwrap().read_to_end(&mut ct_out.stdout).unwrap();
    watcher_err.read_to_end(&mut ct_out.stderr).unwrap();

    let pcap = dir.path().join("lab.pcap");
    if let Ok(keep) = std::env::var("PHANTOMC_LAB_KEEP") {
        // benches/learn_quality.sh scores this capture and these flows.
        std::fs::copy(&pcap, format!("{keep}/lab.pcap")).expect("keep the lab capture");
        std::fs::copy(dir.path().join("ct-flows.jsonl"), format!("{keep}/lab-conntrack.jsonl")).expect("keep flows");
    }
    let pcap_out = phantomc(&["learn", pcap.to_str().unwrap(), "--policy", pcap_policy.to_str().unwrap(), "--write"]);
    eprintln!("--- learn CAPTURE:\n{}{}", stderr(&pcap_out), stdout(&pcap_out));
    eprintln!("--- learn --conntrack:\n{}{}", stderr(&ct_out), stdout(&ct_out));
    assert_learned("learn CAPTURE", &pcap_out, &pcap_policy, false);
    assert_learned("learn --conntrack", &ct_out, &ct_policy, true);

    for policy in [&pcap_policy, &ct_policy] {
        apply(srv, policy.to_str().unwrap());
        assert_benign_served(&lab);
        assert!(admin.run("ls"), "the admin's open session survives {}", policy.display());
        assert_attackers_dropped(&lab);
    }
}

/// `learn --conntrack --watch` running in the server; killed if the test fails first.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every benign host's own services still work.
fn assert_benign_served(lab: &Lab) {
    assert!(curl(lab.host("web1"), SERVER, 80), "web1");
    assert!(curl(lab.host("web2"), SERVER, 80), "web2");
    assert!(lab.host("proxy").run_in(|| http_get_here(SERVER, 80, "/api/items/1")), "proxy");
    assert!(lab.host("proxy").run_in(|| http_get_here(SERVER, 80, "/health")), "proxy health check");
    assert!(pg_query(lab.host("app"), SERVER, 5432), "app's query");
    assert!(lab.host("monitor").run_in(|| http_get_here(SERVER, 9100, "/metrics")), "scrape");
    assert!(lab.host("nat").run_in(|| http_get_here(SERVER, 80, "/shop/1/page2.html")), "NAT users");
    assert!(SshSession::login(lab.host("admin"), SERVER, &[SSH_PASSWORD]).is_some(), "admin logs in");
    assert_eq!(dns_lookup(lab.host("dns"), SERVER, "www.lab.test"), Some(SERVER_IP), "DNS");
}

/// Every attacker's packets are dropped, on every service and ping.
fn assert_attackers_dropped(lab: &Lab) {
    std::thread::scope(|s| {
        for (tag, ip, ..) in ATTACKERS {
            let host = lab.host(tag);
            s.spawn(move || {
                for port in [22, 80, 5432, 9100] {
                    assert!(!connects(host, SERVER, port), "{tag} ({ip}) to port {port} is dropped");
                }
                assert_eq!(dns_lookup(host, SERVER, "www.lab.test"), None, "{tag} ({ip}) gets no DNS answer");
                assert!(!ping(host, SERVER), "{tag} ({ip}) gets no ping answer");
            });
        }
    });
}
