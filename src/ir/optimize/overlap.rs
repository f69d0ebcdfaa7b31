//! Whether two rules can see the same packet: the optimizer moves a rule
//! only past rules that cannot. Every answer errs on the safe side: "disjoint"
//! only when some field proves that no packet matches both; run-time sets,
//! negations and the like count as "may overlap".

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;

use super::super::names::{ICMP, ICMPV6};
use super::super::ranges::{net_range, Ranges};
use super::super::{AddrMatch, Ifaces, Match, PortMatch};
use super::Values;

/// No packet matches both `a` and `b` (a product of per-field conditions is
/// empty in the intersection when one field is).
pub fn disjoint(a: &Match, b: &Match) -> bool {
    let differ = |x: Option<u8>, y: Option<u8>| x.zip(y).is_some_and(|(x, y)| x != y);
    let icmp = a.proto.zip(b.proto).is_some_and(|(x, y)| x == y && matches!(x, ICMP | ICMPV6));
    a.family.zip(b.family).is_some_and(|(x, y)| x != y)
        || differ(a.proto, b.proto)
        || ifaces_disjoint(&a.iif, &b.iif)
        || ifaces_disjoint(&a.oif, &b.oif)
        || addrs_disjoint(&a.src, &b.src)
        || addrs_disjoint(&a.dst, &b.dst)
        || ports_disjoint(&a.sport, &b.sport)
        || ports_disjoint(&a.dport, &b.dport)
        || (icmp
            && a.icmp_types.as_ref().zip(b.icmp_types.as_ref()).is_some_and(|(x, y)| !x.iter().any(|t| y.contains(t))))
        || a.ct_state.zip(b.ct_state).is_some_and(|(x, y)| x.0 & y.0 == 0)
        || a.mark.zip(b.mark).is_some_and(|(x, y)| x != y)
        || a.ct_mark.zip(b.ct_mark).is_some_and(|(x, y)| x != y)
}

fn ifaces_disjoint(a: &Option<Ifaces>, b: &Option<Ifaces>) -> bool {
    a.as_ref().zip(b.as_ref()).is_some_and(|(a, b)| a.disjoint(b))
}

/// Address ranges of networks, IPv4 and IPv6 apart.
fn net_ranges(nets: &[IpNet]) -> [Ranges; 2] {
    let of = |v6: bool| Ranges::of(nets.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6).map(net_range));
    [of(false), of(true)]
}

fn addrs_disjoint(a: &AddrMatch, b: &AddrMatch) -> bool {
    match (a, b) {
        (AddrMatch::Nets { negated: false, nets: x }, AddrMatch::Nets { negated: false, nets: y }) => {
            let (x, y) = (net_ranges(x), net_ranges(y));
            !x[0].intersects(&y[0]) && !x[1].intersects(&y[1])
        }
        _ => false,
    }
}

fn ports_disjoint(a: &Option<PortMatch>, b: &Option<PortMatch>) -> bool {
    match (a, b) {
        (Some(PortMatch { negated: false, ranges: x }), Some(PortMatch { negated: false, ranges: y })) => {
            let r = |v: &[(u16, u16)]| Ranges::of(v.iter().map(|&(lo, hi)| (u128::from(lo), u128::from(hi))));
            !r(x).intersects(&r(y))
        }
        _ => false,
    }
}

/// The values one field of a group's parts hold so far, as a union: disjoint
/// inclusive intervals by start (networks as address ranges, ports) and
/// interface names. A lookup per check, not a pass over the group.
#[derive(Default)]
pub struct Taken {
    intervals: BTreeMap<u128, u128>,
    names: HashSet<String>,
}

impl Taken {
    fn intervals(v: &Values) -> Vec<(u128, u128)> {
        match v {
            // IPv6 above every IPv4 value, so the two never meet.
            Values::Nets(nets) => nets
                .iter()
                .map(|n| {
                    let (lo, hi) = net_range(n);
                    match n {
                        IpNet::V4(_) => (lo, hi),
                        IpNet::V6(_) => (lo.saturating_add(1 << 32), hi.saturating_add(1 << 32)),
                    }
                })
                .collect(),
            Values::Ports(ranges) => ranges.iter().map(|&(lo, hi)| (u128::from(lo), u128::from(hi))).collect(),
            Values::Interfaces(_) => Vec::new(),
        }
    }

    pub fn overlaps(&self, v: &Values) -> bool {
        let hit = |(start, end): (u128, u128)| {
            // The interval starting last at or before `end` is the only one
            // that can reach back to `start` (they are disjoint).
            self.intervals.range(..=end).next_back().is_some_and(|(_, &e)| e >= start)
        };
        Taken::intervals(v).into_iter().any(hit) || v.interfaces().iter().any(|n| self.names.contains(n))
    }

    pub fn insert(&mut self, v: &Values) {
        for (mut start, mut end) in Taken::intervals(v) {
            // Swallow every stored interval that touches the new one.
            while let Some((&s, &e)) = self.intervals.range(..=end.saturating_add(1)).next_back() {
                if e.saturating_add(1) < start {
                    break;
                }
                self.intervals.remove(&s);
                (start, end) = (start.min(s), end.max(e));
            }
            self.intervals.insert(start, end);
        }
        self.names.extend(v.interfaces().iter().cloned());
    }
}

/// A rule's bounding box in the fields that tell rule shapes apart, for
/// skipping whole blocks of rules at once; an empty interval is `(1, 0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleBox {
    /// Bit 0: IPv4, bit 1: IPv6.
    families: u8,
    proto: (u8, u8),
    /// Source and destination, IPv4 and IPv6 apart.
    addrs: [(u128, u128); 4],
    dport: (u16, u16),
    ct: u8,
}

