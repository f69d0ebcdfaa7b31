//! Kernel test: `block` / `unblock` / `blocked` on the live blocklist of the
//! webserver policy: many entries at once (arguments, file, stdin),
//! overlaps merged or reported in phantomc's words, host bits, reasons kept
//! across a reload, and the JSON listing's documented fields.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn run(lab: &WebLab, args: &[&str]) -> (Option<i32>, String, String) {
    let out = lab.srv.phantomc(args);
    (out.status.code(), stdout(&out), stderr(&out))
}

fn blocked(lab: &WebLab) -> Vec<Value> {
    let out = lab.srv.phantomc(&["blocked", WEB, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!((doc["table"].as_str(), doc["loaded"].as_bool()), (Some("phantomc"), Some(true)));
    doc["blocked"].as_array().expect("blocked").clone()
}

fn addresses(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["address"].as_str().expect("address")).collect()
}

#[test]
fn block_many_overlaps_reasons_and_listing() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);

    let (code, out, err) = run(&lab, &["block", "10.10.0.5", "--reason", "ssh brute force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "blocked 10.10.0.5/32 in set blocklist_v4 of table inet phantomc (ssh brute force)\n");

    // The admin network holds this host's own address: the lockout guard refuses it without --force.
    let (code, _, err) = run(&lab, &["block", "10.10.0.0/24"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("covers 10.10.0.1, which is protected: an address of this host"), "{err}");
    assert_eq!(addresses(&blocked(&lab)), ["10.10.0.5/32"], "nothing was changed");

    // A network over an existing entry: merged, never nft's "interval overlaps".
    let (code, out, err) = run(&lab, &["block", "10.10.0.0/24", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err,
        "warning: 10.10.0.0/24 covers 10.10.0.1, which is protected: an address of this host (eth1); \
         blocking anyway (--force)\nnote: 10.10.0.0/24 replaces the entries it covers: 10.10.0.5/32\n"
    );
    assert_eq!(out, "blocked 10.10.0.0/24 in set blocklist_v4 of table inet phantomc\n");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::TimedOut, "the admin network is blocked now");
    // An address inside a blocked network: nothing to do, said so.
    let (code, out, err) = run(&lab, &["block", "10.10.0.7"]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert_eq!(err, "note: 10.10.0.7/32 is already blocked as part of 10.10.0.0/24\n");

    // Many at once, host bits warned; from arguments, a file and stdin.
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("bad.txt");
    std::fs::write(&list, "# from the abuse desk\n203.0.113.0/28\n2001:db8:66::/64   # v6 scanner\n").expect("list");
    let (code, out, err) = run(
        &lab,
        &[
            "block",
            "192.0.2.9/24",
            "198.51.100.7",
            "--file",
            list.to_str().expect("path"),
            "--timeout",
            "1h",
            "--reason",
            "scanner",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "note: 192.0.2.9/24 has host bits set: blocking the whole network 192.0.2.0/24\n");
    assert_eq!(out.lines().count(), 4, "{out}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.srv.name, env!("CARGO_BIN_EXE_phantomc"), "block", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("block from stdin");
    child.stdin.take().expect("stdin").write_all(b"198.18.0.1\n198.18.0.2\n").expect("write");
    assert!(child.wait_with_output().expect("wait").status.success());

    // A bad entry anywhere: nothing changes.
    let (code, _, err) = run(&lab, &["block", "198.18.0.3", "not-an-address"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("argument: `not-an-address` is not an IPv4/IPv6 address or network"), "{err}");

    // Reasons and time left survive a reload.
    apply(&lab.srv, WEB);
    let entries = blocked(&lab);
    assert_eq!(
        addresses(&entries),
        [
            "10.10.0.0/24",
            "192.0.2.0/24",
            "198.18.0.1/32",
            "198.18.0.2/32",
            "198.51.100.7/32",
            "203.0.113.0/28",
            "2001:db8:66::/64"
        ]
    );
    for e in &entries {
        let mut keys: Vec<&str> = e.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["address", "expires_in", "nft_set", "reason", "set", "timeout"], "documented fields: {e}");
        assert_eq!(e["set"], "blocklist");
    }
    let scanner = entries.iter().find(|e| e["address"] == "198.51.100.7/32").expect("scanner");
    assert_eq!(scanner["reason"], "scanner");
    assert!((3000..=3600).contains(&scanner["expires_in"].as_u64().expect("expires")), "{scanner}");
    let text = run(&lab, &["blocked", WEB]).1;
    assert!(text.lines().any(|l| l.starts_with("198.51.100.7/32") && l.ends_with("scanner")), "{text}");

    // Unblock: a part of a blocked network is explained, not nft's error.
    let (code, _, err) = run(&lab, &["unblock", "10.10.0.5"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("note: 10.10.0.5/32 is blocked as part of 10.10.0.0/24"), "{err}");
    let (code, out, err) = run(&lab, &["unblock", "10.10.0.0/24", "198.51.100.7", "192.0.2.200"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(err, "note: 192.0.2.200/32 is blocked as part of 192.0.2.0/24: unblock 192.0.2.0/24 (and block the rest again) to free it\n");
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 80), Tcp::Connected, "unblocked");
    assert!(!addresses(&blocked(&lab)).contains(&"10.10.0.0/24"));
}
