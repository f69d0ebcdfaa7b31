//! The ctnetlink reader against a real conntrack table in a namespace,
//! cross-checked with the `conntrack` tool.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use phantomc::host::conntrack::{self, Counters, CtEntry, TcpState, Watched};

fn find<'a>(entries: &'a [CtEntry], proto: u8, src: &str, dport: u16) -> &'a CtEntry {
    let src: IpAddr = src.parse().unwrap();
    entries
        .iter()
        .find(|e| e.proto == proto && e.orig.src == src && e.orig.dport == dport)
        .unwrap_or_else(|| panic!("no entry proto {proto} from {src} to port {dport} in {entries:#?}"))
}

/// Watches `srv`'s conntrack events while `client` runs, and for `settle`
/// after it has finished.
fn watch_while(srv: &Netns, client: impl FnOnce() + Send, settle: Duration) -> Watched {
    let done_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = done_at.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            client();
            *done.lock().unwrap() = Some(Instant::now());
        });
        let finished = move || done_at.lock().unwrap().is_some_and(|t| t.elapsed() > settle);
        srv.run_in(move || conntrack::watch(Duration::from_secs(30), &finished)).expect("watch")
    })
}

#[test]
fn reads_the_namespace_conntrack_table() {
    require_tools();
    require_tool("conntrack");
    let (srv, cli) = (Netns::new("ctsrv"), Netns::new("ctcli"));
    link(&srv, "eth0", &cli, "eth0");
    srv.addr("eth0", "10.66.0.1/24");
    srv.addr("eth0", "fd00:66::1/64");
    cli.addr("eth0", "10.66.0.2/24");
    cli.addr("eth0", "fd00:66::2/64");
    srv.track_connections();
    let _echo = echo_server(&srv, 5432);

    let mut v4 = Conn::open(&cli, "10.66.0.1", 5432);
    let mut v6 = Conn::open(&cli, "fd00:66::1", 5432);
    for _ in 0..3 {
        assert!(v4.round_trip(b"select 1;"));
    }
    assert!(v6.round_trip(b"select 1;"));
    cli.run_in(|| UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"hello?", "10.66.0.1:9999").unwrap());

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let entries = srv.run_in(conntrack::dump).expect("dump");
    // A refused SYN: the kernel drops that entry at once, only the destroy event shows it.
    assert!(entries.iter().all(|e| e.orig.dport != 81), "{entries:#?}");
    let watched =
        watch_while(&srv, || assert_eq!(tcp_connect(&cli, "10.66.0.1", 81), Tcp::Refused), Duration::from_millis(300));

    let est = find(&entries, 6, "10.66.0.2", 5432);
    assert_eq!(est.orig.sport, v4.local_port());
    assert_eq!(est.reply.src, "10.66.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(est.reply.dport, v4.local_port());
    assert_eq!(est.tcp_state, Some(TcpState::Established));
    assert!(est.seen_reply && est.assured);
    // SYN, ACK, three requests (+ their ACKs may be piggybacked): at least 5 packets, 27 payload bytes.
    let orig = est.orig_counters.expect("acct counters");
    assert!(orig.packets >= 5 && orig.bytes >= 27 + 5 * 40, "{orig:?}");
    assert!(est.reply_counters.expect("reply counters").packets >= 4);
    let start = est.start_ns.expect("timestamp");
    assert!(start <= before && before - start < 60_000_000_000, "start {start} vs now {before}");

    let est6 = find(&entries, 6, "fd00:66::2", 5432);
    assert_eq!(est6.orig.sport, v6.local_port());
    assert_eq!(est6.tcp_state, Some(TcpState::Established));

    let rej = find(&watched.destroyed, 6, "10.66.0.2", 81);
    assert_eq!(rej.tcp_state, Some(TcpState::Close));
    assert!(!rej.seen_reply && !rej.assured);
    assert_eq!(rej.orig_counters.map(|c| c.packets), Some(1));
    assert_eq!(rej.reply_counters.map(|c| c.packets), Some(1));

    let udp = find(&entries, 17, "10.66.0.2", 9999);
    assert!(!udp.seen_reply && udp.tcp_state.is_none());
    assert_eq!(udp.orig_counters, Some(Counters { packets: 1, bytes: 34 }));

    // Same table as the conntrack tool lists.
    let tool = srv.exec(&["conntrack", "-L", "-o", "extended"]);
    assert!(tool.status.success(), "{}", stderr(&tool));
    let from_tool: BTreeSet<(u8, IpAddr, IpAddr, u16, u16)> = stdout(&tool)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let proto: u8 = words.get(3)?.parse().ok()?;
            let field = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
            let port = |key: &str| field(key).map_or(0, |p| p.parse().unwrap());
            Some((proto, field("src=")?.parse().ok()?, field("dst=")?.parse().ok()?, port("sport="), port("dport=")))
        })
        .collect();
    let ours: BTreeSet<_> = entries
        .iter()
        .filter(|e| matches!(e.proto, 6 | 17))
        .map(|e| (e.proto, e.orig.src, e.orig.dst, e.orig.sport, e.orig.dport))
        .collect();
    let tool_ports: BTreeSet<_> = from_tool.into_iter().filter(|t| matches!(t.0, 6 | 17)).collect();
    assert_eq!(ours, tool_ports);
    // The live part of the watch is the same table.
    let live: BTreeSet<_> = watched.live.iter().filter(|e| e.orig.dport == 5432).map(|e| e.orig).collect();
    assert_eq!(live, entries.iter().filter(|e| e.orig.dport == 5432).map(|e| e.orig).collect());
    assert_eq!(watched.lost_overruns, 0);
}

/// An entry that times out during a watch is reported as ended whether or
/// not the kernel has reaped it (and sent its destroy event) yet.
#[test]
fn a_watch_keeps_entries_that_expire_during_it() {
    require_tools();
    let (srv, cli) = (Netns::new("ctexp"), Netns::new("ctexc"));
    link(&srv, "eth0", &cli, "eth0");
    srv.addr("eth0", "10.68.0.1/24");
    cli.addr("eth0", "10.68.0.2/24");
    srv.track_connections();
    srv.sysctl("net.netfilter.nf_conntrack_udp_timeout=1");
    // Keep watching until the entry has been expired (1 s) for a while.
    let watched = watch_while(
        &srv,
        || {
            cli.run_in(|| UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"probe", "10.68.0.1:7777").unwrap());
        },
        Duration::from_millis(2500),
    );
    assert!(watched.live.iter().all(|e| e.orig.dport != 7777), "expired after 1 s: {:#?}", watched.live);
    let ended = find(&watched.destroyed, 17, "10.68.0.2", 7777);
    assert!(!ended.seen_reply);
    let (start, stop) = (ended.start_ns.expect("start"), ended.stop_ns.expect("stop"));
    assert!(start <= stop, "{start} {stop}");
}

#[test]
fn learn_conntrack_without_privileges_is_a_clear_error() {
    require_tool("setpriv");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.pf");
    std::fs::write(&policy, "table phantomc\npolicy input block\n").unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_phantomc"),
            "learn",
            "--conntrack",
            "--policy",
        ])
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("conntrack dump failed: Operation not permitted") && err.contains("CAP_NET_ADMIN"), "{err}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), "table phantomc\npolicy input block\n");
}
