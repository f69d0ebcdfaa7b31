//! The packet lab behind `import --verify`: inside the calling thread's
//! (throwaway) network namespace, one veth pair per interface name the
//! probes use, real frames injected at each pair's far end, and every
//! probe's fate observed from outside the ruleset:
//! - accepted on the input hook: a raw socket of its protocol receives it
//!   (raw sockets are served after the last input chain);
//! - accepted on the forward hook: it leaves through its output interface;
//! - rejected: an ICMP destination-unreachable quoting it, or a TCP reset
//!   answering it, leaves the namespace;
//! - otherwise dropped: known once an end marker sent after the round's
//!   probes has arrived (see [`RoundEnd`]).
//!
//! An accepted probe's addresses and ports are read as it arrived (input;
//! an IPv6 raw socket shows the ports only) or left (forward): where a NAT
//! rule rewrote it, the rewrite is what the two kernels are compared on.
//!
//! Input probes reach the input hook because, for packets arriving on a lab
//! interface, every destination is routed as local (`local default` in
//! table 100; IPv4 destinations are also put on lo, since the kernel only
//! sends an ICMP error from an address it has); forward probes are routed out of their output interface, one
//! output interface at a time. Connection states are made real: `new` is
//! the first packet of a flow (TCP SYN), `established` is a flow entered
//! into conntrack with `conntrack -I`, `invalid` is a TCP segment without
//! flags or a UDP datagram with a bad checksum.
//!
//! The reverse-path check is made real too. Before each round of sending,
//! every source a probe wants to pass it is routed back out of the probe's
//! input interface and every other one out of the sink, by host routes in
//! the main table and in table 100 (the kernel's `fib` lookup follows the
//! main table on prerouting, the input-interface rule on the forward hook).
//! A source needing two answers, or one that is another probe's
//! destination, goes in another round. Sources the lab cannot route
//! (link-local, multicast, loopback, unspecified) are sent as they are,
//! marked as passing the check, and get the kernel's own answer in both
//! namespaces alike; forwarded back out of their input interface, the two
//! hooks' lookups would disagree for the lab's routing alone, so those are
//! not sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ir::eval::Packet;
use crate::ir::{names, Hook};

/// What happened to one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seen {
    Accepted,
    Rejected,
    Dropped,
}

/// The header fields an accepted probe arrived or left with, after NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// `None` where the socket does not show it (an IPv6 raw socket).
    pub addrs: Option<(IpAddr, IpAddr)>,
    /// Source and destination port (tcp, udp).
    pub ports: Option<(u16, u16)>,
}

impl Arrived {
    /// The same rewrite on both sides: addresses and destination port. The
    /// source port is left out: each kernel picks a masquerade's, or a new
    /// one where two conntrack entries would clash, on its own.
    pub fn same_rewrite(a: Option<Arrived>, b: Option<Arrived>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.addrs == b.addrs && a.ports.map(|p| p.1) == b.ports.map(|p| p.1),
            (a, b) => a == b,
        }
    }

    fn of(addrs: Option<(IpAddr, IpAddr)>, proto: u8, l4: &[u8]) -> Arrived {
        let ports = (matches!(proto, names::TCP | names::UDP) && l4.len() >= 4)
            .then(|| (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])));
        Arrived { addrs, ports }
    }
}

impl std::fmt::Display for Arrived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |a: Option<IpAddr>, port: Option<u16>| {
            let a = a.map_or("?".to_string(), |a| if a.is_ipv6() { format!("[{a}]") } else { a.to_string() });
            port.map_or(a.clone(), |p| format!("{a}:{p}"))
        };
        let (src, dst) = (self.addrs.map(|a| a.0), self.addrs.map(|a| a.1));
        write!(f, "{} -> {}", end(src, self.ports.map(|p| p.0)), end(dst, self.ports.map(|p| p.1)))
    }
}

/// Each probe's fate, and what an accepted one arrived or left as.
pub type Observed = Vec<(Seen, Option<Arrived>)>;

