//! Kernel tests of safe apply: confirm-or-rollback (also when the applying
//! process is killed), the lockout check, and `panic`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A policy that drops the public web traffic webserver.pf allows.
const CLOSED: &str = "policy input block\npass in on lo\npass in state { established, related }\npass in proto tcp from 10.10.0.0/24 to port 22\n";

fn write_policy(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("phantomc-safety-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.pf"));
    std::fs::write(&path, text).expect("write policy");
    path.to_string_lossy().into_owned()
}

fn spawn_phantomc(ns: &Netns, args: &[&str]) -> Child {
    spawn_phantomc_with(ns, args, &[])
}

fn spawn_phantomc_with(ns: &Netns, args: &[&str], env: &[(&str, &std::path::Path)]) -> Child {
    ns.command(&[env!("CARGO_BIN_EXE_phantomc")])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn phantomc")
}

/// Waits (bounded) until the live table's input chain mentions `marker`.
fn wait_live(ns: &Netns, marker: &str) {
    eventually(&format!("ruleset with {marker} live"), || {
        stdout(&ns.nft(&["list", "table", "inet", "phantomc"])).contains(marker)
    });
}

/// A web lab running webserver.pf, with `apply --confirm` of a closed policy
/// pending (its rules are live).
fn pending_closed_apply(name: &str, timeout: &str) -> (WebLab, Servers, Child, String) {
    let lab = web_lab();
    let servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    let closed = write_policy(name, CLOSED);
    let child = spawn_phantomc(&lab.srv, &["apply", "--confirm", "--timeout", timeout, &closed]);
    wait_live(&lab.srv, &format!("{name}.pf:4"));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "the new policy is enforced while pending");
    (lab, servers, child, closed)
}

fn in_sync_with(ns: &Netns, policy: &str) -> bool {
    ns.phantomc(&["status", policy]).status.success()
}

#[test]
fn unconfirmed_apply_rolls_back_after_the_timeout() {
    let (lab, _servers, mut child, _) = pending_closed_apply("closed-timeout", "3s");

    let status = wait_exit(&mut child, Duration::from_secs(15));
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(4), "rolled back: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("not confirmed in time"), "{}", stdout(&out));
    assert!(in_sync_with(&lab.srv, WEB), "the old table is back exactly");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "the old policy is enforced again");
}

/// The run-time entries of the live blocklist (address, reason, timeout).
fn blocked_entries(ns: &Netns) -> Vec<(String, Option<String>, Option<u64>)> {
    let out = ns.phantomc(&["blocked", WEB, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let entries = doc["blocked"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let address = e["address"].as_str().expect("address").to_string();
            (address, e["reason"].as_str().map(str::to_string), e["timeout"].as_u64())
        })
        .collect()
}

#[test]
fn a_rollback_after_the_confirm_timeout_restores_the_rules_and_the_run_time_entries() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    let out = lab.srv.phantomc(&["block", "198.51.100.2", "--reason", "scanner", "--timeout", "2h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.srv.phantomc(&["block", "2001:db8:1::2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = blocked_entries(&lab.srv);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "the blocked client is dropped");

    // The closed policy has no blocklist: while it is pending, the entries are gone.
    let closed = write_policy("closed-entries", CLOSED);
    let mut child = spawn_phantomc(&lab.srv, &["apply", "--confirm", "--timeout", "3s", &closed]);
    wait_live(&lab.srv, "closed-entries.pf:4");
    assert!(!stdout(&lab.srv.nft(&["list", "table", "inet", "phantomc"])).contains("198.51.100.2"));

    let status = wait_exit(&mut child, Duration::from_secs(15));
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(4), "rolled back: {}{}", stdout(&out), stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "the old rules are back exactly");
    assert_eq!(blocked_entries(&lab.srv), before, "the run-time entries are back, reasons and timeouts kept");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "and enforced again");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "the rest of the old policy too");
}

