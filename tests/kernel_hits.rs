//! Kernel test: every rule counts by default, and `phantomc hits` reports the
//! live counters per policy line (default policy included), busiest first,
//! with the policy path taken from $PHANTOMC_POLICY.

mod common;

use common::*;
use serde_json::Value;

/// The fields `hits --format json` documents for each rule (docs/guide/hits-log.md).
const RULE_FIELDS: [&str; 11] =
    ["id", "line", "text", "kind", "chain", "action", "label", "counter", "nft_rules", "packets", "bytes"];

fn hits_json(lab: &WebLab, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["env", "PHANTOMC_POLICY=policies/webserver.pf", env!("CARGO_BIN_EXE_phantomc"), "hits"];
    args.extend_from_slice(&["--format", "json"]);
    args.extend_from_slice(extra);
    let out = lab.srv.exec(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("one JSON document per line")).collect()
}

fn packets(doc: &Value, id: &str) -> u64 {
    let rule = doc["rules"].as_array().expect("rules").iter().find(|r| r["id"] == id).expect("rule listed");
    rule["packets"].as_u64().unwrap_or_else(|| panic!("{id} is counted: {rule}"))
}

#[test]
fn hits_count_every_line_on_live_traffic() {
    let lab = web_lab();
    apply(&lab.srv, WEB);
    let _servers = Servers::start(&lab.srv, &[80, 22], &[]);
    for _ in 0..3 {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
    }
    // SSH from the public side is not allowed: the default input policy
    // (line 12) drops it, and counts it.
    assert_ne!(tcp_connect(&lab.publ, "198.51.100.1", 22), Tcp::Connected);

    let docs = hits_json(&lab, &[]);
    let doc = &docs[0];
    assert_eq!((doc["table"].as_str(), doc["loaded"].as_bool()), (Some("phantomc"), Some(true)), "{doc}");
    assert_eq!(packets(doc, "webserver.pf:20"), 3, "one SYN per connection: {doc}");
    assert!(packets(doc, "webserver.pf:12") >= 1, "the dropped SSH SYN: {doc}");
    assert!(packets(doc, "webserver.pf:18") >= 3, "the rest of each connection: {doc}");
    let rules = doc["rules"].as_array().expect("rules");
    for r in rules {
        let keys: Vec<&str> = r.as_object().expect("object").keys().map(String::as_str).collect();
        let mut expected = RULE_FIELDS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "documented fields only: {r}");
    }
    let counts: Vec<u64> = rules.iter().map(|r| r["packets"].as_u64().expect("all counted")).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "busiest first: {counts:?}");
    assert_eq!(rules.len(), 12, "every statement of the policy, once");

    // The text form names the line and shows its policy text.
    let out = lab.srv.phantomc(&["hits", WEB]);
    let text = stdout(&out);
    let web = text.lines().find(|l| l.contains("webserver.pf:20")).expect("web line");
    assert!(
        web.trim_start().starts_with("3 ") && web.ends_with("pass   in to port $web state new counter label \"web\""),
        "{text}"
    );

    // status --format json: the documented fields, exit 0 in sync.
    let out = lab.srv.phantomc(&["status", WEB, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status json");
    let mut keys: Vec<&str> = status.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["chains", "drift", "entries", "notes", "overridden", "policy", "rules", "state", "table", "watch"]
    );
    assert_eq!((status["state"].as_str(), status["rules"].as_u64()), (Some("in-sync"), Some(18)), "{status}");

    // --watch refreshes; counters only grow.
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
    let docs = hits_json(&lab, &["--watch", "1", "--iterations", "2"]);
    assert_eq!(docs.len(), 2);
    assert_eq!(packets(&docs[1], "webserver.pf:20"), 4);
}