const MAGIC: [u8; 4] = *b"PHV!";
const SEQ_BASE: u32 = 0x5048_0000;
const ROUTE_TABLE: &str = "100";
/// Output of replies: a veth every reply leaves through (its peer drops them).
const SINK: &str = "phvsink";
const SINK_PEER: &str = "phvsinkp";
const CT_NEW: u8 = 8;
const CT_ESTABLISHED: u8 = 2;
const CT_INVALID: u8 = 1;
const CT_UNTRACKED: u8 = 64;

/// Probes as they will really be sent: output-hook packets and packets
/// on loopback are left out (counted), the connection state is one the
/// lab can produce, and no two probes share a flow (repeats are dropped,
/// not counted).
pub fn realize(packets: Vec<Packet>) -> (Vec<Packet>, usize) {
    let mut flows = BTreeSet::new();
    let mut out = Vec::new();
    let mut left_out = 0;
    for (i, mut p) in packets.into_iter().enumerate() {
        let on_lo = p.iif.as_deref() == Some("lo") || p.oif.as_deref() == Some("lo");
        let bad_name = [&p.iif, &p.oif].into_iter().flatten().any(|n| !usable_name(n));
        // Forwarded out of the interface it came in on, a source the lab cannot
        // route has no single reverse path: the lab's own route for the
        // probe (table 100, chosen by input interface) answers the `fib`
        // lookup on the forward hook, the main table on prerouting.
        let hairpin = p.hook == Hook::Forward && p.iif == p.oif && !routable(p.src);
        if p.hook == Hook::Output || on_lo || bad_name || hairpin {
            left_out += 1;
            continue;
        }
        p.ct_state = producible_state(&p);
        if !routable(p.src) {
            p.urpf_failed = false;
        } else if p.src == p.dst {
            // Its source is its destination: local on input; on forward,
            // routed out of the output interface like the probe itself.
            p.urpf_failed = p.hook == Hook::Input || p.iif != p.oif;
        }
        let (a, b) = ((p.src, p.sport), (p.dst, p.dport));
        let ends = if a <= b { (a, b) } else { (b, a) };
        let key = match p.proto {
            names::ICMP | names::ICMPV6 => (p.proto, ends, i),
            names::TCP | names::UDP => (p.proto, ends, 0),
            _ => (p.proto, ((p.src.min(p.dst), None), (p.src.max(p.dst), None)), 0),
        };
        if flows.insert(key) {
            out.push(p);
        }
    }
    (out, left_out)
}

/// A source the lab can route back through an interface of its choice.
fn routable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => {
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || link_local)
        }
    }
}

/// One round of sending: its probes, and the route back to each source
/// the lab routes (`Some(iif)`: out of the probe's input interface, so it
/// passes the reverse-path check; `None`: out of the sink, so it fails).
#[derive(Default)]
struct Round {
    ids: Vec<usize>,
    sources: BTreeMap<IpAddr, Option<String>>,
    /// Destinations: a host route of a source would reroute packets to it.
    dsts: BTreeSet<IpAddr>,
}

impl Round {
    /// Takes probe `i` if its reverse path fits this round's routes.
    fn take(&mut self, i: usize, p: &Packet) -> bool {
        let back = match (p.src == p.dst, p.urpf_failed) {
            // The probe's own route (a forward one's; an input one's source is local, left alone).
            (true, _) => p.oif.clone(),
            (false, true) => None,
            (false, false) => p.iif.clone(),
        };
        let routed = routable(p.src) && (p.src != p.dst || p.hook == Hook::Forward);
        let fits = !routed || (self.sources.get(&p.src).is_none_or(|b| *b == back) && !self.dsts.contains(&p.src));
        if !fits || self.sources.contains_key(&p.dst) {
            return false;
        }
        if routed {
            self.sources.insert(p.src, back);
        }
        self.dsts.insert(p.dst);
        self.ids.push(i);
        true
    }

