//! Exact header-space reasoning.
//!
//! A rule's [`Match`] is a union of [`Cube`]s: one per address family and
//! protocol kind, each a product of per-field interval sets (addresses as
//! integers, ports, protocol numbers, ICMP types, conntrack state bits,
//! interface classes). Intersection and subtraction of cubes are exact, so
//! "the union of earlier rules covers this rule" is decided exactly, never
//! by sampling.
//!
//! Fields that a protocol kind does not have (ports of ICMP, ICMP types of
//! TCP) are always full in cubes of that kind, so no cube ever holds a point
//! that is not a real packet's.
//!
//! Interfaces: the names that rules mention split all possible names into
//! finitely many classes (`eth0`, "other `eth*`", "any other name"); a cube
//! holds a set of class numbers.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::names::{self, ICMP, ICMPV6};
pub use crate::ir::ranges::{family_max, ip_value, net_range, Ranges};
use crate::ir::{AddrMatch, Family, Ifaces, Match, PortMatch, Rule, Ruleset, SetKind};

/// The fields of a cube, in the order subtraction splits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    Proto,
    Iif,
    Oif,
    Src,
    Dst,
    Sport,
    Dport,
    Icmp,
    Ct,
    Mark,
    CtMark,
    /// 1: the source fails the reverse-path check (`from urpf-failed`).
    Urpf,
    /// 1: the destination is one of this host's addresses (`to self`).
    Local,
}

pub const DIMS: [Dim; 13] = [
    Dim::Proto,
    Dim::Iif,
    Dim::Oif,
    Dim::Src,
    Dim::Dst,
    Dim::Sport,
    Dim::Dport,
    Dim::Icmp,
    Dim::Ct,
    Dim::Mark,
    Dim::CtMark,
    Dim::Urpf,
    Dim::Local,
];

/// A product of one interval set per field, for one address family.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cube {
    pub family: Family,
    pub dims: [Ranges; 13],
}

impl Cube {
    pub fn get(&self, d: Dim) -> &Ranges {
        &self.dims[d as usize]
    }

    pub fn intersects(&self, o: &Cube) -> bool {
        self.family == o.family && self.dims.iter().zip(&o.dims).all(|(a, b)| a.intersects(b))
    }

    pub fn intersect(&self, o: &Cube) -> Option<Cube> {
        if !self.intersects(o) {
            return None;
        }
        let dims = std::array::from_fn(|i| self.dims[i].intersect(&o.dims[i]));
        Some(Cube { family: self.family, dims })
    }

    /// `self` minus `o` as disjoint cubes: for each field in turn, the part
    /// outside `o` in that field and inside `o` in all fields before it.
    pub fn subtract(&self, o: &Cube) -> Vec<Cube> {
        if !self.intersects(o) {
            return vec![self.clone()];
        }
        let mut out = Vec::new();
        let mut inside = self.clone();
        for i in 0..DIMS.len() {
            let outside = inside.dims[i].subtract(&o.dims[i]);
            if !outside.is_empty() {
                let mut piece = inside.clone();
                piece.dims[i] = outside;
                out.push(piece);
            }
            inside.dims[i] = inside.dims[i].intersect(&o.dims[i]);
        }
        out
    }

    /// Its lowest and highest points (one cube of one point each).
    pub fn corners(&self) -> [Cube; 2] {
        let point = |pick: fn(&Ranges) -> Option<u128>| Cube {
            family: self.family,
            dims: std::array::from_fn(|i| pick(&self.dims[i]).map_or_else(Ranges::empty, |v| Ranges::span(v, v))),
        };
        [point(|r| r.0.first().map(|x| x.0)), point(|r| r.0.last().map(|x| x.1))]
    }

    /// If `self` and `o` differ in at most one field, their union as one cube.
    pub fn merge(&self, o: &Cube) -> Option<Cube> {
        if self.family != o.family {
            return None;
        }
        let differing: Vec<usize> = (0..DIMS.len()).filter(|&i| self.dims[i] != o.dims[i]).collect();
        match differing.as_slice() {
            [] => Some(self.clone()),
            [i] => {
                let mut m = self.clone();
                m.dims[*i] = self.dims[*i].union(&o.dims[*i]);
                Some(m)
            }
            _ => None,
        }
    }
}

