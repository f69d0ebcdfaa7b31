//! Adaptive mode sees what the policy drops: a scan of filtered ports
//! leaves no conntrack entry, but the default policy logs it to an NFLOG
//! group (`policy input block log group 7`, the only way a non-initial
//! network namespace can log packets), which `watch` reads and feeds to the
//! same detectors. The scanner is blocked; a web client is not.

mod common;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lan::Lan;
use common::*;

const SRV: &str = "10.79.0.1";
const CLIENT: &str = "10.79.0.10";
const SCANNER: &str = "10.79.0.66";

const POLICY: &str = "table phantomc\n\
    set attackers dynamic\n\
    policy input block log group 7\n\
    policy output pass\n\
    pass in on lo\n\
    block in from <attackers>\n\
    pass in state { established, related }\n\
    pass in proto tcp to port 80 state new\n\
    adaptive { mode block; set attackers; timeout 1m; }\n";

#[test]
fn a_scan_of_dropped_ports_is_seen_through_nflog_and_blocked() {
    require_tools();
    let lan = Lan::new(&[("srv", SRV), ("cli", CLIENT), ("scan", SCANNER)]);
    let srv = lan.host(0);
    let _web = Servers::start(srv, &[80], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("policy.pf"), POLICY).expect("policy");
    let log = File::create(path("watch.log")).expect("log");
    let mut watch = Command::new("ip")
        .args(["netns", "exec", &srv.name, env!("CARGO_BIN_EXE_phantomc"), "watch"])
        .arg(path("policy.pf"))
        .arg("--state-file")
        .arg(path("health.json"))
        .arg("--state-dir")
        .arg(path("state"))
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn phantomc watch");
    let status = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path("state/adaptive/status.json")).unwrap_or_default())
            .unwrap_or_default()
    };
    eventually("adaptive mode follows NFLOG group 7", || status()["nflog_groups"] == serde_json::json!([7]));
    assert_eq!(tcp_connect(lan.host(1), SRV, 80), Tcp::Connected, "the web client");

    // Twelve filtered ports: every SYN is dropped (and logged), none answered.
    let crossed = lan.host(2).run_in(|| {
        for port in 1000..1012u16 {
            let sa: std::net::SocketAddr = format!("{SRV}:{port}").parse().unwrap();
            let _ = std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(100));
        }
        Instant::now()
    });
    let alerts = || std::fs::read_to_string(path("state/adaptive/alerts.jsonl")).unwrap_or_default();
    eventually_within(Duration::from_secs(10), "the scanner is blocked", || {
        alerts().lines().any(|l| l.contains(SCANNER) && l.contains("\"action\":\"blocked\""))
    });
    let latency = crossed.elapsed();
    eprintln!("blocked within {latency:?} of the last probe");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    let line = alerts().lines().find(|l| l.contains(SCANNER)).expect("alert").to_string();
    assert!(line.contains("vertical-scan") || line.contains("trw-scan"), "{line}");
    let set = srv.nft(&["list", "set", "inet", "phantomc", "attackers_v4"]);
    assert!(stdout(&set).contains(SCANNER), "{}", stdout(&set));
    eventually("the dropped SYNs are counted", || status()["dropped_packets"].as_u64() >= Some(10));
    assert_eq!(tcp_connect(lan.host(1), SRV, 80), Tcp::Connected, "the web client still passes");
    assert!(!alerts().contains(CLIENT), "{}", alerts());

    let pid = libc::pid_t::try_from(watch.id()).expect("pid");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_exit(&mut watch, Duration::from_secs(10)).success());
}
