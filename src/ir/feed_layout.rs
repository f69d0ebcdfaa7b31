//! How a feed's networks of one family sit in the kernel: the one mapping
//! from a feed set (`bad_v4`) to its kernel sets and back, used by the
//! emitter, feed updates and every reader of the live table.
//!
//! A lookup in an nft interval set walks a red-black tree, about 20
//! compares per new connection at 800k entries; a hash lookup does not grow
//! with the set. So each feed set is several kernel sets, always the same
//! ones (the rules that look them up do not depend on the feed's contents,
//! and an update replaces elements only):
//! - a hash set per prefix length of [`lengths`] (`bad_v4_32`, `bad_v4_24`;
//!   IPv6 `_128`, `_64`, `_48`), looked up with the address masked to that
//!   length, holding the networks of that length and those up to
//!   [`MAX_SPLIT_BITS`] bits shorter, split into it (a /22 is four /24s);
//! - the interval set of the feed set's own name (`bad_v4`) for every other
//!   network (a /27, a /19, a /16, a /8), so any prefix still matches;
//! - for IPv4, a hash set of the /16s those other networks touch
//!   (`bad_v4_r16`), looked up before the interval set in the same rule: even
//!   a small interval set costs a tree walk with an indirect call per step,
//!   which the packets of every other /16 skip this way. A /16 or shorter
//!   network fills the /16s it touches, so a packet that passes the
//!   prefilter there is in the feed: such networks need no hash set of
//!   their own (a rule fewer for every packet the feed misses), only packets
//!   the feed drops walk the tree for them. (IPv6 has no prefilter: a short
//!   IPv6 prefix touches too many networks of any one length.)
//!
//! The networks are aggregated first (disjoint), so an address is in at most
//! one kernel set: one rule per kernel set that holds entries, and hits count
//! each packet once.

use ipnet::IpNet;

use super::Family;

/// Prefix lengths with a hash set, longest first.
const V4_LENGTHS: [u8; 2] = [32, 24];
const V6_LENGTHS: [u8; 3] = [128, 64, 48];
/// A network is split into the hash set of a longer length when it makes at
/// most 2^this many elements there; otherwise it goes to the interval set.
pub const MAX_SPLIT_BITS: u8 = 2;
/// The prefix length of IPv4's prefilter of the interval set: at most 65,536
/// elements, whatever the feed.
const V4_PREFILTER: u8 = 16;

/// What a kernel set of a feed set holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Networks of this prefix length, by their first address.
    Hash(u8),
    /// Networks of any other length.
    Interval,
    /// The networks of this length that the interval set's entries touch.
    Prefilter(u8),
}

/// One kernel set of a feed set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSet {
    pub name: String,
    pub family: Family,
    pub kind: Kind,
}

impl KernelSet {
    /// The mask its lookup applies first (`None`: the whole address).
    pub fn mask(&self) -> Option<IpNet> {
        let (Kind::Hash(len) | Kind::Prefilter(len)) = self.kind else { return None };
        let (zero, max): (std::net::IpAddr, u8) = match self.family {
            Family::V4 => (std::net::Ipv4Addr::UNSPECIFIED.into(), 32),
            Family::V6 => (std::net::Ipv6Addr::UNSPECIFIED.into(), 128),
        };
        (len < max).then(|| IpNet::new(zero, len).expect("length within the family"))
    }

    /// Whether it holds feed entries (the prefilter only says where to look).
    pub fn holds_entries(&self) -> bool {
        !matches!(self.kind, Kind::Prefilter(_))
    }

    /// Whether its elements are networks (an interval set) or addresses.
    pub fn is_interval(&self) -> bool {
        self.kind == Kind::Interval
    }
}

/// The hash set lengths of a family, longest first.
pub fn lengths(family: Family) -> &'static [u8] {
    match family {
        Family::V4 => &V4_LENGTHS,
        Family::V6 => &V6_LENGTHS,
    }
}

fn prefilter(family: Family) -> Option<u8> {
    (family == Family::V4).then_some(V4_PREFILTER)
}