/// Subtracts every cube of `cut` from every cube of `from`.
pub fn subtract_all(from: Vec<Cube>, cut: &[Cube]) -> Vec<Cube> {
    cut.iter().fold(from, |acc, c| acc.iter().flat_map(|a| a.subtract(c)).collect())
}

/// Protocol numbers with ports, and ICMP; everything else has neither.
const PORTED: [u8; 4] = [names::TCP, names::UDP, names::SCTP, 136];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ported,
    Icmp,
    Other,
}

impl Kind {
    fn protos(self) -> Ranges {
        let ported = Ranges::of(PORTED.iter().map(|&p| (p as u128, p as u128)));
        let icmp = Ranges::of([(ICMP as u128, ICMP as u128), (ICMPV6 as u128, ICMPV6 as u128)]);
        match self {
            Kind::Ported => ported,
            Kind::Icmp => icmp,
            Kind::Other => Ranges::span(0, 255).subtract(&ported).subtract(&icmp),
        }
    }
}

/// The header space of one or more rulesets: the interface classes their
/// rules' interface names create, and each rule as cubes.
///
/// Each exact name the rules use is a class; so is, for each prefix `p` of
/// a `p*` pattern (and the empty prefix), "the other names whose longest
/// pattern prefix is `p`". Classes are numbered in the order of their
/// labels, so the classes a `q*` pattern matches (every name or prefix that
/// starts with `q`) are one run of numbers, found by binary search.
pub struct Universe {
    /// Class of each exact name.
    exact: HashMap<String, u128>,
    /// Class of each prefix (`""` included).
    prefixes: HashMap<String, u128>,
    /// Per class, the exact name or the prefix it stands for.
    keys: Vec<String>,
    /// One representative name per interface class.
    pub ifaces: Vec<String>,
    /// How a class is shown: `eth0`, `eth*` (other names starting so), `*` (any other).
    pub iface_labels: Vec<String>,
}