    /// `ip -batch` lines that route each source back (in the main table and
    /// in the lab's, which the kernel's `fib` lookup may consult on the
    /// forward hook) and give lo the round's IPv4 destinations (input
    /// phase: an ICMP error is only sent from an address the host has), and
    /// the lines that undo them.
    fn routes(&self, input_phase: bool) -> (String, String) {
        let (mut setup, mut undo) = (String::new(), String::new());
        for a in self.dsts.iter().filter(|a| input_phase && a.is_ipv4()) {
            setup += &format!("address add {a}/32 dev lo\n");
            undo += &format!("address delete {a}/32 dev lo\n");
        }
        for (src, back) in &self.sources {
            let len = if src.is_ipv4() { 32 } else { 128 };
            let dev = back.as_deref().unwrap_or(SINK);
            for table in ["main", ROUTE_TABLE] {
                setup += &format!("route replace {src}/{len} dev {dev} table {table}\n");
                undo += &format!("route delete {src}/{len} dev {dev} table {table}\n");
            }
        }
        (setup, undo)
    }
}

/// The rounds probes `ids` of one phase are sent in.
fn rounds(probes: &[&Packet], ids: &[usize]) -> Vec<Round> {
    let mut out: Vec<Round> = Vec::new();
    for &i in ids {
        if !out.iter_mut().any(|r| r.take(i, probes[i])) {
            let mut r = Round::default();
            r.take(i, probes[i]);
            out.push(r);
        }
    }
    out
}

fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && !name.starts_with("phv")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The state conntrack will give the probe as the lab sends it.
fn producible_state(p: &Packet) -> u8 {
    let wanted = p.ct_state;
    // ICMP of the other family is just another protocol to conntrack.
    let other_icmp = if p.src.is_ipv6() { names::ICMP } else { names::ICMPV6 };
    if p.proto == other_icmp {
        return CT_NEW;
    }
    match p.proto {
        names::TCP | names::UDP if wanted == CT_ESTABLISHED || wanted == CT_INVALID => wanted,
        names::TCP | names::UDP => CT_NEW,
        names::ICMP => match p.icmp_type {
            Some(8) if wanted == CT_ESTABLISHED => CT_ESTABLISHED,
            Some(8 | 13 | 15 | 17) => CT_NEW,
            _ => CT_INVALID,
        },
        names::ICMPV6 => match p.icmp_type {
            Some(128) if wanted == CT_ESTABLISHED => CT_ESTABLISHED,
            Some(128 | 139) => CT_NEW,
            Some(130..=136 | 143) => CT_UNTRACKED,
            _ => CT_INVALID,
        },
        _ => CT_NEW,
    }
}

/// One lab interface: the name the rules see and the peer frames are sent from.
struct Port {
    name: String,
    index: u32,
    mac: [u8; 6],
    peer: String,
    peer_index: u32,
}

/// A lab in the current thread's network namespace.
pub struct Lab {
    ports: BTreeMap<String, Port>,
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(text) = input {
        use std::io::Write as _;
        child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| format!("cannot set {key}: {e}"))
}

fn index_of(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string; the lookup uses a socket in this thread's namespace.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(format!("no interface {name} in the lab")),
        i => Ok(i),
    }
}

