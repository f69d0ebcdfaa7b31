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

/// Packets counted by the rules of one policy line (`feeds.pf:15`, the
/// established rule; a feed's line has a rule per kernel set of the feed).
fn line_packets(ns: &Netns, line: &str) -> u64 {
    table_json(ns)["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r.get("comment").and_then(|c| c.as_str()) == Some(line))
        .filter_map(|r| r.get("expr")?.as_array())
        .flatten()
        .filter_map(|e| e.get("counter")?.get("packets")?.as_u64())
        .sum()
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
    let v4 = feed_set(&lab.srv, "bad_v4");
    assert!(v4.contains("198.51.100.2") && v4.contains("203.0.113.0/24") && !v4.contains("10.10.0.0/16"), "{v4}");

    let (p, a) = (&lab.publ, &lab.adm);
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "listed source drops");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected, "its unlisted IPv6 address passes");
    assert_eq!(tcp_connect(a, "10.10.0.1", 80), Tcp::Connected, "the allowlisted admin LAN passes");

    let mut conn = Conn::open(a, "10.10.0.1", 9000);
    assert!(conn.round_trip(b"before the update"));
    let before = (handles(&lab.srv, "table"), handles(&lab.srv, "chain"), rule_handles(&lab.srv));
    let counted = line_packets(&lab.srv, "feeds.pf:15");
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
    assert!(line_packets(&lab.srv, "feeds.pf:15") > counted, "counters keep counting, never reset");

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
    assert!(feed_set(&lab.srv, "bad_v6").contains("2001:db8:1::2"));

    // A full re-apply keeps the feed from the cache.
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(feed_set(&lab.srv, "bad_v6").contains("2001:db8:1::2"));
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
    let before = feed_set(&lab.srv, "bad_v4");
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
    assert_eq!(feed_set(&lab.srv, "bad_v4"), before, "the loaded set is unchanged");
    assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", 80), Tcp::Connected, "the client still gets in");
    assert_eq!(tcp_connect(&lab.srv, "127.0.0.1", 80), Tcp::Connected, "loopback still works");

    // The refused copy did not become the last good one: a re-apply loads the old list.
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(feed_set(&lab.srv, "bad_v4"), before);
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
    // The feed's kernel sets (4 for IPv4, 4 for IPv6, see feed_layout) and blocked_v4/v6.
    let expected = format!("({rules} rules, 10 sets, {} run-time set entries kept)", HOSTS + 1);
    assert!(stdout(&out).contains(&expected), "want {expected}: {}", stdout(&out));
    assert_eq!(element_count(&ns, "big_v4_32"), HOSTS as usize, "single addresses go to the /32 hash set");
    assert_eq!(element_count(&ns, "big_v4"), 0);
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

/// Whether one ping from `src` (an address of pub) to the server is counted
/// by the feed's rule, and how often: a listed source exactly once.
fn feed_counts(lab: &WebLab, src: &str) -> u64 {
    let dst = if src.contains(':') { "2001:db8:1::1" } else { "198.51.100.1" };
    let before = line_packets(&lab.srv, "feeds.pf:16");
    lab.publ.exec(&["ping", "-n", "-q", "-c", "1", "-W", "0.2", "-I", src, dst]);
    line_packets(&lab.srv, "feeds.pf:16") - before
}

/// Elements of each kernel set of the feed, by name.
fn kernel_set_sizes(ns: &Netns) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for family in [phantomc::ir::Family::V4, phantomc::ir::Family::V6] {
        let set = phantomc::ir::nft_set_name("bad", family);
        for k in phantomc::ir::feed_layout::kernel_sets(&set, family) {
            out.push((k.name.clone(), element_count(ns, &k.name)));
        }
    }
    out
}

