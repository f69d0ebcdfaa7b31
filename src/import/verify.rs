//! `import --verify`: proof with real packets. The original ruleset is
//! loaded into one throwaway network namespace (`iptables-restore`,
//! `iptables-legacy-restore` for a legacy save, or `nft -f`), the imported
//! policy, compiled by phantomc, into a second one; the same generated
//! packets (at least 2,000 per family, plus the boundary values of every
//! imported rule) are sent through both kernels by [`super::lab`], and every
//! packet whose fate differs is reported, with the rules that decided it on
//! each side (the original's read back over netlink and named as
//! `explain --live` names them, the imported one from phantomc's IR).
//! The namespaces belong to two threads and vanish with them, even on panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::lab::{self, Lab, Observed, Seen};
use crate::analyze::live;
use crate::analyze::packet;
use crate::ir::eval::{self, Packet, SetContents};
use crate::ir::{names, pattern_example, Action, AddrMatch, Compiled, Hook, Ifaces, Ruleset};
use crate::nft::tables::{self, Chain};

/// One packet the two kernels treat differently.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    pub packet: String,
    pub original: String,
    pub original_rule: String,
    pub imported: String,
    pub imported_rule: String,
}

/// One family's comparison.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Packets sent through both kernels.
    pub packets: usize,
    /// Of them, to the input hook and through the forward hook.
    pub input: usize,
    pub forward: usize,
    /// Generated packets not sent: those on loopback, and those forwarded
    /// back out of their input interface from a source the lab cannot route
    /// (see [`super::lab::realize`]).
    pub not_sent: usize,
    /// What the original's kernel did with the packets compared: accepted, rejected, dropped.
    pub original_fates: [usize; 3],
    /// Differences no untranslated construct explains: the import is wrong.
    pub differing: Vec<Difference>,
    /// Differences where the original decided by a rule reported as not translated.
    pub explained: Vec<Difference>,
    /// Packets that meet a rate-limited imported rule (either fate is right).
    pub rate_limited: usize,
}

/// The original ruleset, as it is loaded.
pub enum OriginalRules {
    /// iptables-save files: (name, text, IPv6).
    Iptables(Vec<(String, String, bool)>),
    /// An nft script or `nft -j list ruleset` JSON.
    Nft(String),
}