/// Lines the optimizer merged into one nft rule (a port set) still count
/// one by one: each set element carries its line and its own counter.
#[test]
fn merged_lines_count_one_by_one() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("merged.pf");
    std::fs::write(
        &policy,
        "table phantomc\npolicy input block\npass in on lo\npass in state { established, related }\npass in proto tcp to port 80\npass in proto tcp to port 22\npass in proto tcp to port 8080\nblock in from 192.0.2.1\nblock in from 192.0.2.2\n",
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    let script = stdout(&lab.srv.phantomc(&["compile", policy]));
    assert!(script.contains("tcp dport @opt_input_1 accept comment \"merged.pf:5 +2 merged\""), "{script}");
    assert!(script.contains("ip saddr @opt_input_2 drop comment \"merged.pf:8 +1 merged\""), "{script}");

    let _servers = Servers::start(&lab.srv, &[80, 22], &[]);
    for _ in 0..3 {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
    }
    for _ in 0..2 {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 22), Tcp::Connected);
    }
    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    let rule = |id: &str| doc["rules"].as_array().expect("rules").iter().find(|r| r["id"] == id).cloned().expect(id);
    for (id, syns) in [("merged.pf:5", 3), ("merged.pf:6", 2), ("merged.pf:7", 0), ("merged.pf:8", 0)] {
        let r = rule(id);
        assert_eq!((r["packets"].as_u64(), r["nft_rules"].as_u64()), (Some(syns), Some(1)), "{id}: {doc}");
    }

    // The drift check reads the merged sets like any other: in sync.
    let out = lab.srv.phantomc(&["status", policy, "--format", "json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status json");
    assert_eq!(status["state"].as_str(), Some("in-sync"), "{status}");
}

/// Lines of one shape that other lines separate still merge (into
/// concatenated sets: source . port, interface . port) and still count one
/// by one, each from its own set element.
#[test]
fn interleaved_lines_merge_into_concatenated_sets_and_count_one_by_one() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("mixed.pf");
    std::fs::write(
        &policy,
        "table phantomc\npolicy input block\npass in on lo\npass in state { established, related }\n\
         pass in proto tcp from 198.51.100.0/25 to port 8081\n\
         block in proto udp to port 9999\n\
         pass in proto tcp from 10.10.0.0/24 to port 8082\n\
         reject in proto tcp from 198.51.100.128/25 to port 22 log\n\
         pass in proto tcp from 198.51.100.128/25 to port 8083\n\
         pass in on eth0 proto tcp to port 9000\n\
         block in proto udp to port 9998\n\
         pass in on eth1 proto tcp to port 9001\n",
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    let script = stdout(&lab.srv.phantomc(&["compile", policy]));
    assert!(script.contains("ip saddr . tcp dport @opt_input_1 accept comment \"mixed.pf:5 +2 merged\""), "{script}");
    assert!(script.contains("udp dport @opt_input_2 drop comment \"mixed.pf:6 +1 merged\""), "{script}");
    assert!(script.contains("iifname . tcp dport @opt_input_3 accept comment \"mixed.pf:10 +1 merged\""), "{script}");
    let explained = stdout(&lab.srv.phantomc(&["compile", "--explain-optimize", policy]));
    assert!(explained.contains("3 merged rule(s), 3 line(s) moved"), "{explained}");

    let _servers = Servers::start(&lab.srv, &[8081, 8082, 9000, 9001], &[]);
    for _ in 0..3 {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 8081), Tcp::Connected);
    }
    for _ in 0..2 {
        assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 8082), Tcp::Connected);
    }
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 9000), Tcp::Connected);
    assert_eq!(tcp_connect(&lab.adm, "10.10.0.1", 9001), Tcp::Connected);
    // Port 9000 from the admin side and 8082 from the public side are not
    // allowed: the interface and the source are part of each element's key.
    assert_ne!(tcp_connect(&lab.adm, "10.10.0.1", 9000), Tcp::Connected);
    assert_ne!(tcp_connect(&lab.publ, "198.51.100.1", 8082), Tcp::Connected);

    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    for (id, syns) in [("mixed.pf:5", 3), ("mixed.pf:7", 2), ("mixed.pf:9", 0), ("mixed.pf:10", 1), ("mixed.pf:12", 1)]
    {
        assert_eq!(packets(&doc, id), syns, "{id}: {doc}");
    }
    let out = lab.srv.phantomc(&["status", policy, "--format", "json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status json");
    assert_eq!(status["state"].as_str(), Some("in-sync"), "{status}");
}

