//! Kernel test: `log limit` bounds the log lines and not the verdict, and
//! `phantomc log --follow` reads the NFLOG group of `log group N` rules and
//! maps every packet to its policy line. (The kernel log of a namespace other
//! than the host's stays off, so namespace tests read NFLOG.)

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// The fields `log --format json` documents (docs/guide/hits-log.md).
const ENTRY_FIELDS: [&str; 13] =
    ["dport", "dst", "id", "iif", "line", "oif", "proto", "rule", "source", "sport", "src", "text", "verdict"];

const POLICY: &str = "table phantomc
policy input block log \"in\" limit 1/minute burst 3 group 7
pass in on lo
pass in state { established, related }
pass in proto tcp to port 80 state new log \"web\" group 7
";

#[test]
fn nflog_lines_map_to_policy_lines_and_log_limit_spares_the_verdict() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("logged.pf");
    std::fs::write(&policy, POLICY).expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    let _servers = Servers::start(&lab.srv, &[80], &[]);

    let mut follower = Command::new("ip")
        .args(["netns", "exec", &lab.srv.name, env!("CARGO_BIN_EXE_phantomc"), "log", policy])
        .args(["--follow", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start phantomc log");
    let mut notice = String::new();
    BufReader::new(follower.stderr.take().expect("stderr")).read_line(&mut notice).expect("notice");
    assert!(notice.contains("reading NFLOG group(s) [7]"), "{notice}");

    // Ten datagrams the default policy drops: all dropped, at most burst + 1 logged.
    lab.publ.run_in(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..10 {
            s.send_to(b"x", "198.51.100.1:5000").expect("send");
        }
    });
    // Then one logged web connection: NFLOG delivers in order, so its line
    // comes after every drop line that was logged.
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);

    let mut entries: Vec<Value> = Vec::new();
    for line in BufReader::new(follower.stdout.take().expect("stdout")).lines() {
        let entry: Value = serde_json::from_str(&line.expect("line")).expect("one JSON object per line");
        let done = entry["id"] == "logged.pf:5";
        entries.push(entry);
        if done {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();

    let web = entries.last().expect("the web line");
    assert_eq!(web["verdict"], "accept");
    assert_eq!(web["rule"], "pass in proto tcp to port 80 state new log \"web\" group 7");
    assert_eq!((web["line"].as_u64(), web["text"].as_str()), (Some(5), Some("web")));
    assert_eq!((web["proto"].as_str(), web["dport"].as_u64()), (Some("tcp"), Some(80)));
    let drops = &entries[..entries.len() - 1];
    assert!((1..=4).contains(&drops.len()), "10 drops, logged at 1/minute burst 3: {entries:?}");
    for d in drops {
        assert_eq!(d["id"], "logged.pf:2", "{d}");
        assert_eq!(d["rule"], "policy input block log \"in\" limit 1/minute burst 3 group 7");
        assert_eq!(
            (d["verdict"].as_str(), d["text"].as_str(), d["source"].as_str()),
            (Some("drop"), Some("in"), Some("nflog"))
        );
        assert_eq!((d["src"].as_str(), d["dst"].as_str()), (Some("198.51.100.2"), Some("198.51.100.1")));
        assert_eq!(
            (d["proto"].as_str(), d["dport"].as_u64(), d["iif"].as_str()),
            (Some("udp"), Some(5000), Some("eth0"))
        );
        let mut keys: Vec<&str> = d.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ENTRY_FIELDS);
    }

    // The limit is on the log only: the default policy dropped all ten.
    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    let hits: Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    let default = hits["rules"].as_array().expect("rules").iter().find(|r| r["id"] == "logged.pf:2").expect("line 2");
    assert!(default["packets"].as_u64().expect("counted") >= 10, "{default}");
}

#[test]
fn nflog_needs_follow_and_a_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("plain.pf");
    std::fs::write(&policy, "pass in on lo\nblock in log\n").expect("write policy");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_phantomc")).arg("log").arg(&policy).args(args).output().expect("run")
    };
    let out = run(&["--source", "nflog"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NFLOG keeps no history"), "{}", stderr(&out));
    let out = run(&["--source", "nflog", "--follow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no `log group N` rule"), "{}", stderr(&out));
}
