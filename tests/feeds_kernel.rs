//! Kernel test: a feed set decides real traffic in a namespace, and
//! `feeds update` swaps its contents in place — no reload (handles and
//! counters survive) and an established connection keeps flowing.

mod common;

use common::*;

const POLICY: &str = r#"table phantomc
feed bad {
    source "bad.txt"
    format plain
    refresh 1h
    max-shrink 100
}
allow-always { 10.10.0.0/24 }

policy input  block
policy forward block
policy output pass

pass  in on lo
pass  in state { established, related } counter
block in from <bad>
pass  in proto tcp to port { 80, 9000 } state new
pass  in proto icmpv6 icmp-type { nd-neighbor-solicit, nd-neighbor-advert }
"#;

fn set_elements(ns: &Netns, set: &str) -> String {
    stdout(&ns.nft(&["list", "set", "inet", "phantomc", set]))
}

/// Packets counted by the established rule (line 15 of the policy).
fn established_packets(ns: &Netns) -> u64 {
    table_json(ns)["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r.get("comment").and_then(|c| c.as_str()) == Some("feeds.pf:15"))
        .filter_map(|r| r.get("expr")?.as_array())
        .flatten()
        .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
        .expect("a counter rule")
}

/// A tempdir holding POLICY, the path of its local feed list and a state dir.
struct FeedFiles {
    _dir: tempfile::TempDir,
    policy: String,
    list: std::path::PathBuf,
    state: String,
}

impl FeedFiles {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_str().expect("path").to_string();
        let (policy, state) = (path("feeds.pf"), path("state"));
        std::fs::write(&policy, POLICY).expect("policy");
        FeedFiles { list: dir.path().join("bad.txt"), policy, state, _dir: dir }
    }
}

#[test]
fn feed_update_swaps_the_set_in_place() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let _echo = echo_server(&lab.srv, 9000);
    let files = FeedFiles::new();
    let (policy, list, state) = (files.policy.as_str(), &files.list, files.state.as_str());

    // The admin LAN is inside a listed /16, but allow-always protects it.
    std::fs::write(list, "# bad hosts\n198.51.100.2\n10.10.0.0/16\n203.0.113.0/24\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("table inet phantomc is not loaded: cached for the next `phantomc apply`"),
        "{}",
        stdout(&out)
    );

    // apply fills the feed set from the cache.
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("10.10.0.0/24 not blocked, it is protected: allow-always (feed entry 10.10.0.0/16"),
        "{}",
        stderr(&out)
    );
    let v4 = set_elements(&lab.srv, "bad_v4");
    assert!(v4.contains("198.51.100.2") && v4.contains("203.0.113.0/24") && !v4.contains("10.10.0.0/16"), "{v4}");

    let (p, a) = (&lab.publ, &lab.adm);
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "listed source drops");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected, "its unlisted IPv6 address passes");
    assert_eq!(tcp_connect(a, "10.10.0.1", 80), Tcp::Connected, "the allowlisted admin LAN passes");

    let mut conn = Conn::open(a, "10.10.0.1", 9000);
    assert!(conn.round_trip(b"before the update"));
    let before = (handles(&lab.srv, "table"), handles(&lab.srv, "chain"), rule_handles(&lab.srv));
    let counted = established_packets(&lab.srv);
    assert!(counted > 0);

    // The new list drops the old source and adds a new one.
    std::fs::write(list, "2001:db8:1::2\n10.10.0.0/16\n203.0.113.0/24\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "bad", "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("sets bad_v4 and bad_v6 of table inet phantomc replaced in one transaction"),
        "{}",
        stdout(&out)
    );

    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::Connected, "the old source passes now");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::TimedOut, "the new source drops");
    assert!(conn.round_trip(b"after the update"), "the established connection survives");
    let after = (handles(&lab.srv, "table"), handles(&lab.srv, "chain"), rule_handles(&lab.srv));
    assert_eq!(after, before, "no reload: table, chain and rule handles unchanged");
    assert!(established_packets(&lab.srv) > counted, "counters keep counting, never reset");

    // Within the refresh interval, --due leaves the feed alone.
    let out = lab.srv.phantomc(&["feeds", "update", "--due", "--policy", policy, "--state-dir", state]);
    assert_eq!(stdout(&out), "bad: not due (refresh 3600s)\n", "{}", stderr(&out));

    // A bad list (empty) is refused and the set keeps the last good copy.
    std::fs::write(list, "").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("bad: REFUSED: empty: the feed lists no addresses; kept the last good copy"),
        "{}",
        stdout(&out)
    );
    assert!(set_elements(&lab.srv, "bad_v6").contains("2001:db8:1::2"));

    // A full re-apply keeps the feed from the cache.
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(set_elements(&lab.srv, "bad_v6").contains("2001:db8:1::2"));
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::TimedOut, "still dropped after a reload");

    let out = lab.srv.phantomc(&["feeds", "list", policy, "--state-dir", state]);
    let text = stdout(&out);
    assert!(text.starts_with("NAME  SOURCE"), "{text}");
    assert!(text.contains(" kept-last-good ") && text.contains("s ago: empty: the feed lists no addresses"), "{text}");
    let row = text.lines().nth(1).expect("a row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cells[0], cells[2], cells[3]), ("bad", "2", "1"), "{row}");
}