/// Loads the original into the calling thread's namespace.
fn load_original(original: &OriginalRules) -> Result<(), String> {
    match original {
        OriginalRules::Nft(text) => {
            let args: &[&str] = if text.trim_start().starts_with('{') { &["-j", "-f", "-"] } else { &["-f", "-"] };
            crate::nft::Nft::default()
                .run(args, Some(text))
                .map(drop)
                .map_err(|e| format!("nft refused the original: {e}"))
        }
        OriginalRules::Iptables(files) => {
            for (name, text, v6) in files {
                let legacy = text.lines().take(3).any(|l| l.starts_with('#') && l.contains("(legacy)"));
                let tool = match (v6, legacy) {
                    (false, false) => "iptables-restore",
                    (true, false) => "ip6tables-restore",
                    (false, true) => "iptables-legacy-restore",
                    (true, true) => "ip6tables-legacy-restore",
                };
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
            Ok(())
        }
    }
}

/// Loads the imported policy as `apply` would, into the calling thread's namespace.
fn load_imported(compiled: &Compiled) -> Result<(), String> {
    let prepared = crate::nft::apply::prepare_with(compiled, crate::nft::Elements::default());
    crate::nft::apply::load(&crate::nft::Nft::default(), compiled, &prepared)
        .map(drop)
        .map_err(|e| format!("the imported policy does not load: {e}"))
}

/// Sends the same packets through the original and the imported policy,
/// each in its own throwaway namespace, and compares their fates, for
/// each family in `families` (false: IPv4). `untranslated(v6, table,
/// chain, index)` names the import's report line when the original's deciding
/// rule is one the import did not translate.
pub fn verify(
    original: &OriginalRules,
    compiled: &Compiled,
    families: &[bool],
    count: usize,
    seed: u64,
    untranslated: &dyn Fn(bool, &str, &str, usize) -> Option<String>,
) -> Result<Vec<(bool, Report)>, String> {
    let rs = &compiled.ruleset;
    let generated: Vec<(bool, Vec<Packet>, usize)> = families
        .iter()
        .map(|&v6| {
            // Packets on loopback and repeated flows are not sent: ask for more.
            let boundary = lab::realize(packets(rs, v6, 0, seed)).0.len();
            let mut asked = count;
            loop {
                let (probes, not_sent) = lab::realize(packets(rs, v6, asked, seed));
                if probes.len() >= count + boundary || asked > count * 8 {
                    break (v6, probes, not_sent);
                }
                asked += count;
            }
        })
        .collect();
    let all: Vec<&Packet> = generated.iter().flat_map(|(_, p, _)| p).collect();
    let side = |load: &(dyn Fn() -> Result<Option<Original>, String> + Sync)| {
        crate::nft::in_scratch_netns(|| -> Result<(Option<Original>, Observed), String> {
            let back = load()?;
            let lab = Lab::build(&all)?;
            Ok((back, lab.run(&all)?))
        })
        .map_err(|e| e.to_string())?
    };
    let load_a = || -> Result<Option<Original>, String> {
        load_original(original)?;
        read_back().map(Some)
    };
    let load_b = || -> Result<Option<Original>, String> { load_imported(compiled).map(|()| None) };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| side(&load_a));
        let b = s.spawn(|| side(&load_b));
        (a.join(), b.join())
    });
    let (a, b) =
        (a.unwrap_or_else(|p| std::panic::resume_unwind(p))?, b.unwrap_or_else(|p| std::panic::resume_unwind(p))?);
    let (back, seen_original) = (a.0.expect("the original is read back"), a.1);
    let seen_imported = b.1;
    let mut sets =
        |family: u8, table: &str, set: &str| back.sets.get(&(family, table.to_string(), set.to_string())).cloned();
    let mut reports = Vec::new();
    let mut at = 0;
    for (v6, probes, not_sent) in &generated {
        let mut r = Report { not_sent: *not_sent, ..Report::default() };
        for p in probes {
            let ((original_fate, original_arrived), (imported_fate, imported_arrived)) =
                (seen_original[at], seen_imported[at]);
            at += 1;
            let d = eval::decide(rs, p, &SetContents::new());
            if d.rate_limited {
                r.rate_limited += 1;
                continue;
            }
            r.packets += 1;
            r.original_fates[original_fate as usize] += 1;
            if p.hook == Hook::Forward {
                r.forward += 1;
            } else {
                r.input += 1;
            }
            if original_fate == imported_fate && lab::Arrived::same_rewrite(original_arrived, imported_arrived) {
                continue;
            }
            let kv = live::kernel_verdict(p, &back.chains, &mut sets);
            let mut imported_rule = eval::deciding_rule(rs, p, &d)
                .map_or_else(|| format!("policy {}", p.hook.name()), |r| r.origin.id.clone());
            let reported = kv.rules.iter().find_map(|(table, chain, i)| untranslated(*v6, table, chain, *i));
            let mut original_rule = match &reported {
                Some(line) => format!("{}, {line}, not translated", kv.by),
                None => kv.by,
            };
            let (mut original, mut imported) =
                (fate_word(original_fate).to_string(), fate_word(imported_fate).to_string());
            if original_fate == imported_fate {
                // The same fate, rewritten differently: the NAT rules involved.
                original += &format!(" as {}", original_arrived.map_or("?".into(), |a| a.to_string()));
                imported += &format!(" as {}", imported_arrived.map_or("?".into(), |a| a.to_string()));
                original_rule = format!("nat chains {}", nat_chains(&back.chains, *v6));
                imported_rule = nat_rules(rs, p);
            }
            let diff = Difference { packet: packet::format(p), original, original_rule, imported, imported_rule };
            match reported {
                Some(_) => r.explained.push(diff),
                None => r.differing.push(diff),
            }
        }
        reports.push((*v6, r));
    }
    Ok(reports)
}

/// The original's nat base chains of a family, as `table chain` (hook).
fn nat_chains(chains: &[Chain], v6: bool) -> String {
    let named: Vec<String> = chains
        .iter()
        .filter(|c| c.base.as_ref().is_some_and(|b| b.chain_type == "nat"))
        .filter(|c| match c.family {
            tables::NFPROTO_IPV4 => !v6,
            tables::NFPROTO_IPV6 => v6,
            _ => true,
        })
        .map(|c| {
            format!(
                "{} {} {} ({})",
                tables::family_name(c.family),
                c.table,
                c.name,
                c.base.as_ref().map_or("", |b| b.hook)
            )
        })
        .collect();
    if named.is_empty() {
        "(none)".into()
    } else {
        named.join(", ")
    }
}