/// The kernel sets of feed set `set` (its nft name): the hash sets, longest
/// prefix first (most entries of real feeds are single addresses), the
/// prefilter (IPv4), then the interval set.
pub fn kernel_sets(set: &str, family: Family) -> Vec<KernelSet> {
    let hashes = lengths(family).iter().map(|&l| KernelSet { name: format!("{set}_{l}"), family, kind: Kind::Hash(l) });
    let pre = prefilter(family).map(|l| KernelSet { name: format!("{set}_r{l}"), family, kind: Kind::Prefilter(l) });
    let interval = KernelSet { name: set.to_string(), family, kind: Kind::Interval };
    hashes.chain(pre).chain([interval]).collect()
}

/// The lookups of the rules that match feed set `set`: a rule per kernel
/// set holding entries, the interval set's behind its prefilter.
pub fn rule_lookups(set: &str, family: Family) -> Vec<Vec<KernelSet>> {
    let sets = kernel_sets(set, family);
    let pre = sets.iter().find(|k| !k.holds_entries()).cloned();
    sets.iter()
        .filter(|k| k.holds_entries())
        .map(|k| match k.kind {
            Kind::Interval => pre.iter().cloned().chain([k.clone()]).collect(),
            _ => vec![k.clone()],
        })
        .collect()
}

/// The hash length a network of prefix length `len` is split into, if any.
fn hash_len(family: Family, len: u8) -> Option<u8> {
    lengths(family).iter().rev().copied().find(|&l| l >= len && l - len <= MAX_SPLIT_BITS)
}

/// Aggregated networks of one family, as the kernel sets of `set` hold them.
pub fn split(set: &str, family: Family, nets: &[IpNet]) -> Vec<(KernelSet, Vec<IpNet>)> {
    let mut parts: Vec<(KernelSet, Vec<IpNet>)> = kernel_sets(set, family).into_iter().map(|k| (k, vec![])).collect();
    fn part(parts: &mut [(KernelSet, Vec<IpNet>)], kind: Kind) -> &mut Vec<IpNet> {
        &mut parts.iter_mut().find(|(k, _)| k.kind == kind).expect("a kernel set of each kind").1
    }
    let mut rest = Vec::new();
    for net in nets {
        match hash_len(family, net.prefix_len()) {
            Some(l) => part(&mut parts, Kind::Hash(l)).extend(net.subnets(l).expect("a longer length")),
            None => rest.push(*net),
        }
    }
    if let Some(l) = prefilter(family) {
        let touched = part(&mut parts, Kind::Prefilter(l));
        for net in &rest {
            match net.prefix_len() >= l {
                true => touched.push(IpNet::new(net.network(), l).expect("a shorter length").trunc()),
                false => touched.extend(net.subnets(l).expect("a longer length")),
            }
        }
    }
    *part(&mut parts, Kind::Interval) = rest;
    for (_, nets) in &mut parts {
        nets.sort_unstable();
        nets.dedup();
    }
    parts
}

/// The networks of `nets` that kernel set `kernel` holds (see [`split`]).
pub fn part(kernel: &KernelSet, nets: &[IpNet]) -> Vec<IpNet> {
    let set = of_kernel_set(&kernel.name).map_or(kernel.name.as_str(), |(s, _)| s);
    split(set, kernel.family, nets).into_iter().find(|(k, _)| k == kernel).map(|(_, n)| n).unwrap_or_default()
}

/// The feed set name and kernel set a kernel set name would stand for
/// (`bad_v4_24` -> `bad_v4` and its /24 hash set); `None` when it is no
/// feed layout's name. The caller checks that the set is a feed's.
pub fn of_kernel_set(name: &str) -> Option<(&str, KernelSet)> {
    let family_of = |set: &str| match &set[set.len().saturating_sub(3)..] {
        "_v4" => Some(Family::V4),
        "_v6" => Some(Family::V6),
        _ => None,
    };
    if let Some(family) = family_of(name) {
        return Some((name, KernelSet { name: name.to_string(), family, kind: Kind::Interval }));
    }
    let (set, _) = name.rsplit_once('_')?;
    let family = family_of(set)?;
    kernel_sets(set, family).into_iter().find(|k| k.name == name).map(|k| (set, k))
}