impl Universe {
    pub fn new(rulesets: &[&Ruleset]) -> Universe {
        let patterns: BTreeSet<&str> = rulesets
            .iter()
            .flat_map(|rs| {
                rs.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(|r| &r.matches))
                    .chain(rs.marks.iter().map(|m| &m.matches))
            })
            .flat_map(|m| m.iif.iter().chain(m.oif.iter()).flat_map(|i| &i.names))
            .map(String::as_str)
            .collect();
        // (label, key, representative, is a prefix class)
        let mut classes: Vec<(String, String, String, bool)> = Vec::new();
        let prefixes: BTreeSet<&str> =
            std::iter::once("").chain(patterns.iter().filter_map(|p| p.strip_suffix('*'))).collect();
        for name in patterns.iter().filter(|p| !p.ends_with('*')) {
            classes.push((name.to_string(), name.to_string(), name.to_string(), false));
        }
        for p in prefixes {
            // `~` is no name character, so `p~0` is no exact name and has no longer pattern prefix.
            let label = if p.is_empty() { "*".to_string() } else { format!("{p}*") };
            classes.push((label, p.to_string(), format!("{p}~0"), true));
        }
        classes.sort();
        let mut u = Universe {
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            keys: Vec::with_capacity(classes.len()),
            ifaces: Vec::with_capacity(classes.len()),
            iface_labels: Vec::with_capacity(classes.len()),
        };
        for (i, (label, key, rep, is_prefix)) in classes.into_iter().enumerate() {
            let by_key = if is_prefix { &mut u.prefixes } else { &mut u.exact };
            by_key.insert(key.clone(), i as u128);
            u.keys.push(key);
            u.ifaces.push(rep);
            u.iface_labels.push(label);
        }
        u
    }

    /// The class of an interface name (a missing interface counts as the empty name).
    fn iface_class(&self, name: Option<&str>) -> u128 {
        let name = name.unwrap_or("");
        if let Some(&c) = self.exact.get(name) {
            return c;
        }
        let mut cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
        cuts.push(name.len());
        cuts.iter().rev().find_map(|&at| self.prefixes.get(&name[..at]).copied()).expect("the empty prefix is a class")
    }

    /// The classes a pattern matches.
    fn pattern_classes(&self, pattern: &str) -> Vec<u128> {
        let Some(q) = pattern.strip_suffix('*') else {
            return self.exact.get(pattern).copied().into_iter().collect();
        };
        // Every matching class's label starts with `q`; a label that does but
        // whose key does not (`eth*` for the pattern `eth**`) is left out.
        let from = self.iface_labels.partition_point(|l| l.as_str() < q);
        (from..self.iface_labels.len())
            .take_while(|&i| self.iface_labels[i].starts_with(q))
            .filter(|&i| self.keys[i].starts_with(q))
            .map(|i| i as u128)
            .collect()
    }

    /// One concrete packet as a cube of one point (fields it lacks are full).
    pub fn point(&self, p: &crate::ir::eval::Packet) -> Cube {
        let mut c = self.kind_cube(p.family(), Kind::Other);
        let one = |v: u128| Ranges::span(v, v);
        c.dims[Dim::Proto as usize] = one(p.proto as u128);
        c.dims[Dim::Iif as usize] = one(self.iface_class(p.iif.as_deref()));
        c.dims[Dim::Oif as usize] = one(self.iface_class(p.oif.as_deref()));
        c.dims[Dim::Src as usize] = one(ip_value(p.src));
        c.dims[Dim::Dst as usize] = one(ip_value(p.dst));
        if let (Some(s), Some(d)) = (p.sport, p.dport) {
            c.dims[Dim::Sport as usize] = one(s as u128);
            c.dims[Dim::Dport as usize] = one(d as u128);
        }
        if let Some(t) = p.icmp_type {
            c.dims[Dim::Icmp as usize] = one(t as u128);
        }
        let bit = names::CT_STATES.iter().position(|(_, b)| *b == p.ct_state).unwrap_or(0);
        c.dims[Dim::Ct as usize] = one(bit as u128);
        c.dims[Dim::Mark as usize] = one(p.mark as u128);
        c.dims[Dim::CtMark as usize] = one(p.ct_mark as u128);
        c.dims[Dim::Urpf as usize] = one(u128::from(p.urpf_failed));
        c.dims[Dim::Local as usize] = one(u128::from(p.dst_local));
        c
    }

    fn iface_full(&self) -> Ranges {
        Ranges::span(0, self.ifaces.len() as u128 - 1)
    }

    /// The classes an interface match accepts: exact, since every name
    /// and prefix it uses is a class; a negation is the complement.
    fn iface_set(&self, want: &Option<Ifaces>) -> Ranges {
        let Some(want) = want else { return self.iface_full() };
        let named = Ranges::of(want.names.iter().flat_map(|p| self.pattern_classes(p)).map(|c| (c, c)));
        if want.negated {
            self.iface_full().subtract(&named)
        } else {
            named
        }
    }

    /// All packets of one hook: one cube per family and protocol kind.
    pub fn full(&self) -> Vec<Cube> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for kind in [Kind::Ported, Kind::Icmp, Kind::Other] {
                out.push(self.kind_cube(family, kind));
            }
        }
        out
    }

    fn kind_cube(&self, family: Family, kind: Kind) -> Cube {
        let addr = Ranges::span(0, family_max(family));
        let dims = [
            kind.protos(),
            self.iface_full(),
            self.iface_full(),
            addr.clone(),
            addr,
            Ranges::span(0, 65535),
            Ranges::span(0, 65535),
            Ranges::span(0, 255),
            Ranges::span(0, names::CT_STATES.len() as u128 - 1),
            Ranges::span(0, u32::MAX as u128),
            Ranges::span(0, u32::MAX as u128),
            Ranges::span(0, 1),
            Ranges::span(0, 1),
        ];
        Cube { family, dims }
    }

    /// The packets a match may match, as disjoint cubes. Run-time and feed
    /// sets are unknown offline, so they count as "any address" here (see
    /// [`condition`]).
    /// The packets a rule matches: a merged rule's are its parts' (its own
    /// matches hold the union of each field, a superset for two fields).
    pub fn rule_cubes(&self, rs: &Ruleset, r: &Rule) -> Vec<Cube> {
        match &r.merged {
            Some(m) => m.part_matches(r).flat_map(|pm| self.cubes(rs, &pm)).collect(),
            None => self.cubes(rs, &r.matches),
        }
    }

    pub fn cubes(&self, rs: &Ruleset, m: &Match) -> Vec<Cube> {
        let families = m.family.map_or(vec![Family::V4, Family::V6], |f| vec![f]);
        let mut out = Vec::new();
        for family in families {
            for kind in [Kind::Ported, Kind::Icmp, Kind::Other] {
                let mut c = self.kind_cube(family, kind);
                let mut set = |d: Dim, r: Ranges| c.dims[d as usize] = c.dims[d as usize].intersect(&r);
                if let Some(p) = m.proto {
                    set(Dim::Proto, Ranges::span(p as u128, p as u128));
                }
                set(Dim::Iif, self.iface_set(&m.iif));
                set(Dim::Oif, self.iface_set(&m.oif));
                set(Dim::Src, addr_ranges(rs, &m.src, family));
                set(Dim::Dst, addr_ranges(rs, &m.dst, family));
                // Packets of a kind without ports (or ICMP types) never match
                // a port (or type) clause.
                let ports_apply = kind == Kind::Ported;
                if (m.sport.is_some() || m.dport.is_some()) && !ports_apply
                    || m.icmp_types.is_some() && kind != Kind::Icmp
                {
                    continue;
                }
                if let Some(pm) = &m.sport {
                    set(Dim::Sport, port_ranges(pm));
                }
                if let Some(pm) = &m.dport {
                    set(Dim::Dport, port_ranges(pm));
                }
                if let Some(ts) = &m.icmp_types {
                    set(Dim::Icmp, Ranges::of(ts.iter().map(|&t| (t as u128, t as u128))));
                }
                if let Some(s) = m.ct_state {
                    let bits = names::CT_STATES
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, b))| s.0 & b != 0)
                        .map(|(i, _)| (i as u128, i as u128));
                    set(Dim::Ct, Ranges::of(bits));
                }
                if let Some(k) = m.mark {
                    set(Dim::Mark, Ranges::span(k as u128, k as u128));
                }
                if let Some(k) = m.ct_mark {
                    // Only a packet with a connection has a ct mark.
                    set(Dim::Ct, tracked_states());
                    set(Dim::CtMark, Ranges::span(k as u128, k as u128));
                }
                if m.urpf_failed {
                    set(Dim::Urpf, Ranges::span(1, 1));
                }
                if let Some(local) = m.dst_local {
                    let v = u128::from(local);
                    set(Dim::Local, Ranges::span(v, v));
                }
                if c.dims.iter().all(|d| !d.is_empty()) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// A cube in words: only the fields that constrain it.
    pub fn describe(&self, c: &Cube) -> String {
        let mut parts = vec![c.family.name().to_string()];
        let full = self.kind_cube(c.family, Kind::Other);
        let protos = c.get(Dim::Proto);
        if *protos != Ranges::span(0, 255) {
            parts.push(format!("proto {}", listed(protos, &Ranges::span(0, 255), |v| names::proto_name(v as u8))));
        }
        // "Any other name" reads best as the names it is not.
        let ifaces = |r: &Ranges| {
            let other = self.iface_labels.iter().position(|l| l == "*").is_some_and(|i| r.contains(i as u128));
            let label = |v: u128| self.iface_labels[v as usize].clone();
            if other {
                format!("! {}", show_values(&self.iface_full().subtract(r), label))
            } else {
                listed(r, &self.iface_full(), label)
            }
        };
        if *c.get(Dim::Iif) != self.iface_full() {
            parts.push(format!("in on {}", ifaces(c.get(Dim::Iif))));
        }
        if *c.get(Dim::Oif) != self.iface_full() {
            parts.push(format!("out on {}", ifaces(c.get(Dim::Oif))));
        }
        let port = |r: &Ranges| listed(r, &Ranges::span(0, 65535), |v| v.to_string());
        for (d, word) in [(Dim::Src, "from"), (Dim::Dst, "to")] {
            let addr = c.get(d);
            let port_dim = if d == Dim::Src { Dim::Sport } else { Dim::Dport };
            let mut text = String::new();
            if addr != full.get(d) {
                text = format!("{word} {}", addrs_text(addr, c.family));
            }
            if c.get(port_dim) != full.get(port_dim) {
                let p = format!("port {}", port(c.get(port_dim)));
                text = if text.is_empty() { format!("{word} {p}") } else { format!("{text} {p}") };
            }
            if !text.is_empty() {
                parts.push(text);
            }
        }
        if c.get(Dim::Icmp) != full.get(Dim::Icmp) {
            let proto = if c.family == Family::V6 { ICMPV6 } else { ICMP };
            parts.push(format!(
                "icmp-type {}",
                listed(c.get(Dim::Icmp), full.get(Dim::Icmp), |v| names::icmp_type_name(proto, v as u8))
            ));
        }
        if c.get(Dim::Ct) != full.get(Dim::Ct) {
            parts.push(format!(
                "state {}",
                listed(c.get(Dim::Ct), full.get(Dim::Ct), |v| names::CT_STATES[v as usize].0.to_string())
            ));
        }
        if c.get(Dim::Mark) != full.get(Dim::Mark) {
            parts.push(format!("mark {}", listed(c.get(Dim::Mark), full.get(Dim::Mark), |v| v.to_string())));
        }
        if c.get(Dim::CtMark) != full.get(Dim::CtMark) {
            parts.push(format!("ct mark {}", listed(c.get(Dim::CtMark), full.get(Dim::CtMark), |v| v.to_string())));
        }
        if c.get(Dim::Urpf) != full.get(Dim::Urpf) {
            let fails = c.get(Dim::Urpf).contains(1);
            parts.push(if fails { "from urpf-failed" } else { "passing the reverse-path check" }.to_string());
        }
        if c.get(Dim::Local) != full.get(Dim::Local) {
            parts.push(if c.get(Dim::Local).contains(1) { "to self" } else { "to !self" }.to_string());
        }
        parts.join(" ")
    }
}