/// The imported policy's NAT rules whose matches the packet meets, by line
/// (a dnat as it arrives, a masquerade or snat as it is forwarded).
fn nat_rules(rs: &Ruleset, p: &Packet) -> String {
    let lines: Vec<&str> = rs
        .nat
        .iter()
        .filter(|n| matches!(n.action, crate::ir::NatAction::Dnat { .. }) || p.hook == Hook::Forward)
        .filter(|n| eval::check(rs, &n.matches, p, &SetContents::new()).is_ok())
        .map(|n| n.origin.id.as_str())
        .collect();
    if lines.is_empty() {
        "no NAT rule".into()
    } else {
        format!("NAT {}", lines.join(", "))
    }
}

/// A fate in the words of a policy's actions.
fn fate_word(s: Seen) -> &'static str {
    match s {
        Seen::Accepted => Action::Pass.keyword(),
        Seen::Rejected => Action::Reject.keyword(),
        Seen::Dropped => Action::Block.keyword(),
    }
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

/// Four packets per (hook, match) of `rules` that meet all its matches at
/// once (first and last port, first and last address of each network),
/// starting from `random` ones for the fields it leaves open.
fn rule_packets(
    rs: &Ruleset,
    rules: &[(Hook, &crate::ir::Match)],
    v6: bool,
    rng: &mut Rng,
    random: &mut dyn FnMut(&mut Rng, u8) -> Packet,
) -> Vec<Packet> {
    let set_nets = |name: &str| -> Vec<IpNet> {
        rs.sets
            .iter()
            .filter(|d| d.name == name || d.nft_name == name)
            .flat_map(|d| d.kind.loaded().unwrap_or_default())
            .collect()
    };
    let nets_of = |a: &AddrMatch| -> Vec<IpNet> {
        let nets = match a {
            AddrMatch::Nets { negated: false, nets } => nets.clone(),
            AddrMatch::Set { negated: false, set } => set_nets(set),
            _ => Vec::new(),
        };
        nets.into_iter().filter(|n| n.addr().is_ipv6() == v6).collect()
    };
    let mut out = Vec::new();
    {
        for &(hook, m) in rules {
            let (src, dst) = (nets_of(&m.src), nets_of(&m.dst));
            if (!matches!(m.src, AddrMatch::Any) && src.is_empty())
                || (!matches!(m.dst, AddrMatch::Any) && dst.is_empty())
            {
                continue;
            }
            for variant in 0..4usize {
                let proto = m.proto.unwrap_or(if variant % 2 == 0 { names::TCP } else { names::UDP });
                let mut p = random(rng, proto);
                p.hook = hook;
                let edge = |nets: &[IpNet]| {
                    let n = nets[variant / 2 % nets.len()];
                    if variant % 2 == 0 {
                        n.network()
                    } else {
                        n.broadcast()
                    }
                };
                if !src.is_empty() {
                    p.src = edge(&src);
                }
                if !dst.is_empty() {
                    p.dst = edge(&dst);
                }
                let port = |pm: &Option<crate::ir::PortMatch>| {
                    pm.as_ref().filter(|pm| !pm.negated && !pm.ranges.is_empty()).map(|pm| {
                        let (lo, hi) = pm.ranges[variant / 2 % pm.ranges.len()];
                        if variant % 2 == 0 {
                            lo
                        } else {
                            hi
                        }
                    })
                };
                if names::has_ports(proto) {
                    p.sport = port(&m.sport).or(p.sport);
                    p.dport = port(&m.dport).or(p.dport);
                }
                if let Some(t) = m.icmp_types.as_ref().and_then(|t| t.first()) {
                    p.icmp_type = Some(*t);
                }
                let name = |l: &Option<Ifaces>| l.as_ref().and_then(Ifaces::example);
                p.iif = name(&m.iif).or(p.iif);
                p.oif =
                    if p.hook == Hook::Forward { name(&m.oif).or(p.oif).or_else(|| Some("eth0".into())) } else { None };
                if m.urpf_failed {
                    p.urpf_failed = variant < 2;
                }
                if let Some(states) = m.ct_state {
                    p.ct_state =
                        names::CT_STATES.iter().map(|(_, bit)| *bit).find(|b| states.0 & b != 0).unwrap_or(p.ct_state);
                }
                p.dst_local = eval::default_local(p.hook, p.dst);
                out.push(p);
            }
        }
    }
    out
}