/// A feed poisoned with the two halves of IPv4 (no single line is /0, but
/// they aggregate into everything) is refused by its coverage bound: the
/// loaded set stays as it was, the public client still reaches the server's
/// pass'd port and loopback still works.
#[test]
fn a_feed_poisoned_with_two_halves_is_refused() {
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let files = FeedFiles::new();
    let (policy, list, state) = (files.policy.as_str(), &files.list, files.state.as_str());

    std::fs::write(list, "203.0.113.0/24\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let before = set_elements(&lab.srv, "bad_v4");
    assert!(before.contains("203.0.113.0/24"), "{before}");

    std::fs::write(list, "0.0.0.0/1\n128.0.0.0/1\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("bad: REFUSED: too broad: covers 3702258688 public IPv4 addresses")
            && stdout(&out).contains("more than max-coverage /8 (16777216); kept the last good copy"),
        "{}",
        stdout(&out)
    );
    assert_eq!(set_elements(&lab.srv, "bad_v4"), before, "the loaded set is unchanged");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "the client still gets in");
    assert_eq!(tcp_connect(&lab.srv, "127.0.0.1", 80), Tcp::Connected, "loopback still works");

    // The refused copy did not become the last good one: a re-apply loads the old list.
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(set_elements(&lab.srv, "bad_v4"), before);
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected);
}

/// Rules of table inet phantomc as `nft list` sees them.
fn listed_rules(ns: &Netns) -> usize {
    table_json(ns)["nftables"].as_array().expect("array").iter().filter(|o| o.get("rule").is_some()).count()
}

