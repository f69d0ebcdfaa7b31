//! Other firewalls beside phantomc, in network namespaces: a foreign table
//! that drops what phantomc passes is reported by `status` (exit 6, and in
//! its JSON), `apply`, `apply --dry-run` and `explain --live`, and real
//! traffic shows it is right; a foreign table that only accepts is listed
//! but not reported as a threat. Legacy iptables (x_tables) rules are read
//! with iptables-legacy-save and reported the same way. The ruleset the
//! real firewalld daemon loads is reported, and explained through its zone
//! chains.

mod common;

use common::*;

const DROPS_HTTP: &str = "testdata/coexist/drops-http.nft";
const ACCEPTS_ONLY: &str = "testdata/coexist/accepts-only.nft";
const HTTP: &str = "tcp 203.0.113.5:51000 -> 198.51.100.1:80 in eth0 new";

fn load(ns: &Netns, file: &str) {
    let out = ns.nft(&["-f", file]);
    assert!(out.status.success(), "nft -f {file}: {}", stderr(&out));
}

#[test]
fn a_foreign_table_that_drops_what_phantomc_passes_is_reported_everywhere() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[22, 80, 443], &[]);
    apply(&lab.srv, WEB);
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "phantomc passes http");
    let out = lab.srv.phantomc(&["status", WEB]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("other firewalls"), "phantomc alone: nothing to say: {}", stdout(&out));

    load(&lab.srv, DROPS_HTTP);
    // The kernel: http dropped by the other table, https from its set rejected.
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "the other table drops http");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 443), Tcp::Refused, "198.51.100.2 is in its reject set");
    assert_eq!(tcp_connect(&lab.publ, "2001:db8:1::1", 443), Tcp::Connected, "its set is IPv4 only");

    let out = lab.srv.phantomc(&["status", WEB]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "in sync, but overridden: {text}");
    assert!(text.contains("loaded, in sync"), "{text}");
    let row = text.lines().find(|l| l.contains("inet other")).unwrap_or_else(|| panic!("no row: {text}"));
    assert!(row.contains("input") && row.contains("10") && row.contains("CAN DROP what phantomc passes"), "{row}");
    assert!(text.contains("warning: 1 other chain can drop or reject traffic phantomc passes: inet other input"));

    let out = lab.srv.phantomc(&["status", "--format", "json", WEB]);
    assert_eq!(out.status.code(), Some(6));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc["overridden"], true);
    let other = doc["chains"].as_array().unwrap().iter().find(|c| c["table"] == "other").expect("other listed");
    assert_eq!(
        (other["hook"].as_str(), other["priority"].as_i64(), other["can_drop"].as_bool()),
        (Some("input"), Some(10), Some(true))
    );
    assert_eq!(other["rules"], 3);

    for args in [vec!["apply", "--dry-run", WEB], vec!["apply", WEB]] {
        let out = lab.srv.phantomc(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("CAN DROP what phantomc passes"), "{args:?}: {}", stdout(&out));
    }

    let out = lab.srv.phantomc(&["explain", "--live", WEB, HTTP]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("verdict: block by inet other input (nft), although phantomc passes it (webserver.pf:20)"),
        "{text}"
    );
    assert!(text.contains("th dport == 80 drop"), "the deciding rule is shown: {text}");
    let out = lab.srv.phantomc(&[
        "explain",
        "--live",
        "--format",
        "json",
        WEB,
        "tcp 198.51.100.2:40000 -> 198.51.100.1:443 in eth0 new",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc["verdict"], "reject", "{doc}");
    assert_eq!(doc["phantomc"]["verdict"], "pass");
    // Offline explain still answers for phantomc's table alone.
    let out = lab.srv.phantomc(&["explain", WEB, HTTP]);
    assert!(stdout(&out).contains("verdict: pass by webserver.pf:20"), "{}", stdout(&out));
}

#[test]
fn a_foreign_table_that_only_accepts_is_listed_but_is_no_threat() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    load(&lab.srv, ACCEPTS_ONLY);
    let out = lab.srv.phantomc(&["status", WEB]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ip counting") && !text.contains("CAN DROP") && !text.contains("warning"), "{text}");
    let out = lab.srv.phantomc(&["explain", "--live", WEB, HTTP]);
    assert!(stdout(&out).contains("verdict: pass: every base chain on the path accepts it"), "{}", stdout(&out));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
    // phantomc's own drop still drops: the accepting table cannot undo it.
    let out = lab.srv.phantomc(&["explain", "--live", WEB, "tcp 203.0.113.5:51000 -> 198.51.100.1:22 in eth0 new"]);
    assert!(stdout(&out).contains("verdict: block by inet phantomc input"), "{}", stdout(&out));
}

#[test]
fn legacy_iptables_rules_that_drop_what_phantomc_passes_are_reported_by_status() {
    require_tool("iptables-legacy-restore");
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    // x_tables rules, invisible to nf_tables' netlink: status reads them with iptables-legacy-save.
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -p tcp -m tcp --dport 80 -j DROP\nCOMMIT\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.rules");
    std::fs::write(&file, rules).unwrap();
    let out = lab.srv.exec(&["iptables-legacy-restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::TimedOut, "the legacy rule drops http");
    let out = lab.srv.phantomc(&["status", WEB]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text}");
    let row = text.lines().find(|l| l.contains("iptables-legacy")).unwrap_or_else(|| panic!("no legacy row: {text}"));
    assert!(row.contains("filter") && row.contains("INPUT") && row.contains("CAN DROP what phantomc passes"), "{row}");
    let out = lab.srv.phantomc(&["status", "--format", "json", WEB]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc["overridden"], true);
    let legacy = doc["chains"].as_array().unwrap().iter().find(|c| c["owner"] == "iptables-legacy").expect("listed");
    assert_eq!((legacy["chain"].as_str(), legacy["can_drop"].as_bool()), (Some("INPUT"), Some(true)), "{legacy}");
}

#[test]
fn the_real_firewalld_ruleset_beside_phantomc_is_reported_and_explained_through_its_zone_chains() {
    // The ruleset the firewalld daemon loaded for its public zone (http,
    // https, ssh, eth0 in the zone): testdata/import/make-firewalld-daemon.sh.
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80], &[]);
    apply(&lab.srv, WEB);
    load(&lab.srv, "testdata/import/firewalld-daemon-public.nft");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "both pass http");
    let out = lab.srv.phantomc(&["status", WEB]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text}");
    let row = text.lines().find(|l| l.contains("inet firewalld") && l.contains("filter_INPUT")).unwrap_or_else(|| {
        panic!("no firewalld input row: {text}");
    });
    assert!(row.contains("firewalld") && row.contains("CAN DROP what phantomc passes"), "{row}");
    // HTTP/3 (udp 443): phantomc passes it, firewalld's zone has only tcp
    // services and rejects it at the zone's end. The packet gets past
    // firewalld's `ct status dnat accept` (a new connection is not DNATed).
    let out = lab.srv.phantomc(&["explain", "--live", WEB, "udp 203.0.113.5:51000 -> 198.51.100.1:443 in eth0 new"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("verdict: reject by inet firewalld filter_INPUT (firewalld), although phantomc passes it"),
        "{text}"
    );
    assert!(text.contains("reject"), "{text}");
    let out = lab.srv.phantomc(&["explain", "--live", WEB, HTTP]);
    assert!(stdout(&out).contains("verdict: pass: every base chain on the path accepts it"), "{}", stdout(&out));
    // The kernel agrees: firewalld answers udp 443 with admin-prohibited.
    assert!(!udp_echo(&lab.publ, "198.51.100.1", 443), "udp 443 does not get through");
}
