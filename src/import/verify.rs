//! `import --verify`: the original ruleset is loaded into a throwaway
//! network namespace (with `iptables-restore`), read back from that kernel
//! over netlink, and the same generated packets (at least 2,000, plus the
//! boundary values of every imported rule) are decided by both: the
//! original's kernel rules through [`crate::analyze::live`]'s model of
//! nf_tables, the imported policy through [`crate::ir::eval`]. Every packet
//! whose verdict differs is reported with the rules that decided it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::analyze::live::{self, Outcome};
use crate::analyze::packet;
use crate::ir::eval::{self, Packet, SetContents};
use crate::ir::{names, Action, AddrMatch, Hook, Ruleset};
use crate::nft::tables::{self, Chain};

/// One packet the two sides decide differently.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    pub packet: String,
    pub original: String,
    pub original_rule: String,
    pub imported: String,
    pub imported_rule: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub packets: usize,
    /// Differences no untranslated construct explains: the import is wrong.
    pub differing: Vec<Difference>,
    /// Differences where the original decided by a rule reported as not translated.
    pub explained: Vec<Difference>,
    /// Packets the original decides with an expression the model cannot evaluate.
    pub unknown: usize,
    /// One example of what could not be evaluated.
    pub unknown_example: Option<String>,
    /// Packets that meet a rate-limited imported rule (either verdict is right).
    pub rate_limited: usize,
}

/// Loads `files` (IPv4 and IPv6 save files) with `iptables-restore` /
/// `ip6tables-restore` into a scratch namespace and reads every chain back.
pub fn load_original(files: &[(String, String, bool)]) -> Result<Original, String> {
    crate::nft::in_scratch_netns(|| {
        for (name, text, v6) in files {
            let tool = if *v6 { "ip6tables-restore" } else { "iptables-restore" };
            let mut child = Command::new(tool)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {tool} (Debian package iptables): {e}"))?;
            use std::io::Write as _;
            child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| e.to_string())?;
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("{tool} refused {name}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        read_back()
    })
    .map_err(|e| e.to_string())?
}

/// The original as loaded in a scratch namespace: its chains and the keys
/// of every set its rules look up (read there, before the namespace goes).
pub struct Original {
    pub chains: Vec<Chain>,
    pub sets: std::collections::BTreeMap<(u8, String, String), tables::SetKeys>,
}

/// Reads the calling thread's namespace's chains and looked-up sets.
fn read_back() -> Result<Original, String> {
    let chains = tables::chains().map_err(|e| format!("cannot read the loaded ruleset back: {e}"))?;
    let mut sets = std::collections::BTreeMap::new();
    for c in &chains {
        for e in c.rules.iter().flat_map(|r| &r.exprs) {
            if let tables::Expr::Lookup { set, .. } = e {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    sets.entry((c.family, c.table.clone(), set.clone()))
                {
                    if let Some(keys) = tables::set_keys(c.family, &c.table, set).map_err(|e| e.to_string())? {
                        slot.insert(keys);
                    }
                }
            }
        }
    }
    Ok(Original { chains, sets })
}

/// Loads an nft ruleset (a script, or JSON when it starts with `{`) into
/// a scratch namespace; returns every chain and the ruleset as
/// `nft -j list ruleset` prints it there.
pub fn load_nft(text: &str) -> Result<(Original, String), String> {
    crate::nft::in_scratch_netns(|| {
        let nft = crate::nft::Nft::default();
        let args: &[&str] = if text.trim_start().starts_with('{') { &["-j", "-f", "-"] } else { &["-f", "-"] };
        nft.run(args, Some(text)).map_err(|e| format!("nft refused the ruleset: {e}"))?;
        let json = nft.run(&["-j", "list", "ruleset"], None).map_err(|e| e.to_string())?;
        Ok((read_back()?, json))
    })
    .map_err(|e| e.to_string())?
}

/// Compares the two sides on `count` generated packets and the boundaries
/// of `rs`'s rules; `untranslated(table, chain, index)` says whether the
/// original's deciding rule is one the import reported as not translated.
pub fn compare(
    original: &Original,
    rs: &Ruleset,
    v6: bool,
    count: usize,
    seed: u64,
    untranslated: &dyn Fn(&str, &str, usize) -> Option<String>,
) -> Report {
    let mut report = Report::default();
    let mut sets =
        |family: u8, table: &str, set: &str| original.sets.get(&(family, table.to_string(), set.to_string())).cloned();
    for p in packets(rs, v6, count, seed) {
        report.packets += 1;
        let kv = live::kernel_verdict(&p, &original.chains, &mut sets);
        let (outcome, by) = (kv.outcome, kv.by);
        let d = eval::decide(rs, &p, &SetContents::new());
        if d.rate_limited {
            report.rate_limited += 1;
            continue;
        }
        let original = match outcome {
            Outcome::Accept => Action::Pass,
            Outcome::Drop => Action::Block,
            Outcome::Reject => Action::Reject,
            Outcome::Unknown => {
                report.unknown += 1;
                report.unknown_example.get_or_insert(by);
                continue;
            }
        };
        if original != d.verdict {
            let imported_rule = eval::deciding_rule(rs, &p, &d)
                .map_or_else(|| format!("policy {}", p.hook.name()), |r| r.origin.id.clone());
            let reported = kv.rules.iter().find_map(|(table, chain, i)| untranslated(table, chain, *i));
            let diff = Difference {
                packet: packet::format(&p),
                original: original.keyword().into(),
                original_rule: match &reported {
                    Some(line) => format!("{by}, {line}, not translated"),
                    None => by,
                },
                imported: d.verdict.keyword().into(),
                imported_rule,
            };
            match reported {
                Some(_) => report.explained.push(diff),
                None => report.differing.push(diff),
            }
        }
    }
    report
}

/// Deterministic pseudo-random numbers (splitmix64), seeded by its field.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[(self.next_u64() % xs.len() as u64) as usize].clone()
    }
}

