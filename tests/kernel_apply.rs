//! Kernel tests: the example policies loaded by `phantomc apply` into a
//! server namespace, with real traffic from client namespaces.

mod common;

use common::*;

#[test]
fn webserver_policy_decides_real_traffic() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[22, 80, 113, 443, 8080], &[53, 443]);
    // Without the policy everything is open: the drops below are the policy's.
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 22), Tcp::Connected);
    assert!(udp_echo(&lab.publ, "198.51.100.1", 53));

    apply(&lab.srv, WEB);

    let p = &lab.publ;
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected, "http");
    assert_eq!(tcp_connect(p, "198.51.100.1", 443), Tcp::Connected, "https");
    assert_eq!(tcp_connect(p, "198.51.100.1", 22), Tcp::TimedOut, "ssh from the internet drops");
    assert_eq!(tcp_connect(p, "198.51.100.1", 8080), Tcp::TimedOut, "closed port drops");
    assert_eq!(tcp_connect(p, "198.51.100.1", 113), Tcp::Refused, "ident is rejected with a reset");
    assert!(udp_echo(p, "198.51.100.1", 443), "http/3 over udp 443");
    assert!(!udp_echo(p, "198.51.100.1", 53), "udp 53 drops");
    assert!(ping(p, "198.51.100.1"), "ping v4");

    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected, "http over IPv6");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 22), Tcp::TimedOut, "ssh over IPv6 from the internet");
    assert!(udp_echo(p, "2001:db8:1::1", 443), "udp 443 over IPv6");
    assert!(ping(p, "2001:db8:1::1"), "ping v6 (needs neighbour discovery to pass)");

    let a = &lab.adm;
    assert_eq!(tcp_connect(a, "10.10.0.1", 22), Tcp::Connected, "ssh from the admin LAN");
    assert_eq!(tcp_connect(a, "fd00:10::1", 22), Tcp::Connected, "ssh from the admin LAN over IPv6");
    assert_eq!(tcp_connect(a, "10.10.0.1", 8080), Tcp::TimedOut, "admins get no other port");
}

