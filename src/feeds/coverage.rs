//! How much of the public address space a feed covers, and the bound it
//! must stay under: aggregation can turn harmless-looking halves
//! (`0.0.0.0/1` + `128.0.0.0/1`) into everything.

use ipnet::{Ipv4Net, Ipv6Net};

/// A feed may cover at most a /8's worth of public IPv4 addresses (and a
/// /16's worth of IPv6 global unicast) unless `max-coverage` says otherwise.
pub const DEFAULT_MAX_COVERAGE_PREFIX: u8 = 8;
/// IPv6 bounds are this many prefix bits longer than the IPv4 one (/8 -> /16).
const V6_EXTRA_BITS: u8 = 8;

/// IPv4 space that is not public unicast (RFC 6890): it does not count.
const V4_NOT_PUBLIC: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// IPv6 global unicast, the only IPv6 space that counts...
const V6_GLOBAL: &str = "2000::/3";
/// ...less documentation space.
const V6_NOT_PUBLIC: [&str; 1] = ["2001:db8::/32"];

/// Addresses in a network, as u128 (a /0 of IPv6 saturates).
fn size(host_bits: u32) -> u128 {
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// Addresses two CIDR networks share: the smaller one's when one holds the
/// other, else none.
fn shared(a_len: u8, b_len: u8, contains: bool, max: u8) -> u128 {
    if contains {
        size(u32::from(max - a_len.max(b_len)))
    } else {
        0
    }
}

/// Public IPv4 addresses covered by aggregated (disjoint) networks.
pub fn public_v4(nets: &[Ipv4Net]) -> u128 {
    let special: Vec<Ipv4Net> = V4_NOT_PUBLIC.iter().map(|s| s.parse().expect("valid constant")).collect();
    nets.iter()
        .map(|n| {
            let not_public: u128 = special
                .iter()
                .map(|s| shared(n.prefix_len(), s.prefix_len(), n.contains(s) || s.contains(n), 32))
                .sum();
            size(u32::from(32 - n.prefix_len())) - not_public
        })
        .sum()
}

/// IPv6 global unicast addresses covered by aggregated (disjoint) networks.
pub fn public_v6(nets: &[Ipv6Net]) -> u128 {
    let global: Ipv6Net = V6_GLOBAL.parse().expect("valid constant");
    let special: Vec<Ipv6Net> = V6_NOT_PUBLIC.iter().map(|s| s.parse().expect("valid constant")).collect();
    let within = |n: &Ipv6Net, s: &Ipv6Net| shared(n.prefix_len(), s.prefix_len(), n.contains(s) || s.contains(n), 128);
    nets.iter()
        .map(|n| {
            let in_global = within(n, &global);
            // Documentation space lies inside 2000::/3: count it off only there.
            let not_public: u128 = special.iter().map(|s| within(n, s)).sum();
            in_global.saturating_sub(not_public)
        })
        .sum()
}

/// Refuses aggregated networks covering more than a /`prefix`'s worth of
/// public IPv4 or a /`prefix+8`'s worth of IPv6 global unicast, saying which.
pub fn check(v4: &[Ipv4Net], v6: &[Ipv6Net], prefix: u8) -> Result<(), String> {
    let v4_bound = size(u32::from(32 - prefix.min(32)));
    let v4_covered = public_v4(v4);
    if v4_covered > v4_bound {
        return Err(format!(
            "too broad: covers {v4_covered} public IPv4 addresses (a /{:.1}'s worth), more than max-coverage /{prefix} ({v4_bound})",
            prefix_worth(v4_covered, 32)
        ));
    }
    let v6_prefix = prefix.saturating_add(V6_EXTRA_BITS).min(128);
    let v6_bound = size(u32::from(128 - v6_prefix));
    let v6_covered = public_v6(v6);
    if v6_covered > v6_bound {
        return Err(format!(
            "too broad: covers a /{:.1}'s worth of IPv6 global unicast, more than max-coverage /{prefix} allows (a /{v6_prefix}'s worth)",
            prefix_worth(v6_covered, 128)
        ));
    }
    Ok(())
}

/// The prefix length whose network holds `count` addresses (fractional).
fn prefix_worth(count: u128, bits: u32) -> f64 {
    f64::from(bits) - (count as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(list: &[&str]) -> Vec<Ipv4Net> {
        Ipv4Net::aggregate(&list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn v6(list: &[&str]) -> Vec<Ipv6Net> {
        Ipv6Net::aggregate(&list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn two_halves_of_the_address_space_are_refused() {
        let err = check(&v4(&["0.0.0.0/1", "128.0.0.0/1"]), &[], DEFAULT_MAX_COVERAGE_PREFIX).unwrap_err();
        assert!(err.starts_with("too broad: covers 3702258"), "{err}");
        assert!(err.contains("more than max-coverage /8 (16777216)"), "{err}");
        let err = check(&[], &v6(&["::/1", "8000::/1"]), DEFAULT_MAX_COVERAGE_PREFIX).unwrap_err();
        assert!(err.contains("IPv6 global unicast, more than max-coverage /8 allows (a /16's worth)"), "{err}");
    }

    #[test]
    fn only_public_unicast_counts() {
        // firehol_level1's bogons: multicast, reserved, private ranges.
        let bogons = v4(&["0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3"]);
        assert_eq!(public_v4(&bogons), 0);
        assert_eq!(check(&bogons, &v6(&["fc00::/7", "fe80::/10", "2001:db8::/32"]), 8), Ok(()));
        assert_eq!(public_v4(&v4(&["8.0.0.0/7"])), 1 << 25);
        assert_eq!(public_v4(&v4(&["192.0.0.0/16"])), (1 << 16) - 512);
    }

    #[test]
    fn the_bound_is_inclusive_and_can_be_raised() {
        assert_eq!(check(&v4(&["8.0.0.0/8"]), &[], 8), Ok(()));
        assert!(check(&v4(&["8.0.0.0/8", "11.0.0.0/24"]), &[], 8).is_err());
        assert_eq!(check(&v4(&["8.0.0.0/8", "11.0.0.0/24"]), &[], 6), Ok(()));
        assert_eq!(check(&[], &v6(&["2a00::/16"]), 8), Ok(()));
        assert!(check(&[], &v6(&["2a00::/15"]), 8).is_err());
    }
}