/// Addresses inside, at the edges of and just outside a network.
fn edges(net: &IpNet) -> Vec<IpAddr> {
    let (first, last) = (net.network(), net.broadcast());
    let step = |a: IpAddr, up: bool| -> Option<IpAddr> {
        match a {
            IpAddr::V4(x) => {
                let n = u32::from(x);
                Some(IpAddr::V4(Ipv4Addr::from(if up { n.checked_add(1)? } else { n.checked_sub(1)? })))
            }
            IpAddr::V6(x) => {
                let n = u128::from(x);
                Some(IpAddr::V6(Ipv6Addr::from(if up { n.checked_add(1)? } else { n.checked_sub(1)? })))
            }
        }
    };
    [Some(first), Some(last), step(first, false), step(last, true), step(first, true)].into_iter().flatten().collect()
}

/// `count` random packets over the values the rules of `rs` use, then one
/// packet per boundary value of every rule.
pub fn packets(rs: &Ruleset, v6: bool, count: usize, seed: u64) -> Vec<Packet> {
    let mut addrs: Vec<IpAddr> = if v6 {
        vec!["2001:db8::1".parse().expect("address"), "2001:db8:ffff::9".parse().expect("address")]
    } else {
        vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]
    };
    let mut ports: Vec<u16> = vec![1, 1023, 1024, 40000, 65535];
    let mut ifaces: Vec<String> = vec!["eth0".into(), "lo".into(), "wlan7".into()];
    let mut protos: Vec<u8> = vec![names::TCP, names::UDP, if v6 { names::ICMPV6 } else { names::ICMP }, 47];
    let mut icmp: Vec<u8> = vec![0, 3, 8, 11, 128, 129, 135, 136];
    for r in rs.chains.iter().flat_map(|c| &c.rules) {
        let m = &r.matches;
        for a in [&m.src, &m.dst] {
            if let AddrMatch::Nets { nets, .. } = a {
                addrs.extend(nets.iter().flat_map(edges).filter(|a| a.is_ipv6() == v6));
            }
        }
        for pm in [&m.sport, &m.dport].into_iter().flatten() {
            for &(lo, hi) in &pm.ranges {
                ports.extend([lo, hi, lo.saturating_sub(1), hi.saturating_add(1)]);
            }
        }
        for i in [&m.iif, &m.oif].into_iter().flatten().flatten() {
            ifaces.push(i.trim_end_matches('*').to_string() + if i.ends_with('*') { "9" } else { "" });
        }
        protos.extend(m.proto);
        icmp.extend(m.icmp_types.iter().flatten());
    }
    ports.sort_unstable();
    ports.dedup();
    icmp.sort_unstable();
    icmp.dedup();
    protos.sort_unstable();
    protos.dedup();
    addrs.sort();
    addrs.dedup();
    ifaces.sort();
    ifaces.dedup();
    let states = [8u8, 2, 4, 1];
    let mut rng = Rng(seed);
    let make = |rng: &mut Rng, proto: u8, port: Option<u16>, addr: Option<IpAddr>| {
        let hook = rng.pick(&Hook::ALL);
        let has_ports = names::has_ports(proto);
        let is_icmp = matches!(proto, names::ICMP | names::ICMPV6);
        let (mut src, mut dst) = (rng.pick(&addrs), rng.pick(&addrs));
        if let Some(a) = addr {
            if rng.next_u64().is_multiple_of(2) {
                src = a;
            } else {
                dst = a;
            }
        }
        Packet {
            hook,
            iif: (hook != Hook::Output).then(|| rng.pick(&ifaces)),
            oif: (hook != Hook::Input).then(|| rng.pick(&ifaces)),
            src,
            dst,
            proto,
            sport: has_ports.then(|| rng.pick(&ports)),
            dport: has_ports.then(|| port.unwrap_or_else(|| rng.pick(&ports))),
            icmp_type: is_icmp.then(|| rng.pick(&icmp)),
            ct_state: rng.pick(&states),
        }
    };
    let mut out: Vec<Packet> = (0..count)
        .map(|_| {
            let proto = rng.pick(&protos);
            make(&mut rng, proto, None, None)
        })
        .collect();
    for port in ports.clone() {
        for proto in [names::TCP, names::UDP] {
            out.push(make(&mut rng, proto, Some(port), None));
        }
    }
    for a in addrs.clone() {
        let proto = rng.pick(&protos);
        out.push(make(&mut rng, proto, None, Some(a)));
    }
    out
}