impl Lab {
    /// Builds the interfaces `probes` name, forwarding on, redirects and
    /// ICMP rate limits off, replies routed out of a sink veth.
    pub fn build(probes: &[&Packet]) -> Result<Lab, String> {
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.all.accept_local", "1"),
            ("net.ipv4.conf.default.accept_local", "1"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_ratemask", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
        ] {
            sysctl(k, v)?;
        }
        // Not on every kernel: without it, ICMPv6 errors are only rate limited less.
        let _ = sysctl("net.ipv6.icmp.ratemask", "255");
        let names: BTreeSet<&str> =
            probes.iter().flat_map(|p| [&p.iif, &p.oif]).flatten().map(|s| s.as_str()).collect();
        let mut batch = format!(
            "link set lo up\nlink add {SINK} type veth peer name {SINK_PEER}\nlink set {SINK} arp off up\n\
             link set {SINK_PEER} up\n"
        );
        let mut batch6 = String::new();
        for (n, name) in names.iter().enumerate() {
            let peer = format!("phv{n}");
            batch.push_str(&format!(
                "link add {name} address 02:70:68:00:{:02x}:{:02x} type veth peer name {peer} address 02:70:68:01:{:02x}:{:02x}\n\
                 link set {name} arp off up\nlink set {peer} arp off up\n\
                 address add 100.64.{}.{}/32 dev {name}\nrule add iif {name} lookup {ROUTE_TABLE}\n",
                n >> 8,
                n & 255,
                n >> 8,
                n & 255,
                n >> 8,
                (n & 255) + 1
            ));
            batch6.push_str(&format!(
                "address add fd00:7068::{:x}/128 dev {name} nodad\nrule add iif {name} lookup {ROUTE_TABLE}\n",
                n + 1
            ));
        }
        batch.push_str(&format!("route add default dev {SINK}\n"));
        batch6.push_str(&format!("route add default dev {SINK}\n"));
        run("ip", &["-batch", "-"], Some(&batch))?;
        let mut ports = BTreeMap::new();
        let peers = names.iter().enumerate().map(|(n, _)| format!("phv{n}"));
        for peer in peers.chain([SINK_PEER.to_string()]) {
            // A peer only sends: what comes back to it must not be routed again.
            sysctl(&format!("net.ipv4.conf.{peer}.forwarding"), "0")?;
            sysctl(&format!("net.ipv6.conf.{peer}.disable_ipv6"), "1")?;
        }
        for (n, name) in names.iter().enumerate() {
            let peer = format!("phv{n}");
            let mac = [2, 0x70, 0x68, 0, (n >> 8) as u8, (n & 255) as u8];
            ports.insert(
                name.to_string(),
                Port { name: name.to_string(), index: index_of(name)?, mac, peer_index: index_of(&peer)?, peer },
            );
        }
        run("ip", &["-6", "-batch", "-"], Some(&batch6))?;
        Ok(Lab { ports })
    }

    /// Routes what arrives on a lab interface: to this host (`None`) or out of `oif`.
    fn route_to(&self, oif: Option<&str>) -> Result<(), String> {
        let (v4, v6) = match oif {
            None => ("local 0.0.0.0/0 dev lo".to_string(), "local ::/0 dev lo".to_string()),
            Some(o) => (format!("0.0.0.0/0 dev {o}"), format!("::/0 dev {o}")),
        };
        let batch = format!("route flush table {ROUTE_TABLE}\nroute add {v4} table {ROUTE_TABLE}\n");
        run("ip", &["-force", "-batch", "-"], Some(&batch))?;
        let mut batch = format!("route flush table {ROUTE_TABLE}\nroute add {v6} table {ROUTE_TABLE}\n");
        if oif.is_none() {
            // Link-local destinations are looked up on the arriving interface only.
            for (n, port) in self.ports.values().enumerate() {
                batch.push_str(&format!(
                    "route add local fe80::/10 dev {} table {ROUTE_TABLE} metric {}\n",
                    port.name,
                    n + 1
                ));
            }
        }
        run("ip", &["-6", "-force", "-batch", "-"], Some(&batch))
    }

    /// Sends every probe and says what happened to each, and how an
    /// accepted one arrived or left.
    pub fn run(&self, probes: &[&Packet]) -> Result<Observed, String> {
        self.run_ending(probes, RoundEnd::Marker)
    }

    /// [`Lab::run`], ending each round of probes as `end` says.
    pub fn run_ending(&self, probes: &[&Packet], end: RoundEnd) -> Result<Observed, String> {
        prime_established(probes)?;
        let sockets = Sockets::open(probes)?;
        // Every frame into one CPU's backlog, which the kernel works through
        // in order: a round's end marker then comes after all its probes.
        let pinned = if end == RoundEnd::Marker { Pinned::to_this_cpu() } else { Pinned(None) };
        let mut seen = vec![(Seen::Dropped, None); probes.len()];
        let mut phases: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        for (i, p) in probes.iter().enumerate() {
            let oif = if p.hook == Hook::Forward { p.oif.as_deref() } else { None };
            phases.entry(oif).or_default().push(i);
        }
        let mut marker = 0u32;
        for (oif, ids) in &phases {
            self.route_to(*oif)?;
            for round in rounds(probes, ids) {
                let (setup, undo) = round.routes(oif.is_none());
                if !setup.is_empty() {
                    run("ip", &["-force", "-batch", "-"], Some(&setup))?;
                }
                let mut last = None;
                for &i in &round.ids {
                    let p = probes[i];
                    let port = &self.ports[p.iif.as_deref().expect("input and forward probes have an input interface")];
                    sockets.send(port, &frame(p, i as u32, port.mac))?;
                    last = Some(port);
                }
                marker += 1;
                let end = last.filter(|_| pinned.0.is_some());
                if let Some(port) = end {
                    sockets.send(port, &end_marker(marker, port.mac))?;
                }
                self.observe(&sockets, probes, &mut seen, end.map(|p| (p.index, marker)))?;
                if !undo.is_empty() {
                    run("ip", &["-force", "-batch", "-"], Some(&undo))?;
                }
            }
        }
        Ok(seen)
    }

