//! `watch` in adaptive mode on a server namespace: a port scanner and an
//! SSH-like guesser are blocked within 2 s of crossing their detector's
//! threshold, steady benign clients never are, blocks expire, a restart
//! keeps the baseline, and `observe` mode blocks nothing.
//!
//! The benign clients run for the whole test, and for at least two minutes
//! in block mode before the restart.

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lan::Lan;
use common::*;

const SRV: &str = "10.77.0.1";
const BENIGN: [&str; 2] = ["10.77.0.10", "10.77.0.11"];
const SCANNER: &str = "10.77.0.66";
const GUESSER: &str = "10.77.0.77";

/// Conntrack only sees packets the ruleset lets in, so the scanned ports
/// are passed (closed ports answer with a reset); see docs/guide/adaptive.md.
fn policy(mode: &str) -> String {
    format!(
        "table phantomc\n\
         set attackers dynamic\n\
         policy input block\n\
         policy output pass\n\
         pass in on lo\n\
         block in from <attackers>\n\
         pass in state {{ established, related }}\n\
         pass in proto tcp to port 1-2000 state new\n\
         adaptive {{ mode {mode}; set attackers; thresholds \"thresholds.yaml\"; timeout 5s; max-timeout 1m; window 2m; }}\n"
    )
}

/// Brute force: 10 failed logins to one authentication service within 30 s.
/// How long the benign clients keep up their steady traffic in block mode.
const BENIGN_RUN: Duration = Duration::from_secs(120);

const THRESHOLDS: &str = "brute_force:\n  min_failures: 10\n  window_secs: 30\n";

struct Lab {
    lan: Lan,
    dir: tempfile::TempDir,
}

impl Lab {
    fn srv(&self) -> &Netns {
        self.lan.host(0)
    }