/// `count` random packets (input and forward hooks) over the values the
/// rules of `rs` use, then one packet per boundary value of every rule
/// (each port range's ends and neighbours, each network's edges and the
/// addresses just outside), packets that meet each rule's matches at once
/// and, per protocol, one arriving on and one leaving through each
/// interface the rules name. One in four random packets fails the
/// reverse-path check (the lab routes its source out of another interface).
pub fn packets(rs: &Ruleset, v6: bool, count: usize, seed: u64) -> Vec<Packet> {
    let mut addrs: Vec<IpAddr> = if v6 {
        vec!["2001:db8::1".parse().expect("address"), "2001:db8:ffff::9".parse().expect("address")]
    } else {
        vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]
    };
    let mut ports: Vec<u16> = vec![1, 1023, 1024, 40000, 65535];
    let mut ifaces: Vec<String> = vec!["eth0".into(), "wlan7".into()];
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
        for i in [&m.iif, &m.oif].into_iter().flatten().flat_map(|i| &i.names) {
            ifaces.push(pattern_example(i));
        }
        protos.extend(m.proto);
        icmp.extend(m.icmp_types.iter().flatten());
    }
    ports.sort_unstable();
    ports.dedup();
    icmp.sort_unstable();
    icmp.dedup();
    protos.retain(|&p| p != if v6 { names::ICMP } else { names::ICMPV6 });
    protos.sort_unstable();
    protos.dedup();
    addrs.sort();
    addrs.dedup();
    ifaces.sort();
    ifaces.dedup();
    let states = [8u8, 2, 4, 1];
    let mut rng = Rng(seed);
    // Its own stream, so the other fields are drawn as without it.
    let mut reverse_path = Rng(seed ^ 0x7572_7066_6169_6c65);
    // Packets on loopback cannot be sent from outside: only an interface's
    // own boundary packets name it (and are counted as not sent).
    let random_ifaces: Vec<String> = ifaces.iter().filter(|i| *i != "lo").cloned().collect();
    let mut make = |rng: &mut Rng, proto: u8, port: Option<u16>, addr: Option<IpAddr>| {
        let hook = rng.pick(&[Hook::Input, Hook::Forward]);
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
            iif: (hook != Hook::Output).then(|| rng.pick(&random_ifaces)),
            oif: (hook != Hook::Input).then(|| rng.pick(&random_ifaces)),
            src,
            dst,
            proto,
            sport: has_ports.then(|| rng.pick(&ports)),
            dport: has_ports.then(|| port.unwrap_or_else(|| rng.pick(&ports))),
            icmp_type: is_icmp.then(|| rng.pick(&icmp)),
            ct_state: rng.pick(&states),
            mark: 0,
            ct_mark: 0,
            // One in four arrives from a source routed out of another interface.
            urpf_failed: reverse_path.next_u64().is_multiple_of(4),
            dst_local: crate::ir::eval::default_local(hook, dst),
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
    let filter: Vec<(Hook, &crate::ir::Match)> = rs
        .chains
        .iter()
        .filter(|c| matches!(c.hook, Hook::Input | Hook::Forward))
        .flat_map(|c| c.rules.iter().map(move |r| (c.hook, &r.matches)))
        .collect();
    out.extend(rule_packets(rs, &filter, v6, &mut rng, &mut |rng, proto| make(rng, proto, None, None)));
    for iface in &ifaces {
        for proto in protos.clone() {
            let mut arriving = make(&mut rng, proto, None, None);
            arriving.iif = Some(iface.clone());
            let mut leaving = make(&mut rng, proto, None, None);
            (leaving.hook, leaving.oif) = (Hook::Forward, Some(iface.clone()));
            out.extend([arriving, leaving]);
        }
    }
    // Last, so the packets above are drawn as without NAT rules: those that
    // meet each NAT rule, a dnat's arriving (rewritten) and passing through
    // (rewritten unless `to self`), a masquerade's or snat's forwarded.
    let nat: Vec<(Hook, &crate::ir::Match)> = rs
        .nat
        .iter()
        .flat_map(|n| match n.action {
            crate::ir::NatAction::Dnat { .. } => vec![(Hook::Input, &n.matches), (Hook::Forward, &n.matches)],
            _ => vec![(Hook::Forward, &n.matches)],
        })
        .collect();
    let mut natp = rule_packets(rs, &nat, v6, &mut rng, &mut |rng, proto| make(rng, proto, None, None));
    for p in &mut natp {
        // NAT decides on a connection's first packet only.
        p.ct_state = names::ct_state_bit("new").expect("new");
    }
    out.extend(natp);
    out
}