/// Sends `n` UDP datagrams from `ns` to `addr:port`, each from a socket of
/// its own (a new connection each, so none is `established`), then counts
/// the echoes that come back.
fn udp_burst(ns: &Netns, addr: &str, port: u16, n: usize) -> usize {
    let to: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
    ns.run_in(move || {
        let sockets: Vec<std::net::UdpSocket> = (0..n)
            .map(|_| {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
                s.set_read_timeout(Some(std::time::Duration::from_millis(500))).expect("timeout");
                s.send_to(b"probe", to).expect("send");
                s
            })
            .collect();
        let mut buf = [0u8; 16];
        // A rejected datagram's ICMP error ends its recv early.
        sockets.iter().filter(|s| s.recv_from(&mut buf).is_ok()).count()
    })
}

/// Rate-limited lines of one shape go behind one verdict map, each in a
/// chain of its own. A packet over a line's limit falls through to the
/// lines after it in the policy, in their order (the public side to the
/// logged pass of line 8, the admin side to the reject of line 9), and each
/// line counts its own packets.
#[test]
fn limited_lines_behind_a_verdict_map_fall_through_in_order_and_count_one_by_one() {
    let lab = web_lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("limits.pf");
    std::fs::write(
        &policy,
        "table phantomc\npolicy input block\npass in on lo\npass in state { established, related }\n\
         pass in proto udp from 198.51.100.2 to port 5000 limit 2/minute burst 2\n\
         block in proto udp from 10.10.0.2 to port 5001\n\
         pass in proto udp from 10.10.0.2 to port 5000 limit 2/minute burst 2 log\n\
         pass in proto udp from 198.51.100.0/24 to port 5000 log\n\
         reject in proto udp to port 5000\n",
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    apply(&lab.srv, policy);
    let script = stdout(&lab.srv.phantomc(&["compile", policy]));
    assert!(
        script.contains("udp dport 5000 ip saddr vmap @opt_input_1 comment \"limits.pf:5 +1 dispatched\""),
        "{script}"
    );
    assert!(
        script.contains("elements = { 198.51.100.2 : jump opt_input_1_1, 10.10.0.2 : jump opt_input_1_2 }"),
        "{script}"
    );
    assert!(
        script.contains("chain opt_input_1_2 {\n\t\tip saddr 10.10.0.2 udp dport 5000 limit rate 2/minute burst 2 packets counter log prefix \"phantomc limits.pf:7 accept \" accept comment \"limits.pf:7\"\n\t}"),
        "{script}"
    );
    let explained = stdout(&lab.srv.phantomc(&["compile", "--explain-optimize", policy]));
    assert!(
        explained.contains("limits.pf:7              10.10.0.2/32 : jump opt_input_1_2  (moved up past 1 rule(s)"),
        "{explained}"
    );
    let linear = stdout(&lab.srv.phantomc(&["compile", "--no-optimize", policy]));
    assert!(!linear.contains("vmap") && !linear.contains("chain opt_"), "{linear}");

    let _servers = Servers::start(&lab.srv, &[], &[5000, 5001]);
    // Public: every datagram passes, the first ones under line 5's limit, the rest by line 8.
    assert_eq!(udp_burst(&lab.publ, "198.51.100.1", 5000, 8), 8);
    // Admin: under line 7's limit they pass, over it line 9 rejects them.
    let admin_echoed = udp_burst(&lab.adm, "10.10.0.1", 5000, 8);
    assert_eq!(udp_burst(&lab.adm, "10.10.0.1", 5001, 1), 0, "line 6 blocks port 5001");

    let out = lab.srv.phantomc(&["hits", policy, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("hits json");
    let (l5, l6, l7, l8, l9) = (
        packets(&doc, "limits.pf:5"),
        packets(&doc, "limits.pf:6"),
        packets(&doc, "limits.pf:7"),
        packets(&doc, "limits.pf:8"),
        packets(&doc, "limits.pf:9"),
    );
    assert!((1..=4).contains(&l5) && l5 + l8 == 8, "public: line 5 {l5}, then line 8 {l8}: {doc}");
    assert!((1..=4).contains(&l7) && l7 + l9 == 8, "admin: line 7 {l7}, then line 9 {l9}: {doc}");
    assert_eq!(admin_echoed as u64, l7, "only what line 7 passed came back");
    assert_eq!(l6, 1, "{doc}");

    let out = lab.srv.phantomc(&["status", policy, "--format", "json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status json");
    assert_eq!(status["state"].as_str(), Some("in-sync"), "{status}");
}