/// The feed's networks back from what its kernel sets that hold entries hold.
pub fn join(nets: Vec<IpNet>) -> Vec<IpNet> {
    IpNet::aggregate(&nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn networks_go_to_the_hash_set_they_split_into_or_the_interval_set() {
        let feed = nets(&[
            "192.0.2.7/32",
            "192.0.2.8/30",
            "198.51.100.0/24",
            "203.0.112.0/22",
            "10.0.0.0/15",
            "10.8.0.0/19",
            "10.8.64.0/27",
            "100.64.0.0/12",
        ]);
        let parts = split("bad_v4", Family::V4, &IpNet::aggregate(&feed));
        let shown: Vec<(String, Vec<String>)> =
            parts.iter().map(|(k, n)| (k.name.clone(), n.iter().map(|n| n.to_string()).collect())).collect();
        assert_eq!(
            shown,
            [
                (
                    "bad_v4_32".to_string(),
                    ["192.0.2.7/32", "192.0.2.8/32", "192.0.2.9/32", "192.0.2.10/32", "192.0.2.11/32"]
                        .map(String::from)
                        .to_vec()
                ),
                (
                    "bad_v4_24".into(),
                    ["198.51.100.0/24", "203.0.112.0/24", "203.0.113.0/24", "203.0.114.0/24", "203.0.115.0/24"]
                        .map(String::from)
                        .to_vec()
                ),
                // The /16s the interval set's networks touch: the /15's two, the /19's and the /27's
                // once, the /12's sixteen.
                (
                    "bad_v4_r16".into(),
                    ["10.0.0.0/16", "10.1.0.0/16", "10.8.0.0/16"]
                        .map(String::from)
                        .into_iter()
                        .chain((64..80).map(|b| format!("100.{b}.0.0/16")))
                        .collect()
                ),
                (
                    "bad_v4".into(),
                    ["10.0.0.0/15", "10.8.0.0/19", "10.8.64.0/27", "100.64.0.0/12"].map(String::from).to_vec()
                ),
            ]
        );
        let all: Vec<IpNet> = parts.into_iter().filter(|(k, _)| k.holds_entries()).flat_map(|(_, n)| n).collect();
        assert_eq!(join(all), IpNet::aggregate(&feed), "joining the kernel sets gives the feed back");
    }

    #[test]
    fn ipv6_has_its_own_lengths_and_masks() {
        let parts = split(
            "bad_v6",
            Family::V6,
            &nets(&["2001:db8::1/128", "2001:db8:1::/62", "2001:db8:2::/48", "2001:db8:8000::/33"]),
        );
        let sizes: Vec<(String, usize)> = parts.iter().map(|(k, n)| (k.name.clone(), n.len())).collect();
        assert_eq!(
            sizes,
            [("bad_v6_128".into(), 1), ("bad_v6_64".into(), 4), ("bad_v6_48".into(), 1), ("bad_v6".into(), 1)]
        );
        assert_eq!(parts[1].0.mask().map(|m| m.netmask().to_string()), Some("ffff:ffff:ffff:ffff::".into()));
        assert_eq!(parts[0].0.mask(), None, "a full-length lookup needs no mask");
    }

    #[test]
    fn kernel_set_names_map_back_to_their_feed_set() {
        fn kind(name: &str) -> Option<(&str, Kind)> {
            of_kernel_set(name).map(|(set, k)| (set, k.kind))
        }
        assert_eq!(kind("bad_v4_24"), Some(("bad_v4", Kind::Hash(24))));
        assert_eq!(kind("my_feed_v6_128"), Some(("my_feed_v6", Kind::Hash(128))));
        assert_eq!(kind("bad_v4_r16"), Some(("bad_v4", Kind::Prefilter(16))));
        assert_eq!(kind("bad_v6"), Some(("bad_v6", Kind::Interval)));
        assert_eq!(kind("bad_v4_25"), None, "no hash set of that length");
        assert_eq!(kind("bad_v4_16"), None, "a /16 is in the interval set, behind the prefilter");
        assert_eq!(kind("bad_v6_r16"), None, "IPv6 has no prefilter");
        assert_eq!(kind("bad_v6_32x"), None);
        assert_eq!(kind("merged_3"), None);
        for (set, family) in [("x_v4", Family::V4), ("x_v6", Family::V6)] {
            for k in kernel_sets(set, family) {
                assert_eq!(of_kernel_set(&k.name), Some((set, k.clone())));
            }
        }
    }

    /// What the kernel answers for `addr` with `parts` loaded: whether a
    /// rule of [`rule_lookups`] matches (every lookup of it, masked, hits).
    fn kernel_matches(set: &str, family: Family, parts: &[(KernelSet, Vec<IpNet>)], addr: std::net::IpAddr) -> bool {
        let hit = |k: &KernelSet| {
            let nets = &parts.iter().find(|(p, _)| p == k).expect("a part per kernel set").1;
            match (k.is_interval(), k.mask()) {
                (true, _) => nets.iter().any(|n| n.contains(&addr)),
                (false, mask) => {
                    let len = mask.map_or(if addr.is_ipv4() { 32 } else { 128 }, |m| m.prefix_len());
                    let key = IpNet::new(addr, len).expect("length").trunc();
                    nets.iter().any(|n| n.network() == key.network())
                }
            }
        };
        rule_lookups(set, family).iter().any(|lookups| lookups.iter().all(hit))
    }

    #[test]
    fn the_rules_match_exactly_the_feed_at_every_prefix_length() {
        // A pseudo-random feed of prefix lengths from /12 to /32 (IPv6 /48
        // to /128) in a small address space, so that random addresses probe
        // both inside and next to its networks.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for family in [Family::V4, Family::V6] {
            let max = if family == Family::V4 { 32 } else { 128 };
            let addr = |r: u64, hi: u64| -> std::net::IpAddr {
                match family {
                    Family::V4 => std::net::Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x01ff_ffff)).into(),
                    // A nibble of entropy atop each group after 2001:db8, as IPv4 has 25 bits.
                    Family::V6 => std::net::Ipv6Addr::from((0..6).fold(0x2001_0db8u128 << 96, |a, g| {
                        a | (u128::from((r ^ hi) >> (4 * g) & 0xf) << (16 * g + 12))
                    }))
                    .into(),
                }
            };
            let feed: Vec<IpNet> = (0..400)
                .map(|_| {
                    let shortest = max as u64 * 3 / 8;
                    let len = shortest + next() % (max as u64 - shortest + 1);
                    IpNet::new(addr(next(), next()), len as u8).expect("length").trunc()
                })
                .collect();
            let feed = IpNet::aggregate(&feed);
            let set = if family == Family::V4 { "bad_v4" } else { "bad_v6" };
            let parts = split(set, family, &feed);
            let mut hits = 0;
            for _ in 0..20_000 {
                let a = addr(next(), next());
                let listed = feed.iter().any(|n| n.contains(&a));
                assert_eq!(kernel_matches(set, family, &parts, a), listed, "{a}");
                hits += usize::from(listed);
            }
            assert!((2_000..18_000).contains(&hits), "{family:?}: {hits} of 20000 probes listed: probe both sides");
            let used: Vec<usize> = parts.iter().map(|(_, n)| n.len()).collect();
            assert!(used.iter().all(|&n| n > 0), "{family:?}: every kernel set is exercised: {used:?}");
        }
    }

    #[test]
    fn the_interval_set_is_looked_up_behind_its_prefilter() {
        let rules: Vec<Vec<String>> =
            rule_lookups("bad_v4", Family::V4).iter().map(|r| r.iter().map(|k| k.name.clone()).collect()).collect();
        assert_eq!(rules, [vec!["bad_v4_32"], vec!["bad_v4_24"], vec!["bad_v4_r16", "bad_v4"]]);
        assert_eq!(rule_lookups("bad_v6", Family::V6).len(), 4);
    }
}