/// The [`Dim::Ct`] values of the states that have a connection (and a ct mark).
pub fn tracked_states() -> Ranges {
    let bits = names::CT_STATES.iter().enumerate().filter(|(_, (_, b))| b & names::CT_TRACKED != 0);
    Ranges::of(bits.map(|(i, _)| (i as u128, i as u128)))
}

/// Addresses a match allows in one family.
fn addr_ranges(rs: &Ruleset, a: &AddrMatch, family: Family) -> Ranges {
    let all = Ranges::span(0, family_max(family));
    let (negated, nets): (bool, Vec<IpNet>) = match a {
        AddrMatch::Any => return all,
        AddrMatch::Nets { negated, nets } => (*negated, nets.clone()),
        AddrMatch::Set { negated, set } => match rs.set(set).and_then(|s| s.kind.loaded()) {
            Some(elements) => (*negated, elements),
            // Unknown contents: any address may or may not be in it.
            None => return all,
        },
    };
    let inside = Ranges::of(nets.iter().filter(|n| Family::of(&n.addr()) == family).map(net_range));
    if negated {
        all.subtract(&inside)
    } else {
        inside
    }
}

fn port_ranges(pm: &PortMatch) -> Ranges {
    let inside = Ranges::of(pm.ranges.iter().map(|&(lo, hi)| (lo as u128, hi as u128)));
    if pm.negated {
        Ranges::span(0, 65535).subtract(&inside)
    } else {
        inside
    }
}