/// The per-length layout decides real packets at every prefix length, in
/// both families: single addresses and networks split into the /32, /24
/// (IPv6 /128, /64, /48) hash sets, the rest (a /16 too) in the interval set; an
/// address listed both alone and inside a network counts once. An update
/// that changes which lengths are present moves the entries between the
/// sets in place (no reload), and a feed whose entries are all cut away
/// (allow-always) empties every set. status stays in sync throughout.
#[test]
fn the_per_length_layout_matches_every_prefix_and_follows_updates() {
    require_tool("ping");
    let lab = web_lab();
    let files = FeedFiles::new();
    let (policy, list, state) = (files.policy.as_str(), &files.list, files.state.as_str());
    let probes = [
        "203.0.113.7",
        "203.0.113.8",
        "203.0.113.66",
        "203.0.113.68",
        "203.0.114.200",
        "203.1.3.9",
        "203.1.4.1",
        "203.2.77.1",
        "203.3.0.1",
        "203.4.0.31",
        "203.4.0.32",
        "203.5.0.9",
        "203.6.1.1",
        "203.6.2.1",
        "203.79.1.1",
        "2001:db8:100::7",
        "2001:db8:100::8",
        "2001:db8:101::abcd",
        "2001:db8:102:1::5",
        "2001:db8:102:2::1",
        "2001:db8:103:ff::1",
        "2001:db8:104::ff",
        "2001:db8:104::100",
    ];
    for src in probes {
        lab.publ.addr("eth0", &format!("{src}/{}", if src.contains(':') { 128 } else { 32 }));
    }
    // No neighbour discovery from the probes' sources (the feed would drop it).
    let mac = stdout(&lab.srv.ip(&["-br", "link", "show", "eth0"])).split_whitespace().nth(2).expect("mac").to_string();
    lab.publ.ip(&["-6", "neigh", "replace", "2001:db8:1::1", "lladdr", &mac, "dev", "eth0", "nud", "permanent"]);
    let listed = |want: &[&str]| {
        for src in probes {
            let counted = feed_counts(&lab, src);
            assert_eq!(counted, u64::from(want.contains(&src)), "{src}: counted {counted} times by the feed rule");
        }
    };
    let in_sync = || {
        let out = lab.srv.phantomc(&["status", policy]);
        assert!(stdout(&out).contains("in sync"), "{}{}", stdout(&out), stderr(&out));
    };

    std::fs::write(
        list,
        "203.0.113.7\n203.0.113.64/30\n203.0.114.0/24\n203.1.0.0/22\n203.2.0.0/16\n203.4.0.0/27\n\
         203.5.0.0/24\n203.5.0.9\n203.64.0.0/12\n2001:db8:100::7\n2001:db8:101::/64\n2001:db8:102::/63\n2001:db8:103::/48\n\
         2001:db8:104::/120\n",
    )
    .expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let sizes = |v4: [usize; 4], v6: [usize; 4]| -> Vec<(String, usize)> {
        let v4_names = ["bad_v4_32", "bad_v4_24", "bad_v4_r16", "bad_v4"];
        let names = v4_names.into_iter().chain(["bad_v6_128", "bad_v6_64", "bad_v6_48", "bad_v6"]);
        names.map(|n| n.to_string()).zip(v4.into_iter().chain(v6)).collect()
    };
    // /32 + /30 as four /32s; /24, /22 as four /24s, the /24 holding .9; the /16, the /27, the /12 and
    // the /120 in the interval sets, the /16s they touch (1 + 1 + 16) in the IPv4 prefilter.
    assert_eq!(kernel_set_sizes(&lab.srv), sizes([5, 6, 18, 3], [1, 3, 1, 1]));
    listed(&[
        "203.0.113.7",
        "203.0.113.66",
        "203.0.114.200",
        "203.1.3.9",
        "203.2.77.1",
        "203.4.0.31",
        "203.5.0.9",
        "203.79.1.1",
        "2001:db8:100::7",
        "2001:db8:101::abcd",
        "2001:db8:102:1::5",
        "2001:db8:103:ff::1",
        "2001:db8:104::ff",
    ]);
    in_sync();
    let rules = rule_handles(&lab.srv);

    // No /16 and no IPv6 any more, a /23 (two /24s) and a /31 (two /32s).
    std::fs::write(list, "203.0.113.8/31\n203.4.0.0/27\n203.6.0.0/23\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(kernel_set_sizes(&lab.srv), sizes([2, 2, 1, 1], [0, 0, 0, 0]));
    listed(&["203.0.113.8", "203.4.0.31", "203.6.1.1"]);
    assert_eq!(rule_handles(&lab.srv), rules, "replaced in place, no reload");
    in_sync();

    // Everything listed is protected: every set is empty, nothing is counted.
    std::fs::write(list, "10.10.0.0/25\n").expect("list");
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(kernel_set_sizes(&lab.srv), sizes([0; 4], [0; 4]));
    listed(&[]);
    in_sync();
}