    /// Reads every socket until the round's end marker (`(ifindex,
    /// number)`) has arrived, and then once more: everything the probes
    /// before it caused was on the sockets by then, since the kernel handles
    /// a CPU's frames in order and answers, delivers or forwards each before
    /// the next. Without a marker seen, until the lab has been quiet for a
    /// while.
    fn observe(
        &self,
        sockets: &Sockets,
        probes: &[&Packet],
        seen: &mut [(Seen, Option<Arrived>)],
        marker: Option<(u32, u32)>,
    ) -> Result<(), String> {
        let forward_out: BTreeSet<u32> = self.ports.values().map(|p| p.index).collect();
        let mut buf = vec![0u8; 65536];
        let mut quiet_since = Instant::now();
        let mut last_pass = false;
        while quiet_since.elapsed() < Duration::from_millis(150) {
            let finished = last_pass;
            let mut got = false;
            for &(fd, v6) in &sockets.delivered {
                while let Some(n) = recv(fd, &mut buf, None) {
                    got = true;
                    // IPv4 raw sockets get the IP header, IPv6 ones only the payload.
                    let l4 = if v6 { &buf[..n] } else { &buf[((buf[0] & 15) as usize * 4).min(n)..n] };
                    if let Some(i) = is_probe(l4, probes) {
                        let addrs = if v6 { None } else { addresses(&buf[..n]) };
                        seen[i] = (Seen::Accepted, Some(Arrived::of(addrs, probes[i].proto, l4)));
                    }
                }
            }
            let mut from = (0u32, 0u8);
            while let Some(n) = recv(sockets.capture, &mut buf, Some(&mut from)) {
                got = true;
                let (ifindex, pkttype) = from;
                if pkttype != libc::PACKET_OUTGOING && marker.is_some_and(|m| is_end_marker(&buf[..n], ifindex, m)) {
                    last_pass = true;
                }
                if pkttype != libc::PACKET_OUTGOING || n < 14 {
                    continue;
                }
                let Some((ip, proto, l4)) = ip_payload(&buf[14..n]) else { continue };
                if forward_out.contains(&ifindex) {
                    if let Some(i) = is_probe(l4, probes).filter(|&i| probes[i].proto == proto) {
                        seen[i] = (Seen::Accepted, Some(Arrived::of(addresses(ip), proto, l4)));
                        continue;
                    }
                }
                if let Some(i) = answered(ip, proto, l4, probes) {
                    if seen[i].0 == Seen::Dropped {
                        seen[i].0 = Seen::Rejected;
                    }
                }
            }
            if finished {
                break;
            }
            if got {
                quiet_since = Instant::now();
            } else if !last_pass {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

/// How a round of probes ends: when its end marker has arrived (then every
/// answer to the probes before it is on the lab's sockets), or when nothing
/// more has come for 150 ms (the slow way, kept to check the other against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundEnd {
    Marker,
    Quiet,
}

/// The ethertype of the end marker (IEEE 802's local experimental one): no
/// IP hook sees it, and the capture socket sees it arrive.
const MARKER_ETHERTYPE: u16 = 0x88b5;

/// The frame that ends round `n`, to the port with `dst_mac`.
fn end_marker(n: u32, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[2, 0x70, 0x68, 0xff, 0xff, 0xff]);
    f.extend_from_slice(&MARKER_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(60, 0);
    f
}

/// Is `frame`, arriving on `ifindex`, the end marker `(ifindex, n)`?
fn is_end_marker(frame: &[u8], ifindex: u32, (want_if, n): (u32, u32)) -> bool {
    ifindex == want_if
        && frame.len() >= 22
        && frame[12..14] == MARKER_ETHERTYPE.to_be_bytes()
        && frame[14..18] == MAGIC
        && frame[18..22] == n.to_be_bytes()
}

/// The calling thread kept on the CPU it runs on, until dropped (when its
/// former CPUs are given back).
struct Pinned(Option<libc::cpu_set_t>);

impl Pinned {
    fn to_this_cpu() -> Pinned {
        // SAFETY: cpu_set_t is plain data; the calls take this thread (0) and valid sizes.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let cpu = libc::sched_getcpu();
            if cpu < 0 || libc::sched_getaffinity(0, size, &mut before) != 0 {
                return Pinned(None);
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                return Pinned(None);
            }
            Pinned(Some(before))
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            // SAFETY: restores the mask read in `to_this_cpu`, for this thread.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), before) };
        }
    }
}

/// `established` probes: their flow entered into conntrack, as after a
/// handshake and a reply.
fn prime_established(probes: &[&Packet]) -> Result<(), String> {
    for (i, p) in probes.iter().enumerate().filter(|(_, p)| p.ct_state == CT_ESTABLISHED) {
        let (src, dst) = (p.src.to_string(), p.dst.to_string());
        let mut args: Vec<String> =
            ["-I", "-s", &src, "-d", &dst, "-t", "600", "-u", "SEEN_REPLY,ASSURED"].map(String::from).to_vec();
        match p.proto {
            names::TCP | names::UDP => {
                let proto = if p.proto == names::TCP { "tcp" } else { "udp" };
                args.extend(["-p", proto, "--sport"].map(String::from));
                args.push(p.sport.unwrap_or(0).to_string());
                args.push("--dport".into());
                args.push(p.dport.unwrap_or(0).to_string());
                if p.proto == names::TCP {
                    args.extend(["--state", "ESTABLISHED"].map(String::from));
                }
            }
            names::ICMP => args.extend(
                ["-p", "icmp", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", &(i as u16).to_string()]
                    .map(String::from),
            ),
            _ => args.extend(
                ["-p", "icmpv6", "--icmpv6-type", "128", "--icmpv6-code", "0", "--icmpv6-id", &(i as u16).to_string()]
                    .map(String::from),
            ),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("conntrack", &args, None).map_err(|e| format!("{e} (Debian package conntrack)"))?;
    }
    Ok(())
}

/// The probe a transport segment is, when it is one unchanged in length:
/// a probe ends with MAGIC and its index.
fn is_probe(l4: &[u8], probes: &[&Packet]) -> Option<usize> {
    let i = marker(l4)?;
    let p = probes.get(i)?;
    (l4.len() == segment_len(p.proto)).then_some(i)
}

fn marker(bytes: &[u8]) -> Option<usize> {
    let tail = bytes.get(bytes.len().checked_sub(8)?..)?;
    (tail[..4] == MAGIC).then(|| u32::from_be_bytes([tail[4], tail[5], tail[6], tail[7]]) as usize)
}

/// The probe an ICMP destination-unreachable or a TCP reset answers.
fn answered(ip: &[u8], proto: u8, l4: &[u8], probes: &[&Packet]) -> Option<usize> {
    match (proto, l4.first()) {
        // Only an error sent to the probe's sender answers it: the host's
        // error about its own error (a rejected reply) loops over lo.
        (names::ICMP, Some(3)) | (names::ICMPV6, Some(1)) => {
            marker(l4).filter(|&i| probes.get(i).is_some_and(|p| addresses(ip).is_some_and(|(_, dst)| dst == p.src)))
        }
        (names::TCP, _) if l4.len() >= 20 && l4[13] & 0x04 != 0 => {
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
            // A reset answers a segment with ACK by its sequence number
            // (our ack number), one without by its ack number (our sequence
            // number plus SYN and the 8 bytes of data).
            let (src, dst) = addresses(ip)?;
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            let answers = |i: usize| {
                probes.get(i).is_some_and(|p| {
                    let syn = u32::from(p.ct_state != CT_ESTABLISHED && p.ct_state != CT_INVALID);
                    let expected = if l4[13] & 0x10 != 0 { ack.wrapping_sub(syn + 8) } else { seq };
                    p.proto == names::TCP
                        && src == p.dst
                        && dst == p.src
                        && Some(dport) == p.sport
                        && expected.wrapping_sub(SEQ_BASE) as usize == i
                })
            };
            let candidates = [seq, ack.wrapping_sub(9), ack.wrapping_sub(8)];
            candidates.into_iter().map(|v| v.wrapping_sub(SEQ_BASE) as usize).find(|&i| answers(i))
        }
        _ => None,
    }
}

/// An IP packet's header, protocol and transport segment.
fn ip_payload(pkt: &[u8]) -> Option<(&[u8], u8, &[u8])> {
    match pkt.first()? >> 4 {
        4 => {
            let ihl = (pkt[0] & 15) as usize * 4;
            let total = u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]) as usize;
            Some((&pkt[..ihl.min(pkt.len())], *pkt.get(9)?, pkt.get(ihl..total.min(pkt.len()))?))
        }
        6 => {
            let len = u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]) as usize;
            Some((&pkt[..40.min(pkt.len())], *pkt.get(6)?, pkt.get(40..(40 + len).min(pkt.len()))?))
        }
        _ => None,
    }
}