#[test]
fn rollback_still_happens_when_the_applying_process_is_killed() {
    let (lab, _servers, mut child, _) = pending_closed_apply("closed-kill", "2s");
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    let _ = child.wait();
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "still the new policy right after the kill");

    eventually_within(Duration::from_secs(10), "rollback by the detached guard", || in_sync_with(&lab.srv, WEB));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "old policy enforced again");
}

#[test]
fn a_second_apply_confirm_is_refused_while_one_is_pending() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    let run_dir = tempfile::tempdir().expect("run dir");
    let env = [("PHANTOMC_RUN_DIR", run_dir.path())];
    let closed = write_policy("closed-first", CLOSED);
    let mut first = spawn_phantomc_with(&lab.srv, &["apply", "--confirm", "--timeout", "3s", &closed], &env);
    wait_live(&lab.srv, "closed-first.pf:4");

    let other = write_policy("closed-second", CLOSED);
    let second = spawn_phantomc_with(&lab.srv, &["apply", "--confirm", "--timeout", "3s", &other], &env);
    let out = second.wait_with_output().expect("second apply");
    assert_eq!(out.status.code(), Some(2), "the second apply --confirm is refused: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("another `apply --confirm` of table inet phantomc is waiting"), "{err}");
    assert!(err.contains(&run_dir.path().display().to_string()), "the message names the pending record: {err}");
    assert!(!stdout(&out).contains("confirmed"), "{}", stdout(&out));
    assert!(in_sync_with(&lab.srv, &closed), "the second policy was not loaded");

    let status = wait_exit(&mut first, Duration::from_secs(15));
    let out = first.wait_with_output().expect("first apply");
    assert_eq!(status.code(), Some(4), "the first, unconfirmed, rolls back: {}{}", stdout(&out), stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "the table before both applies is back");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
}

#[test]
fn a_confirmed_policy_stays() {
    // Confirmed on the terminal.
    let (lab, _servers, mut child, closed) = pending_closed_apply("closed-yes", "2s");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"y\n").expect("type y");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "confirmed apply exits 0");
    std::thread::sleep(Duration::from_secs(3)); // past the deadline
    assert!(in_sync_with(&lab.srv, &closed), "the confirmed policy stays");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut);

    // Confirmed from another shell with `phantomc confirm`.
    let mut child = spawn_phantomc(&lab.srv, &["apply", "--confirm", "--timeout", "2s", WEB]);
    wait_live(&lab.srv, "webserver.pf:20");
    let out = lab.srv.phantomc(&["confirm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(in_sync_with(&lab.srv, WEB));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);

    let out = lab.srv.phantomc(&["confirm", "--table", "other"]);
    assert_eq!(out.status.code(), Some(2), "nothing pending for another table");
}

/// A web lab running webserver.pf (web and ssh servers) with an open ssh
/// session from the admin host.
fn web_lab_with_an_ssh_session() -> (WebLab, [Servers; 2], Conn) {
    let lab = web_lab();
    let servers = [echo_server(&lab.srv, 22), Servers::start(&lab.srv, &[80], &[])];
    apply(&lab.srv, WEB);
    let mut ssh = Conn::open(&lab.adm, "10.10.0.1", 22);
    assert!(ssh.round_trip(b"before"));
    (lab, servers, ssh)
}

#[test]
fn panic_keeps_the_operator_session_and_drops_everything_else() {
    let (lab, _servers, mut ssh) = web_lab_with_an_ssh_session();

    let ssh_connection = format!("10.10.0.2 {} 10.10.0.1 22", ssh.local_port());
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.srv.name, env!("CARGO_BIN_EXE_phantomc"), "panic"])
        .env("SSH_CONNECTION", &ssh_connection)
        .output()
        .expect("panic");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("drops everything except"), "{}", stdout(&out));

    assert!(ssh.round_trip(b"after panic"), "the operator's session survives");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "new connections from elsewhere drop");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 22), Tcp::TimedOut, "even a second ssh from the admin host");
    assert!(!ping(&lab.publ, "198.51.100.1"));
    assert!(ssh.round_trip(b"still alive"));

    // At a console: no session to keep, so loopback only, said plainly.
    let out = lab.srv.exec(&["env", "-u", "SSH_CONNECTION", env!("CARGO_BIN_EXE_phantomc"), "panic"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("drops everything except loopback (no SSH session to keep"), "{}", stdout(&out));
    assert!(!ssh.round_trip(b"cut"), "the session is no longer kept");
    let lo = lab.srv.exec(&["ping", "-c1", "-W1", "127.0.0.1"]);
    assert!(lo.status.success(), "loopback still works");
}