#[test]
fn broken_reapply_keeps_the_old_ruleset_enforced() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[22, 80], &[]);
    apply(&lab.srv, WEB);
    let dir = tempdir();

    // A policy error: phantomc refuses before nft sees anything.
    let broken = dir.join("broken.pf");
    std::fs::write(&broken, "pass in proto tcp to port 22\nallow in proto tcp to port 80\n").expect("write");
    let out = lab.srv.phantomc(&["apply", broken.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.pf:2:1"), "{}", stderr(&out));

    // A rule the kernel refuses (a burst too large for it): the error names
    // the policy line, and nothing is loaded.
    let text = std::fs::read_to_string(WEB)
        .expect("policy")
        .replace("limit 10/second burst 20", "limit 1/day burst 4294967295");
    let refused = dir.join("webserver.pf");
    std::fs::write(&refused, text).expect("write");
    let out = lab.srv.phantomc(&["apply", refused.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("nft refused the rule compiled from webserver.pf:22"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");

    let status = lab.srv.phantomc(&["status", WEB]);
    assert_eq!(status.status.code(), Some(0), "old ruleset still loaded: {}", stdout(&status));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 22), Tcp::TimedOut, "old policy still drops ssh");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "old policy still passes http");
}

#[test]
fn block_and_unblock_change_live_traffic_without_reload() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    let p = &lab.publ;
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected);

    let handles_before = rule_handles(&lab.srv);
    for addr in ["198.51.100.2", "2001:db8:1::2"] {
        let out = lab.srv.phantomc(&["block", addr]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(rule_handles(&lab.srv), handles_before, "block must not reload the rules");
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "blocked v4 source");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::TimedOut, "blocked v6 source");

    // A reload keeps run-time entries.
    apply(&lab.srv, WEB);
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "still blocked after re-apply");

    for addr in ["198.51.100.2", "2001:db8:1::2"] {
        let out = lab.srv.phantomc(&["unblock", addr]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // While blocked, the server also dropped the client's neighbour
    // solicitations, so the first v6 attempt may wait for neighbour discovery.
    eventually("unblocked v4", || tcp_connect(p, "198.51.100.1", 80) == Tcp::Connected);
    eventually("unblocked v6", || tcp_connect(p, "2001:db8:1::1", 80) == Tcp::Connected);

    // Entries with a timeout expire by themselves.
    let out = lab.srv.phantomc(&["block", "198.51.100.2", "--timeout", "2s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected, "entry expired");

    let out = lab.srv.phantomc(&["block", "198.51.100.2", "--set", "nosuchset"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no set nosuchset_v4"), "{}", stderr(&out));
}

#[test]
fn apply_and_disable_touch_only_phantomcs_table() {
    let lab = web_lab();
    let foreign = "add table inet foreign; add chain inet foreign c { type filter hook input priority 10; policy accept; }; add rule inet foreign c tcp dport 9 counter accept";
    let out = lab.srv.nft(&[foreign]);
    assert!(out.status.success(), "{}", stderr(&out));

    apply(&lab.srv, WEB);
    let tables = stdout(&lab.srv.nft(&["list", "tables"]));
    assert!(tables.contains("table inet foreign") && tables.contains("table inet phantomc"), "{tables}");

    let out = lab.srv.phantomc(&["disable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tables = stdout(&lab.srv.nft(&["list", "tables"]));
    assert!(tables.contains("table inet foreign"), "foreign table kept: {tables}");
    assert!(!tables.contains("table inet phantomc"), "phantomc table removed: {tables}");
    let rules = stdout(&lab.srv.nft(&["list", "table", "inet", "foreign"]));
    assert!(rules.contains("tcp dport 9 counter"), "foreign rules intact: {rules}");

    let again = lab.srv.phantomc(&["disable"]);
    assert!(again.status.success() && stdout(&again).contains("not loaded"), "{}", stdout(&again));
}

#[test]
fn status_reports_drift_and_dry_run_changes_nothing() {
    let lab = web_lab();
    let out = lab.srv.phantomc(&["status", WEB]);
    assert_eq!(out.status.code(), Some(3), "not loaded yet: {}", stdout(&out));

    let dry = lab.srv.phantomc(&["apply", "--dry-run", WEB]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("would create"), "{}", stdout(&dry));
    assert_eq!(lab.srv.phantomc(&["status", WEB]).status.code(), Some(3), "dry run loaded nothing");

    apply(&lab.srv, WEB);
    let out = lab.srv.phantomc(&["status", WEB]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("in sync"), "{}", stdout(&out));

    // Someone edits the live table by hand.
    let out = lab.srv.nft(&["add", "rule", "inet", "phantomc", "input", "tcp", "dport", "9999", "accept"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.srv.phantomc(&["status", WEB]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains("DRIFTED") && stdout(&out).contains("+rule input \"\": meta cmp payload cmp immediate"),
        "{}",
        stdout(&out)
    );

    let dry = lab.srv.phantomc(&["apply", "--dry-run", WEB]);
    assert!(stdout(&dry).contains("-rule input \"\": meta cmp payload cmp immediate"), "{}", stdout(&dry));
    assert_eq!(lab.srv.phantomc(&["status", WEB]).status.code(), Some(3), "dry run changed nothing");

    apply(&lab.srv, WEB);
    assert_eq!(lab.srv.phantomc(&["status", WEB]).status.code(), Some(0), "apply repaired the drift");
}

#[test]
fn nft_script_and_json_load_to_the_same_kernel_ruleset() {
    require_tools();
    let policies =
        ["policies/webserver.pf", "policies/bastion.pf", "policies/router.pf", "testdata/language/constructs.pf"];
    for policy in policies {
        let name = policy;
        let (a, b) = (Netns::new("txt"), Netns::new("json"));
        let listing = |ns: &Netns, format: &str, flag: &str| {
            // Timed set entries are listed with the time they have left: not compared.
            let cmd = format!(
                "{} compile --format {format} {policy} | nft {flag} -f - && nft -s list table inet phantomc \
                 | sed -E 's/ expires [0-9dhms]+//g'",
                env!("CARGO_BIN_EXE_phantomc")
            );
            let out = ns.exec(&["sh", "-c", &cmd]);
            assert!(out.status.success(), "{name} {format}: {}", stderr(&out));
            stdout(&out)
        };
        let text = listing(&a, "nft", "");
        let json = listing(&b, "json", "-j");
        assert!(text.contains("chain input"), "{text}");
        assert_eq!(text, json, "{name}: the nft script and the JSON differ once loaded");
    }
}

fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("phantomc-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