    fn host(&self, addr: &str) -> &Netns {
        let i = self.lan.hosts.iter().position(|(_, a)| a == addr).expect("host");
        self.lan.host(i)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn watch(&self) -> Child {
        let log = File::options().create(true).append(true).open(self.path("watch.log")).expect("log");
        Command::new("ip")
            .args(["netns", "exec", &self.srv().name, env!("CARGO_BIN_EXE_phantomc"), "watch"])
            .arg(self.path("policy.pf"))
            .arg("--state-file")
            .arg(self.path("health.json"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--debounce-ms", "50", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn phantomc watch")
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path("state/adaptive/alerts.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("alert line is JSON")).collect()
    }

    fn status(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("state/adaptive/status.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// The addresses in the attackers set now.
    fn blocked(&self) -> Vec<String> {
        let out = self.srv().nft(&["-j", "list", "set", "inet", "phantomc", "attackers_v4"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft json");
        let set = v["nftables"].as_array().expect("list").iter().find_map(|o| o.get("set")).expect("set").clone();
        set["elem"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["elem"]["val"].as_str().or(e.as_str()).map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("watch.log")).unwrap_or_default()
    }
}

fn stop(mut child: Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child (ip netns exec execs phantomc).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success(), "watch exits cleanly on SIGTERM");
}

/// Steady benign clients: each connects to the web port every 500 ms
/// (web clients are never brute force) until stopped; records failures.
fn benign_clients(lab: &Lab, stop: Arc<AtomicBool>) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Vec<String>>>) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let handles = BENIGN
        .iter()
        .map(|addr| {
            let (stop, failures, addr) = (stop.clone(), failures.clone(), addr.to_string());
            lab.host(&addr).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let sa: std::net::SocketAddr = format!("{SRV}:80").parse().unwrap();
                    if std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(800)).is_err() {
                        failures.lock().unwrap().push(addr.clone());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();
    (handles, failures)
}

/// Connects from `ns` to each port once; the time the last attempt ended.
fn connect_all(ns: &Netns, ports: impl Iterator<Item = u16> + Send + 'static) -> Instant {
    ns.run_in(move || {
        for port in ports {
            let sa: std::net::SocketAddr = format!("{SRV}:{port}").parse().unwrap();
            let _ = std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(300));
        }
        Instant::now()
    })
}

/// Waits for the alert of `source`; returns it and when it was seen.
fn wait_alert(lab: &Lab, source: &str, what: &str) -> (serde_json::Value, Instant) {
    let mut found = None;
    eventually_within(Duration::from_secs(10), what, || {
        found = lab.alerts().into_iter().find(|a| a["source"] == source);
        found.is_some()
    });
    (found.expect("alert"), Instant::now())
}

#[test]
fn adaptive_watch_blocks_attackers_spares_benign_expires_and_remembers() {
    require_tools();
    let lan =
        Lan::new(&[("srv", SRV), ("ben1", BENIGN[0]), ("ben2", BENIGN[1]), ("scan", SCANNER), ("guess", GUESSER)]);
    let lab = Lab { lan, dir: tempfile::tempdir().expect("tempdir") };
    let _servers = Servers::start(lab.srv(), &[22, 80], &[]);
    std::fs::write(lab.path("policy.pf"), policy("block")).unwrap();
    std::fs::write(lab.path("thresholds.yaml"), THRESHOLDS).unwrap();
    let watch = lab.watch();
    eventually("the ruleset is loaded and adaptive mode is on", || lab.status()["mode"] == "block");

    let stop_benign = Arc::new(AtomicBool::new(false));
    let (benign, failures) = benign_clients(&lab, stop_benign.clone());
    let benign_started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    // A vertical scan of closed ports: 10 ports cross the threshold.
    let crossed = connect_all(lab.host(SCANNER), 1000..1010);
    let (alert, seen) = wait_alert(&lab, SCANNER, "the scanner is blocked");
    let latency = seen.duration_since(crossed);
    assert_eq!(alert["action"], "blocked", "{alert}");
    eprintln!("scanner blocked {latency:?} after crossing the threshold");
    assert!(latency < Duration::from_secs(2), "scanner blocked {latency:?} after crossing the threshold");
    assert!(lab.blocked().contains(&SCANNER.to_string()), "{:?}", lab.blocked());
    assert_eq!(tcp_connect(lab.host(SCANNER), SRV, 80), Tcp::TimedOut, "the scanner's packets are dropped");
    assert_eq!((alert["timeout"].as_u64(), alert["offence"].as_u64()), (Some(5), Some(1)), "{alert}");
    assert!(alert["expires"].as_u64() > alert["time"].as_u64(), "{alert}");
    assert!(alert["baseline"].as_str().is_some_and(|b| b.contains("tcp/")), "baseline comparison: {alert}");

    // An SSH-like guesser: many short connections to port 22.
    let crossed = connect_all(lab.host(GUESSER), std::iter::repeat_n(22, 12));
    let (alert, seen) = wait_alert(&lab, GUESSER, "the guesser is blocked");
    let latency = seen.duration_since(crossed);
    assert_eq!(
        (alert["action"].as_str(), alert["detector"].as_str()),
        (Some("blocked"), Some("brute-force")),
        "{alert}"
    );
    eprintln!("guesser blocked {latency:?} after its 12th connection");
    assert!(latency < Duration::from_secs(2), "guesser blocked {latency:?} after its 12th connection");

    // Blocks expire (5 s); the scanner comes back and is blocked for twice as long.
    eventually_within(Duration::from_secs(12), "the scanner's block expires", || {
        !lab.blocked().contains(&SCANNER.to_string())
    });
    assert_eq!(tcp_connect(lab.host(SCANNER), SRV, 80), Tcp::Connected, "unblocked after expiry");
    connect_all(lab.host(SCANNER), 1100..1112);
    eventually_within(Duration::from_secs(10), "the repeat offender is blocked again", || {
        lab.alerts().iter().any(|a| a["source"] == SCANNER && a["offence"] == 2)
    });
    let again = lab.alerts().into_iter().find(|a| a["source"] == SCANNER && a["offence"] == 2).unwrap();
    assert_eq!(again["timeout"], 10, "escalated: {again}");

    // Two minutes of steady benign traffic in block mode: never flagged, never cut off.
    let ran = benign_started.elapsed();
    std::thread::sleep(BENIGN_RUN.saturating_sub(ran));
    let flagged: Vec<_> =
        lab.alerts().into_iter().filter(|a| BENIGN.contains(&a["source"].as_str().unwrap_or(""))).collect();
    assert!(flagged.is_empty(), "benign clients flagged in block mode: {flagged:?}");
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new(), "benign clients were never cut off in block mode");

    // Restart: the baseline learned from the benign clients is kept.
    eventually_within(Duration::from_secs(15), "the baseline learned from the benign clients", || {
        lab.status()["baseline_connections"].as_u64() > Some(0)
    });
    let learned = lab.status()["baseline_connections"].as_u64().unwrap_or(0);
    // The status (and /metrics' phantomc_adaptive_findings_total) counts the alerts by detector and action.
    let mut by_detector = serde_json::Map::new();
    for a in lab.alerts() {
        let (detector, action) = (a["detector"].as_str().expect("detector"), a["action"].as_str().expect("action"));
        let actions = by_detector.entry(detector).or_insert_with(|| serde_json::json!({}));
        actions[action] = serde_json::json!(actions[action].as_u64().unwrap_or(0) + 1);
    }
    assert!(by_detector["brute-force"]["blocked"].as_u64() >= Some(1), "{by_detector:?}");
    let by_detector = serde_json::Value::Object(by_detector);
    eventually("the status counts the alerts by detector", || lab.status()["findings_by_detector"] == by_detector);
    stop(watch);
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.path("state/adaptive/baseline.json")).expect("baseline saved"),
    )
    .expect("baseline JSON");
    assert!(saved["learned"].as_u64() >= Some(learned), "saved at stop: {saved}");
    let web = &saved["services"]["tcp/80"];
    assert!(web["connections"].as_u64() > Some(0), "learned from the benign clients: {saved}");
    assert_eq!(saved["services"].as_object().map(|s| s.len()), Some(1), "only the web service: {saved}");
    let clients: Vec<&str> = web["clients"].as_array().expect("clients").iter().filter_map(|c| c.as_str()).collect();
    assert!(BENIGN.iter().all(|b| clients.contains(b)), "{clients:?}");
    assert!(!clients.contains(&SCANNER) && !clients.contains(&GUESSER), "flagged sources teach nothing: {clients:?}");
    std::fs::write(lab.path("policy.pf"), policy("observe")).unwrap();
    let watch = lab.watch();
    eventually("restarted in observe mode", || lab.status()["mode"] == "observe");
    assert_eq!(lab.status()["baseline_connections"], saved["learned"], "the baseline is read back");

    // Observe mode reports and blocks nothing.
    let before = lab.alerts().len();
    eventually_within(Duration::from_secs(25), "all blocks expired", || lab.blocked().is_empty());
    connect_all(lab.host(GUESSER), std::iter::repeat_n(22, 12));
    eventually_within(Duration::from_secs(10), "the guesser is reported", || {
        lab.alerts()[before..].iter().any(|a| a["source"] == GUESSER)
    });
    let observed: Vec<_> = lab.alerts()[before..].to_vec();
    assert!(observed.iter().all(|a| a["action"] == "observed"), "{observed:?}");
    assert!(lab.blocked().is_empty(), "observe blocks nothing: {:?}", lab.blocked());

    // What observe mode did not block becomes a reviewable proposal.
    let state = lab.path("state");
    let proposals = || {
        let out = lab.srv().phantomc(&["proposals", "--state-dir", state.to_str().expect("utf-8"), "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect::<Vec<serde_json::Value>>()
    };
    eventually_within(Duration::from_secs(10), "the observed guesser is proposed", || {
        proposals().iter().any(|p| p["subject"] == GUESSER)
    });
    let proposal = proposals().into_iter().find(|p| p["subject"] == GUESSER).expect("proposal");
    let diff = proposal["diff"].as_str().expect("diff");
    // Learned entries end on their own: `ADDR expires DATE` (learn's block_expiry_days).
    assert!(diff.contains(&format!("+    {GUESSER} expires ")) && diff.contains("brute-force"), "{proposal}");
    assert!(proposals().iter().all(|p| p["subject"] != SCANNER), "blocked once or twice: not proposed yet");

    stop_benign.store(true, Ordering::Relaxed);
    for h in benign {
        h.join().expect("benign client");
    }
    stop(watch);
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new(), "benign clients were never cut off");
    let all = lab.alerts();
    let cli = lab.srv().phantomc(&["alerts", "--state-dir", state.to_str().expect("utf-8"), "--format", "json"]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert_eq!(stdout(&cli).lines().count(), all.len(), "`phantomc alerts` prints every alert");
    let text = stdout(&lab.srv().phantomc(&["alerts", "--state-dir", state.to_str().expect("utf-8")]));
    assert!(text.contains(&format!("blocked        {SCANNER}")) && text.contains("(offence 2)"), "{text}");
    assert!(all.iter().all(|a| !BENIGN.contains(&a["source"].as_str().unwrap_or(""))), "benign flagged: {all:?}");
    assert!(!lab.log().contains("\"level\":\"ERROR\""), "{}", lab.log());
}