const EMPTY: (u128, u128) = (1, 0);

impl RuleBox {
    pub const NONE: RuleBox = RuleBox { families: 0, proto: (1, 0), addrs: [EMPTY; 4], dport: (1, 0), ct: 0 };

    pub fn of(m: &Match) -> RuleBox {
        let families = match m.family {
            Some(super::super::Family::V4) => 1,
            Some(super::super::Family::V6) => 2,
            None => 3,
        };
        let span = |a: &AddrMatch, v6: bool| {
            if families & (1 << u8::from(v6)) == 0 {
                return EMPTY;
            }
            match a {
                AddrMatch::Nets { negated: false, nets } => {
                    let r = &net_ranges(nets)[usize::from(v6)].0;
                    r.first().zip(r.last()).map_or(EMPTY, |(f, l)| (f.0, l.1))
                }
                _ => (0, u128::MAX),
            }
        };
        let dport = match &m.dport {
            Some(PortMatch { negated: false, ranges }) => {
                ranges.first().zip(ranges.last()).map_or((1, 0), |(f, l)| (f.0, l.1))
            }
            _ => (0, u16::MAX),
        };
        RuleBox {
            families,
            proto: m.proto.map_or((0, u8::MAX), |p| (p, p)),
            addrs: [span(&m.src, false), span(&m.src, true), span(&m.dst, false), span(&m.dst, true)],
            dport,
            ct: m.ct_state.map_or(u8::MAX, |s| s.0),
        }
    }

    pub fn widen(&mut self, o: &RuleBox) {
        fn hull<T: Ord + Copy>(a: (T, T), b: (T, T)) -> (T, T) {
            match (a.0 > a.1, b.0 > b.1) {
                (true, _) => b,
                (_, true) => a,
                _ => (a.0.min(b.0), a.1.max(b.1)),
            }
        }
        self.families |= o.families;
        self.proto = hull(self.proto, o.proto);
        for i in 0..4 {
            self.addrs[i] = hull(self.addrs[i], o.addrs[i]);
        }
        self.dport = hull(self.dport, o.dport);
        self.ct |= o.ct;
    }

    /// No rule inside `self` can overlap a rule inside `o`.
    pub fn apart(&self, o: &RuleBox) -> bool {
        fn miss<T: Ord>(a: &(T, T), b: &(T, T)) -> bool {
            a.0 > a.1 || b.0 > b.1 || a.1 < b.0 || b.1 < a.0
        }
        let addrs = |i: usize| miss(&self.addrs[i], &o.addrs[i]) && miss(&self.addrs[i + 1], &o.addrs[i + 1]);
        self.families & o.families == 0
            || miss(&self.proto, &o.proto)
            || miss(&self.dport, &o.dport)
            || self.ct & o.ct == 0
            || addrs(0)
            || addrs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Match {
        let c = crate::ir::compile("t.pf", &format!("table t\n{text}\n")).expect("compiles");
        c.ruleset.chains[0].rules[0].matches.clone()
    }

    #[test]
    fn disjoint_only_when_a_field_proves_it() {
        let cases = [
            ("pass in proto tcp from 10.0.0.0/24", "pass in proto udp from 10.0.0.0/24", true),
            ("pass in proto tcp from 10.0.0.0/24", "pass in proto tcp from 10.0.1.0/24", true),
            ("pass in proto tcp from 10.0.0.0/16", "pass in proto tcp from 10.0.1.0/24", false),
            ("pass in from 10.0.0.1", "pass in from 2001:db8::1", true),
            ("pass in proto tcp to port 22", "pass in proto tcp to port 80-90", true),
            ("pass in proto tcp to port 22", "pass in proto tcp to port 20-30", false),
            ("pass in proto tcp to port ! 22", "pass in proto tcp to port 22", false),
            ("pass in on eth0", "pass in on eth1", true),
            ("pass in on eth*", "pass in on eth1", false),
            ("pass in on et*", "pass in on eth*", false),
            ("pass in on wg*", "pass in on eth1", true),
            ("pass in state new", "pass in state established", true),
            ("pass in state { new, established }", "pass in state established", false),
            ("pass in from 10.0.0.1", "pass in from ! 10.0.0.1", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(disjoint(&rule(a), &rule(b)), want, "{a} / {b}");
            assert_eq!(disjoint(&rule(b), &rule(a)), want, "{b} / {a}");
            if !want {
                assert!(!RuleBox::of(&rule(a)).apart(&RuleBox::of(&rule(b))), "boxes of {a} / {b}");
            }
        }
    }

    #[test]
    fn taken_holds_the_union() {
        let ports = |v: &[(u16, u16)]| Values::Ports(v.to_vec());
        let mut t = Taken::default();
        t.insert(&ports(&[(10, 20)]));
        t.insert(&ports(&[(15, 30), (40, 40)]));
        t.insert(&ports(&[(21, 22)]));
        assert!(t.overlaps(&ports(&[(30, 35)])) && t.overlaps(&ports(&[(1, 10)])) && t.overlaps(&ports(&[(40, 40)])));
        assert!(!t.overlaps(&ports(&[(31, 39)])) && !t.overlaps(&ports(&[(41, 65535)])));
        let nets = |s: &str| Values::Nets(vec![s.parse().unwrap()]);
        t = Taken::default();
        t.insert(&nets("0.0.0.0/0"));
        assert!(!t.overlaps(&nets("::/0")) && t.overlaps(&nets("10.0.0.1/32")));
    }
}