/// Why a rule may not decide a packet that its header matches: a rate limit
/// or a set whose contents are only known at run time. `None`: it always does.
pub fn condition(rs: &Ruleset, r: &Rule) -> Option<String> {
    let mut parts = Vec::new();
    for (a, word) in [(&r.matches.src, "source"), (&r.matches.dst, "destination")] {
        if let AddrMatch::Set { negated, set } = a {
            if !matches!(rs.set(set).map(|s| &s.kind), Some(SetKind::Static { .. })) {
                parts.push(format!("{word} {}in run-time set {set}", if *negated { "not " } else { "" }));
            }
        }
    }
    if let Some(l) = &r.limit {
        let burst = l.burst.map_or(String::new(), |b| format!(" burst {b}"));
        let per = if l.per_source.is_some() { " per source" } else { "" };
        parts.push(format!("under limit {}/{}{burst}{per}", l.rate, l.unit.name()));
    }
    if let Some(bytes) = r.quota {
        parts.push(format!("under quota {bytes} bytes"));
    }
    (!parts.is_empty()).then(|| parts.join(" and "))
}

/// A value set in words: the values, or "not" the missing ones when shorter.
fn listed(r: &Ranges, full: &Ranges, name: impl Fn(u128) -> String) -> String {
    let rest = full.subtract(r);
    if rest.0.len() < r.0.len() {
        format!("! {}", show_values(&rest, name))
    } else {
        show_values(r, name)
    }
}