#[test]
fn a_policy_that_would_cut_the_operator_session_is_refused() {
    let lab = web_lab();
    let _echo = echo_server(&lab.srv, 22);
    apply(&lab.srv, WEB);
    let mut ssh = Conn::open(&lab.adm, "10.10.0.1", 22);
    assert!(ssh.round_trip(b"hello"));
    let keep = format!("10.10.0.2:{} -> 10.10.0.1:22", ssh.local_port());

    // Forgets `pass in state established`: the session's packets would hit the default drop.
    let cut = write_policy("cut", "policy input block\npass in on lo\npass in proto tcp to port 80\n");
    let out = lab.srv.phantomc(&["apply", "--keep", &keep, &cut]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("would cut off your session tcp 10.10.0.2:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("would cut off new logins from 10.10.0.2 to port 22"), "{}", stderr(&out));
    assert!(stderr(&out).contains("the default input policy drops its incoming packets"), "{}", stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "nothing was applied");
    assert!(ssh.round_trip(b"still here"));

    // The same session found through $SSH_CONNECTION, and a rule that drops it.
    let cut2 = write_policy("cut2", "block in from 10.10.0.0/24\npass in state established\n");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.srv.name, env!("CARGO_BIN_EXE_phantomc"), "apply", &cut2])
        .env("SSH_CONNECTION", format!("10.10.0.2 {} 10.10.0.1 22", ssh.local_port()))
        .output()
        .expect("apply");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rule cut2.pf:1 drops its incoming packets"), "{}", stderr(&out));
    assert!(stderr(&out).contains("cut2.pf:1:1"), "points at the rule: {}", stderr(&out));

    // A policy that keeps it passes the check.
    let out = lab.srv.phantomc(&["apply", "--keep", &keep, WEB]);
    assert!(out.status.success() && stdout(&out).contains("checked: the new policy keeps"), "{}", stdout(&out));

    // The check agrees with the kernel: forced, the policy does cut the session.
    let out = lab.srv.phantomc(&["apply", "--force", "--keep", &keep, &cut]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!ssh.round_trip(b"cut"), "the forced policy drops the session, as predicted");
}