/// Elements of one set, counted from `nft -j list set`.
fn element_count(ns: &Netns, set: &str) -> usize {
    let out = ns.nft(&["-j", "list", "set", "inet", "phantomc", set]);
    assert!(out.status.success(), "list set: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft json");
    v["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("set")?.get("elem")?.as_array())
        .map(Vec::len)
        .sum()
}

/// A reload with a big feed (150k entries) keeps the feed and the run-time
/// entries and still verifies what it loaded (the rule count, read from the
/// kernel without listing the set). Timings are in benches/feeds_bench.sh.
#[test]
fn apply_reloads_a_big_feed_and_verifies_it() {
    require_tools();
    const HOSTS: u32 = 150_000;
    let ns = Netns::new("bigfeed");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("big.pf");
    std::fs::write(
        &policy,
        "table phantomc\nfeed big {\n    source \"big.txt\"\n    max-entries 1000000\n    max-shrink 100\n}\n\
         set blocked dynamic\npass in on lo\nblock in from <big>\nblock in from <blocked>\npass in proto tcp to port 22\n",
    )
    .expect("policy");
    // Every other address of 100.64.0.0/10: nothing aggregates.
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0));
    let list: String = (0..HOSTS).map(|i| format!("{}\n", std::net::Ipv4Addr::from(base + 2 * i))).collect();
    std::fs::write(dir.path().join("big.txt"), list).expect("feed");
    let state = dir.path().join("state");
    let (policy, state) = (policy.to_str().expect("path"), state.to_str().expect("path"));

    let out = ns.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = ns.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = ns.phantomc(&["block", "192.0.2.7", "--set", "blocked"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The reload: the feed comes from the cache, the block entry from the kernel.
    let out = ns.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rules = listed_rules(&ns);
    let expected = format!("({rules} rules, 4 sets, {} run-time set entries kept)", HOSTS + 1);
    assert!(stdout(&out).contains(&expected), "want {expected}: {}", stdout(&out));
    assert_eq!(element_count(&ns, "big_v4"), HOSTS as usize);
    assert!(stdout(&ns.nft(&["list", "set", "inet", "phantomc", "blocked_v4"])).contains("192.0.2.7"));

    // status reads rules and set definitions over netlink and leaves the
    // feed's contents alone; the run-time entry is read back exactly.
    let out = ns.phantomc(&["status", policy]);
    assert!(stdout(&out).contains("in sync") && stdout(&out).contains("1 run-time set entries"), "{}", stdout(&out));
    let live = ns.run_in(|| phantomc::nft::kernel::set_elements("phantomc", "blocked_v4").expect("elements"));
    assert_eq!(live.iter().map(|e| e.net.to_string()).collect::<Vec<_>>(), ["192.0.2.7/32"]);

    // The verification's own count agrees with nft's listing, and sees a change.
    assert_eq!(ns.run_in(|| phantomc::nft::kernel::count("phantomc").expect("count")), rules);
    let out = ns.nft(&["add", "rule", "inet", "phantomc", "input", "counter"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ns.run_in(|| phantomc::nft::kernel::count("phantomc").expect("count")), rules + 1);
    assert_eq!(ns.run_in(|| phantomc::nft::kernel::count("nosuchtable").expect("count")), 0);
}

/// Whether a TCP connection from `src` (an address of `ns`) to `dst` port 80
/// is answered: `nc -z` connects and closes. A dropped SYN is never answered;
/// an answer may be late on a busy machine (neighbour discovery first), so
/// `tries` attempts of up to 2 s each.
fn connects_from(ns: &Netns, src: &str, dst: &str, tries: usize) -> bool {
    (0..tries).any(|_| ns.exec(&["nc", "-z", "-w", "2", "-s", src, dst, "80"]).status.success())
}

/// Every kind of feed entry decides real packets: a packet from a listed
/// single address, from inside a listed prefix and from a listed IPv6
/// address or prefix is dropped, and the address next to each passes.
#[test]
fn each_kind_of_feed_entry_drops_its_sources_and_spares_the_neighbours() {
    require_tool("nc");
    let lab = web_lab();
    let _web = Servers::start(&lab.srv, &[80], &[]);
    let files = FeedFiles::new();
    let (policy, state) = (files.policy.as_str(), files.state.as_str());
    std::fs::write(&files.list, "198.51.100.3\n198.51.100.16/28\n2001:db8:1::3\n2001:db8:1::100/120\n").expect("list");
    let sources = [
        ("198.51.100.3", "198.51.100.1", false, "a listed address"),
        ("198.51.100.4", "198.51.100.1", true, "the address after it"),
        ("198.51.100.20", "198.51.100.1", false, "inside a listed /28"),
        ("198.51.100.15", "198.51.100.1", true, "just below the /28"),
        ("198.51.100.32", "198.51.100.1", true, "just above the /28"),
        ("2001:db8:1::3", "2001:db8:1::1", false, "a listed IPv6 address"),
        ("2001:db8:1::4", "2001:db8:1::1", true, "the IPv6 address after it"),
        ("2001:db8:1::1ff", "2001:db8:1::1", false, "inside a listed IPv6 /120"),
        ("2001:db8:1::200", "2001:db8:1::1", true, "just above the /120"),
    ];
    for (src, _, _, _) in sources {
        lab.publ.addr("eth0", &format!("{src}/{}", if src.contains(':') { 64 } else { 24 }));
    }
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for (src, dst, passes, what) in sources {
        // One try shows a drop; a pass may need more on a busy machine.
        let tries = if passes { 3 } else { 1 };
        assert_eq!(connects_from(&lab.publ, src, dst, tries), passes, "{what} ({src})");
    }
}