/// `v`, or `{ a, b, c-d }`.
fn show_values(set: &Ranges, name: impl Fn(u128) -> String) -> String {
    let items: Vec<String> =
        set.0
            .iter()
            .flat_map(|&(lo, hi)| {
                if hi - lo < 3 {
                    (lo..=hi).map(&name).collect()
                } else {
                    vec![format!("{}-{}", name(lo), name(hi))]
                }
            })
            .collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// Addresses as networks (or "! networks" when that is shorter).
fn addrs_text(r: &Ranges, family: Family) -> String {
    let all = Ranges::span(0, family_max(family));
    let nets = |set: &Ranges| -> Vec<String> { set.0.iter().flat_map(|&(lo, hi)| cidrs(lo, hi, family)).collect() };
    let (inside, outside) = (nets(r), nets(&all.subtract(r)));
    let (neg, list) = if outside.len() < inside.len() { ("! ", outside) } else { ("", inside) };
    const MAX: usize = 6;
    let shown = if list.len() > MAX {
        format!("{} ... ({} networks)", list[..MAX].join(", "), list.len())
    } else {
        list.join(", ")
    };
    if list.len() == 1 {
        format!("{neg}{shown}")
    } else {
        format!("{neg}{{ {shown} }}")
    }
}

/// The fewest networks covering exactly `lo..=hi`.
fn cidrs(mut lo: u128, hi: u128, family: Family) -> Vec<String> {
    let bits = if family == Family::V4 { 32 } else { 128 };
    // Last address of the block of 2^k addresses at `lo` (aligned, so no overflow).
    let end = |lo: u128, k: u32| if k == 128 { u128::MAX } else { lo + ((1u128 << k) - 1) };
    let mut out = Vec::new();
    loop {
        let mut k = if lo == 0 { bits } else { lo.trailing_zeros().min(bits) };
        while k > 0 && end(lo, k) > hi {
            k -= 1;
        }
        let addr: IpAddr = if family == Family::V4 { IpAddr::V4((lo as u32).into()) } else { IpAddr::V6(lo.into()) };
        out.push(if k == 0 { addr.to_string() } else { format!("{addr}/{}", bits - k) });
        let last = end(lo, k);
        if last >= hi {
            return out;
        }
        lo = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[(u128, u128)]) -> Ranges {
        Ranges(v.to_vec())
    }

    #[test]
    fn interval_algebra() {
        let a = r(&[(0, 10), (20, 30)]);
        assert_eq!(a.subtract(&r(&[(5, 25)])), r(&[(0, 4), (26, 30)]));
        assert_eq!(a.subtract(&r(&[(0, 30)])), Ranges::empty());
        assert_eq!(a.intersect(&r(&[(8, 22), (29, 40)])), r(&[(8, 10), (20, 22), (29, 30)]));
        assert_eq!(Ranges::of([(5, 9), (0, 4), (11, 12)]), r(&[(0, 9), (11, 12)]));
        assert!(!a.intersects(&r(&[(11, 19)])));
        assert_eq!(Ranges::span(0, u128::MAX).subtract(&r(&[(0, 0)])), r(&[(1, u128::MAX)]));
    }

    #[test]
    fn networks_from_ranges() {
        assert_eq!(cidrs(0x0a000000, 0x0a00ffff, Family::V4), vec!["10.0.0.0/16"]);
        assert_eq!(cidrs(0x0a000001, 0x0a000002, Family::V4), vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(cidrs(0, u32::MAX as u128, Family::V4), vec!["0.0.0.0/0"]);
        assert_eq!(cidrs(0, u128::MAX, Family::V6), vec!["::/0"]);
        assert_eq!(cidrs(1, u128::MAX, Family::V6).len(), 128);
    }

    #[test]
    fn cube_subtraction_is_exact() {
        let c = crate::ir::compile(
            "t.pf",
            "pass in proto tcp from 10.0.0.0/8 to port 1-100\npass in proto tcp from 10.1.0.0/16 to port 50\n",
        )
        .expect("compiles");
        let u = Universe::new(&[&c.ruleset]);
        let rules = &c.ruleset.chains[0].rules;
        let (a, b) = (u.cubes(&c.ruleset, &rules[0].matches), u.cubes(&c.ruleset, &rules[1].matches));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert!(subtract_all(b.clone(), &a).is_empty(), "b inside a");
        let rest = subtract_all(a.clone(), &b);
        assert!(!rest.is_empty() && rest.iter().all(|x| !x.intersects(&b[0])));
        let total: u128 = rest.iter().map(|x| x.get(Dim::Src).count() * x.get(Dim::Dport).count()).sum();
        assert_eq!(total, (1u128 << 24) * 100 - (1u128 << 16));
    }

    #[test]
    fn interface_classes_agree_with_the_matcher() {
        use crate::ir::eval::iface_matches;
        let pats = ["eth*", "eth0", "eth1*", "eth10", "eth1", "e*", "lo", "wg*", "eth**", "ethx*x"];
        let text: String = pats.iter().map(|p| format!("pass in on {p} proto tcp to port 22\n")).collect();
        let c = crate::ir::compile("t.pf", &text).expect("compiles");
        let u = Universe::new(&[&c.ruleset]);
        let names =
            ["", "eth0", "eth1", "eth10", "eth100", "eth2", "e", "lo", "lo0", "wg0", "eth*", "eth*0", "ethx*x", "x"];
        for name in names {
            let class = u.iface_class(Some(name));
            for p in pats {
                // A name matches a pattern exactly when its class is among the pattern's classes.
                assert_eq!(
                    u.pattern_classes(p).contains(&class),
                    iface_matches(p, name),
                    "{name:?} (class {}) vs {p}",
                    u.iface_labels[class as usize]
                );
            }
            // Its class's representative matches the same patterns.
            let rep = &u.ifaces[class as usize];
            assert!(pats.iter().all(|p| iface_matches(p, rep) == iface_matches(p, name)), "{name} ~ {rep}");
        }
    }

    #[test]
    fn interface_classes_tell_every_pattern_apart() {
        let c = crate::ir::compile("t.pf", "pass in on eth*\nblock in on eth0\npass in on lo\n").expect("compiles");
        let u = Universe::new(&[&c.ruleset]);
        assert_eq!(u.iface_labels, vec!["*", "eth*", "eth0", "lo"]);
    }
}