/// A policy that passes the SSH port from anywhere passes loopback's packets
/// to it but drops those to the host's other local services: the check
/// refuses it (it probes loopback beyond the management port), and forced,
/// the kernel does what the check predicted.
#[test]
fn loopback_to_other_local_services_is_checked_not_only_the_ssh_port() {
    let (lab, _servers, mut ssh) = web_lab_with_an_ssh_session();
    let _db = echo_server(&lab.srv, 5432);
    assert!(Conn::open(&lab.srv, "127.0.0.1", 5432).round_trip(b"db"), "a local database, before");
    let keep = format!("10.10.0.2:{} -> 10.10.0.1:22", ssh.local_port());
    let ssh_only = write_policy(
        "ssh-only",
        "policy input block\npass in state { established, related }\npass in proto tcp to port 22\n",
    );
    let out = lab.srv.phantomc(&["apply", "--keep", &keep, &ssh_only]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("would cut off loopback"), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:5432 new in on lo"), "{}", stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "nothing was applied");

    let out = lab.srv.phantomc(&["apply", "--force", "--keep", &keep, &ssh_only]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(Conn::open(&lab.srv, "127.0.0.1", 22).round_trip(b"lo"), "loopback to the SSH port passes");
    assert_eq!(tcp_connect(&lab.srv, "127.0.0.1", 5432), Tcp::TimedOut, "loopback to the database is dropped");
    assert!(ssh.round_trip(b"still here"));
}

/// Packets counted by the rule whose comment is `id`, in whichever chain it is.
fn rule_packets(ns: &Netns, id: &str) -> u64 {
    let table = table_json(ns);
    let rules = table["nftables"].as_array().expect("nftables").iter().filter_map(|o| o.get("rule"));
    rules
        .filter(|r| r["comment"].as_str() == Some(id))
        .flat_map(|r| r["expr"].as_array().expect("expr").iter().filter_map(|e| e["counter"]["packets"].as_u64()))
        .sum()
}

#[test]
fn reverse_path_rules_above_loopback_and_ssh_pass_both_and_drop_spoofed_sources() {
    let lab = web_lab();
    // The kernel's own reverse-path filter off: what drops is the policy.
    for dev in ["all", "default", "eth0", "eth1", "lo"] {
        lab.srv.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter=0"));
    }
    let _echo = echo_server(&lab.srv, 22);
    let mut ssh = Conn::open(&lab.adm, "10.10.0.1", 22);
    assert!(ssh.round_trip(b"hello"));
    let keep = format!("10.10.0.2:{} -> 10.10.0.1:22", ssh.local_port());
    let mut sent = 0;
    for (name, early) in [("urpf", ""), ("urpf-early", " early")] {
        // The check comes first, above loopback and the SSH pass.
        let policy = write_policy(
            name,
            &format!(
                "policy input block\nblock in from urpf-failed{early}\npass in on lo\n\
                 pass in state {{ established, related }}\npass in proto tcp from 10.10.0.0/24 to port 22\n"
            ),
        );
        // The apply path with the lockout guard: it finds the session kept.
        let out = lab.srv.phantomc(&["apply", "--keep", &keep, &policy]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("checked: the new policy keeps"), "{}", stdout(&out));
        let id = format!("{name}.pf:2");
        // The operator's session, a new login, and loopback (both families) still pass.
        assert!(ssh.round_trip(b"still here"), "{name}: the session");
        assert!(lan::connects(&lab.adm, "10.10.0.1", 22), "{name}: a new login");
        for lo in ["127.0.0.1", "::1"] {
            assert!(Conn::open(&lab.srv, lo, 22).round_trip(b"lo"), "{name}: loopback {lo}");
        }
        assert_eq!(rule_packets(&lab.srv, &id), 0, "{name}: nothing legitimate fails the check");
        // The admin network's addresses arriving on the public interface
        // (their route back leaves by eth1): spoofed, dropped by the rule.
        let admin_source = |i: u16| [10, 10, 0, 100 + (i % 50) as u8];
        assert_eq!(lan::syns_from(&lab.publ, admin_source, [198, 51, 100, 1], 22, 20), 20);
        sent += 20;
        eventually(&format!("{name}: the spoofed SYNs counted by {id}"), || rule_packets(&lab.srv, &id) == 20);
    }
    assert_eq!(sent, 40);
    assert!(ssh.round_trip(b"bye"));
}

/// A feed set, run-time entries (timed and not), a static set with timed
/// entries and a merged rule: every kind of table content a rollback restores.
const FEED_POLICY: &str = r#"table phantomc
feed bad {
    source "bad.txt"
    format plain
    refresh 1h
    max-shrink 100
}
allow-always { 10.10.0.0/24 }
set blocklist dynamic timeout 1d
set temporary = { 192.0.2.0/25, 192.0.2.128/25 timeout 1d }

policy input  block
policy forward block
policy output pass

pass  in on lo
pass  in state { established, related } counter
block in from <bad>
block in from <blocklist>
block in from <temporary>
pass  in proto tcp from 10.10.0.0/24 to port 22 state new
pass  in proto tcp to port { 80, 9000 } state new
"#;

/// `nft list table` with the entries' remaining times and the counters'
/// values cut out (they move), and those times in seconds, in listing order.
fn listing_and_expiries(ns: &Netns) -> (String, Vec<u64>) {
    let text = stdout(&ns.nft(&["list", "table", "inet", "phantomc"]));
    let mut expiries = Vec::new();
    let mut kept = String::new();
    let mut words = text.split(' ').peekable();
    while let Some(w) = words.next() {
        if w.trim_start() == "expires" {
            let value = words.next().expect("a time after expires");
            let digits: String = value.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            expiries.push(seconds(&digits));
            kept.push_str("expires _");
            kept.push_str(&value[digits.len()..]);
            kept.push(' ');
        } else if matches!(w.trim_start(), "packets" | "bytes") {
            // Counter values are left out: a stray packet the lab's host sends
            // during the test (a 72-byte IPv6 one was seen) moves them.
            let value = words.next().expect("a count after packets or bytes");
            kept.push_str(w);
            kept.push_str(" _");
            kept.push_str(value.trim_start_matches(|c: char| c.is_ascii_digit()));
            kept.push(' ');
        } else {
            kept.push_str(w);
            kept.push(' ');
        }
    }
    (kept, expiries)
}

/// nft's `1d23h59m58s` (milliseconds dropped) in seconds.
fn seconds(text: &str) -> u64 {
    let text = text.strip_suffix("ms").map_or(text, |t| t.trim_end_matches(|c: char| c.is_ascii_digit()));
    let (mut total, mut n) = (0, 0);
    for c in text.chars() {
        match c.to_digit(10) {
            Some(d) => n = n * 10 + u64::from(d),
            None => {
                let unit = match c {
                    'd' => 86400,
                    'h' => 3600,
                    'm' => 60,
                    's' => 1,
                    _ => 0,
                };
                total += n * unit;
                n = 0;
            }
        }
    }
    total
}

#[test]
fn a_rollback_restores_feed_sets_from_the_cache_and_run_time_entries_with_their_time_left() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("path").to_string();
    let (policy, state, run_dir) = (path("feeds.pf"), path("state"), dir.path().join("run"));
    std::fs::write(&policy, FEED_POLICY).expect("policy");
    // 600 hosts, adjacent networks, and a /16 the allowlist cuts a /24 out of.
    let mut list: String = (0..600).map(|i| format!("198.18.{}.{}\n", i / 200, (i % 200) + 1)).collect();
    list.push_str("203.0.113.0/25\n203.0.113.128/26\n10.10.0.0/16\n");
    std::fs::write(path("bad.txt"), list).expect("feed");
    let out = lab.srv.phantomc(&["feeds", "update", &policy, "--state-dir", &state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.srv.phantomc(&["apply", &policy, "--state-dir", &state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for args in [
        ["block", "198.51.100.2", "--reason", "scanner", "--timeout", "2h"],
        ["block", "198.51.100.9", "--reason", "forever", "--timeout", "1d"],
    ] {
        let out = lab.srv.phantomc(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (before, before_left) = listing_and_expiries(&lab.srv);
    let feed = feed_set(&lab.srv, "bad_v4");
    assert!(feed.contains("198.18.2.200/32") && feed.contains("10.10.1.0/24"), "feed loaded and cut: {feed}");
    assert_eq!(before_left.len(), 3, "two blocks and one timed static entry: {before}");

    // The new policy keeps the allowlist, so the feed's cut is the same.
    let closed = write_policy("feed-closed", &format!("allow-always {{ 10.10.0.0/24 }}\n{CLOSED}"));
    let env = [("PHANTOMC_RUN_DIR", run_dir.as_path())];
    let args = ["apply", "--confirm", "--timeout", "3s", &closed, "--state-dir", &state];
    let mut child = spawn_phantomc_with(&lab.srv, &args, &env);
    wait_live(&lab.srv, "feed-closed.pf:5");
    assert!(
        !stdout(&lab.srv.nft(&["list", "table", "inet", "phantomc"])).contains("198.18."),
        "the feed is gone while pending"
    );

    // The record names the feed's cache instead of holding its entries.
    let record = std::fs::read_dir(&run_dir)
        .expect("run dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with("-phantomc.json"))
        .expect("the confirmation record");
    let text = std::fs::read_to_string(record.path()).expect("record");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let previous = &doc["previous"];
    let feeds = previous["feeds"].as_array().expect("feed sets");
    assert!(
        feeds.iter().any(|f| f["feed"] == "bad" && f["set"].as_str().is_some_and(|s| s.contains("bad"))),
        "{previous}"
    );
    let recorded: Vec<&String> = previous["elements"].as_object().expect("elements").keys().collect();
    assert!(!recorded.iter().any(|s| s.contains("bad")), "no feed set's elements in the record: {recorded:?}");
    // 198.18.0.1 as it would appear in an element key.
    assert!(!text.contains("c6120001"), "no feed address in the record");
    assert!(text.len() < 64 * 1024, "the record does not grow with the feed: {} bytes", text.len());

    let status = wait_exit(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(4), "rolled back: {}{}", stdout(&out), stderr(&out));
    let (after, after_left) = listing_and_expiries(&lab.srv);
    assert_eq!(after, before, "the same rules, sets, feed entries and run-time entries");
    for (b, a) in before_left.iter().zip(&after_left) {
        assert!(a <= b && b - a < 60, "an entry keeps its time left, counted down: {before_left:?} -> {after_left:?}");
    }
    assert!(in_sync_with(&lab.srv, &policy), "and status agrees");
}

/// apply loads these policies over netlink (its default, no nft): the
/// lockout check still refuses the one that cuts the session, and the
/// unconfirmed one still rolls back to the old table exactly.
#[test]
fn the_netlink_load_keeps_the_lockout_check_and_the_rollback() {
    let cut_text = "policy input block\npass in on lo\npass in proto tcp to port 80\n";
    let no_lo_text =
        "policy input block\npass in state { established, related }\npass in proto tcp from 10.10.0.0/24 to port 22\n";
    for text in [CLOSED, cut_text, no_lo_text] {
        let compiled = phantomc::ir::compile("netlink.pf", text).expect("compile");
        let table = phantomc::nft::build(&compiled.ruleset, &phantomc::nft::Elements::default());
        assert!(phantomc::nft::wire::replace_messages(&table).is_ok(), "loads over netlink: {text}");
    }
    let (lab, _servers, mut ssh) = web_lab_with_an_ssh_session();
    let keep = format!("10.10.0.2:{} -> 10.10.0.1:22", ssh.local_port());

    let cut = write_policy("cut-netlink", cut_text);
    let out = lab.srv.phantomc(&["apply", "--keep", &keep, &cut]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("would cut off your session tcp 10.10.0.2:"), "{}", stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "nothing was applied");
    assert!(ssh.round_trip(b"still here"));

    let no_lo = write_policy("no-lo-netlink", no_lo_text);
    let out = lab.srv.phantomc(&["apply", "--keep", &keep, &no_lo]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("would cut off loopback"), "{}", stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "nothing was applied");
    assert!(lab.srv.exec(&["ping", "-c1", "-W1", "127.0.0.1"]).status.success(), "loopback still works");

    let closed = write_policy("closed-netlink", CLOSED);
    let mut child = spawn_phantomc(&lab.srv, &["apply", "--confirm", "--timeout", "2s", &closed]);
    wait_live(&lab.srv, "closed-netlink.pf:4");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "the new policy is enforced while pending");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(4), "rolled back: {}{}", stdout(&out), stderr(&out));
    assert!(in_sync_with(&lab.srv, WEB), "the old table is back exactly");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "the old policy is enforced again");
}
