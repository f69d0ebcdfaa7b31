//! Sets of integers as sorted interval lists, and addresses as integers:
//! the exact arithmetic that lowering (address exclusions) and the analyzer
//! (header space) share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::Family;

/// A set of integers as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ranges(pub Vec<(u128, u128)>);

impl Ranges {
    pub fn span(lo: u128, hi: u128) -> Ranges {
        Ranges(vec![(lo, hi)])
    }

    pub fn empty() -> Ranges {
        Ranges(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// From any ranges (unsorted, overlapping).
    pub fn of(it: impl IntoIterator<Item = (u128, u128)>) -> Ranges {
        let mut v: Vec<(u128, u128)> = it.into_iter().collect();
        v.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    pub fn intersect(&self, o: &Ranges) -> Ranges {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.0.len() && j < o.0.len() {
            let (a, b) = (self.0[i], o.0[j]);
            let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    pub fn intersects(&self, o: &Ranges) -> bool {
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < o.0.len() {
            let (a, b) = (self.0[i], o.0[j]);
            if a.0.max(b.0) <= a.1.min(b.1) {
                return true;
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        false
    }

    /// `self` minus `o`.
    pub fn subtract(&self, o: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            let mut cur = lo;
            let mut done = false;
            while j < o.0.len() && o.0[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while k < o.0.len() && o.0[k].0 <= hi {
                let (blo, bhi) = o.0[k];
                if blo > cur {
                    out.push((cur, blo - 1));
                }
                if bhi >= hi {
                    done = true;
                    break;
                }
                cur = bhi + 1;
                k += 1;
            }
            if !done {
                out.push((cur, hi));
            }
        }
        Ranges(out)
    }

    pub fn union(&self, o: &Ranges) -> Ranges {
        Ranges::of(self.0.iter().chain(&o.0).copied())
    }

    pub fn contains(&self, x: u128) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= x && x <= hi)
    }

    /// Number of values (saturating).
    pub fn count(&self) -> u128 {
        self.0.iter().fold(0u128, |n, &(lo, hi)| n.saturating_add(hi - lo).saturating_add(1))
    }

    pub fn values(&self) -> impl Iterator<Item = u128> + '_ {
        self.0.iter().flat_map(|&(lo, hi)| lo..=hi)
    }
}

pub fn family_max(f: Family) -> u128 {
    match f {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

pub fn ip_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn net_range(n: &IpNet) -> (u128, u128) {
    (ip_value(n.network()), ip_value(n.broadcast()))
}

/// The fewest networks of `family` that cover exactly the addresses in `r`
/// (every range split into its largest aligned blocks).
pub fn to_nets(r: &Ranges, family: Family) -> Vec<IpNet> {
    let bits: u32 = if family == Family::V4 { 32 } else { 128 };
    let mut out = Vec::new();
    for &(lo, hi) in &r.0 {
        let mut cur = lo;
        loop {
            // The largest block aligned at `cur` that ends by `hi`.
            let mut size = if cur == 0 { bits } else { cur.trailing_zeros().min(bits) };
            while size > 0 && block_end(cur, size) > hi {
                size -= 1;
            }
            let prefix = (bits - size) as u8;
            let net = match family {
                Family::V4 => IpNet::new(IpAddr::V4(Ipv4Addr::from(cur as u32)), prefix),
                Family::V6 => IpNet::new(IpAddr::V6(Ipv6Addr::from(cur)), prefix),
            };
            out.extend(net.ok());
            let end = block_end(cur, size);
            if end >= hi {
                break;
            }
            cur = end + 1;
        }
    }
    out
}

/// Last value of the block of 2^`size` values starting at `start` (aligned, so it cannot overflow).
fn block_end(start: u128, size: u32) -> u128 {
    if size >= 128 {
        u128::MAX
    } else {
        start + ((1u128 << size) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(r: &Ranges, f: Family) -> Vec<String> {
        to_nets(r, f).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn cidr_difference_is_exact_and_minimal() {
        let ten: IpNet = "10.0.0.0/8".parse().expect("net");
        let hole: IpNet = "10.1.0.0/16".parse().expect("net");
        let diff = Ranges::of([net_range(&ten)]).subtract(&Ranges::of([net_range(&hole)]));
        assert_eq!(
            nets(&diff, Family::V4),
            [
                "10.0.0.0/16",
                "10.2.0.0/15",
                "10.4.0.0/14",
                "10.8.0.0/13",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9"
            ]
        );
        assert_eq!(nets(&Ranges::span(0, u32::MAX as u128), Family::V4), ["0.0.0.0/0"]);
        assert_eq!(nets(&Ranges::span(0, u128::MAX), Family::V6), ["::/0"]);
        assert_eq!(nets(&Ranges::span(5, 5), Family::V4), ["0.0.0.5/32"]);
        assert_eq!(
            nets(&Ranges::span(u128::MAX - 1, u128::MAX), Family::V6),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"]
        );
        // Round trip: the networks cover exactly the ranges.
        let odd = Ranges::of([(3, 1000), (70_000, 70_001), (u32::MAX as u128 - 6, u32::MAX as u128)]);
        assert_eq!(Ranges::of(to_nets(&odd, Family::V4).iter().map(net_range)), odd);
    }
}