fn addresses(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match ip.first()? >> 4 {
        4 if ip.len() >= 20 => {
            let a: [u8; 4] = ip[12..16].try_into().ok()?;
            let b: [u8; 4] = ip[16..20].try_into().ok()?;
            Some((IpAddr::from(a), IpAddr::from(b)))
        }
        6 if ip.len() >= 40 => {
            let a: [u8; 16] = ip[8..24].try_into().ok()?;
            let b: [u8; 16] = ip[24..40].try_into().ok()?;
            Some((IpAddr::from(a), IpAddr::from(b)))
        }
        _ => None,
    }
}

/// The transport segment's length: its header and the 8-byte marker.
fn segment_len(proto: u8) -> usize {
    8 + match proto {
        names::TCP => 20,
        names::UDP | names::ICMP | names::ICMPV6 => 8,
        47 => 4,
        _ => 0,
    }
}

/// The Ethernet frame of probe `id`.
fn frame(p: &Packet, id: u32, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(segment_len(p.proto));
    let (sport, dport) = (p.sport.unwrap_or(0), p.dport.unwrap_or(0));
    match p.proto {
        names::TCP => {
            let flags: u8 = match p.ct_state {
                CT_ESTABLISHED => 0x18, // ACK, PSH
                CT_INVALID => 0,        // no flag at all: conntrack calls it invalid
                _ => 0x02,              // SYN
            };
            let seq = SEQ_BASE.wrapping_add(id);
            l4.extend(sport.to_be_bytes());
            l4.extend(dport.to_be_bytes());
            l4.extend(seq.to_be_bytes());
            l4.extend(if flags & 0x10 != 0 { seq } else { 0 }.to_be_bytes());
            l4.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        names::UDP => {
            l4.extend(sport.to_be_bytes());
            l4.extend(dport.to_be_bytes());
            l4.extend((segment_len(p.proto) as u16).to_be_bytes());
            l4.extend([0, 0]);
        }
        names::ICMP | names::ICMPV6 => {
            l4.extend([p.icmp_type.unwrap_or(8), 0, 0, 0]);
            l4.extend((id as u16).to_be_bytes());
            l4.extend([0, 1]);
        }
        47 => l4.extend([0, 0, 0x08, 0]),
        _ => {}
    }
    l4.extend(MAGIC);
    l4.extend(id.to_be_bytes());
    let mut ip = Vec::with_capacity(40);
    let pseudo: Vec<u8> = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend([0x45, 0]);
            ip.extend((20 + l4.len() as u16).to_be_bytes());
            ip.extend((id as u16).to_be_bytes());
            ip.extend([0, 0, 64, p.proto, 0, 0]);
            ip.extend(s.octets());
            ip.extend(d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            [&s.octets()[..], &d.octets()[..], &[0, p.proto], &(l4.len() as u16).to_be_bytes()].concat()
        }
        (s, d) => {
            let (s, d) = (v6_octets(s), v6_octets(d));
            ip.extend((0x6000_0000u32 | (id & 0xf_ffff)).to_be_bytes());
            ip.extend((l4.len() as u16).to_be_bytes());
            ip.extend([p.proto, 64]);
            ip.extend(s);
            ip.extend(d);
            [&s[..], &d[..], &(l4.len() as u32).to_be_bytes(), &[0, 0, 0, p.proto]].concat()
        }
    };
    let at = match p.proto {
        names::TCP => Some(16),
        names::UDP => Some(6),
        names::ICMP | names::ICMPV6 => Some(2),
        _ => None,
    };
    if let Some(at) = at {
        let sum = if p.proto == names::ICMP { checksum(&[&l4]) } else { checksum(&[&pseudo, &l4]) };
        let sum = match (p.proto, sum) {
            (names::UDP, 0) => 0xffff,
            _ => sum,
        };
        // An invalid UDP datagram: a checksum off by one.
        let sum = if p.proto == names::UDP && p.ct_state == CT_INVALID { sum ^ 1 } else { sum };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    let ethertype: [u8; 2] = if p.src.is_ipv4() { [8, 0] } else { [0x86, 0xdd] };
    [&dst_mac[..], &[2, 0x70, 0x68, 1, 0, 0], &ethertype, &ip, &l4].concat()
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The Internet checksum of the concatenated parts.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The lab's sockets, closed on drop.
struct Sockets {
    /// Sends frames from a peer, and sees every frame leaving any interface.
    capture: i32,
    /// One raw socket per probed protocol and family (true: IPv6): what input accepted.
    delivered: Vec<(i32, bool)>,
}

impl Sockets {
    fn open(probes: &[&Packet]) -> Result<Sockets, String> {
        let all = (libc::ETH_P_ALL as u16).to_be() as i32;
        let capture = open_socket(libc::AF_PACKET, all)?;
        let mut s = Sockets { capture, delivered: Vec::new() };
        let kinds: BTreeSet<(bool, u8)> = probes.iter().map(|p| (p.src.is_ipv6(), p.proto)).collect();
        for (v6, proto) in kinds {
            s.delivered.push((open_socket(if v6 { libc::AF_INET6 } else { libc::AF_INET }, i32::from(proto))?, v6));
        }
        Ok(s)
    }

    fn send(&self, port: &Port, frame: &[u8]) -> Result<(), String> {
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set are plain integers.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = port.peer_index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&port.mac);
        // SAFETY: frame and address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.capture,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(format!(
                "cannot send a probe from {} to {}: {}",
                port.peer,
                port.name,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for fd in std::iter::once(self.capture).chain(self.delivered.iter().map(|d| d.0)) {
            // SAFETY: fds this struct opened and owns.
            unsafe { libc::close(fd) };
        }
    }
}

fn open_socket(domain: i32, proto: i32) -> Result<i32, String> {
    // SAFETY: plain socket syscalls on an fd this function owns.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto);
        if fd < 0 {
            return Err(format!("cannot open a raw socket: {}", std::io::Error::last_os_error()));
        }
        let size: i32 = 32 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<i32>() as u32,
        );
        Ok(fd)
    }
}

/// One datagram, if one is waiting; for a packet socket, also its
/// interface and packet type.
fn recv(fd: i32, buf: &mut [u8], from: Option<&mut (u32, u8)>) -> Option<usize> {
    // SAFETY: buf and the address are valid for the lengths given.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    let n = unsafe {
        libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, std::ptr::addr_of_mut!(addr).cast(), &mut len)
    };
    if n <= 0 {
        return None;
    }
    if let Some(f) = from {
        *f = (addr.sll_ifindex as u32, addr.sll_pkttype);
    }
    Some(n as usize)
}
