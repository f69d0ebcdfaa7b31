//! Allowlist protection: addresses the policy explicitly trusts (an
//! `allow-always` list, or the source of a `pass` rule) are cut out of every
//! feed that a block rule uses, so a feed can never lock out your own network.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::ir::{Action, AddrMatch, Ruleset, SetKind};

/// A trusted network and why it is trusted (`allow-always`, `pass rule policy.pf:12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    pub net: IpNet,
    pub why: String,
}

/// Everything the policy trusts, sorted.
pub fn trusted(rs: &Ruleset) -> Vec<Trusted> {
    let mut out: Vec<Trusted> =
        rs.allow_always.iter().map(|&net| Trusted { net, why: "allow-always".into() }).collect();
    for rule in rs.chains.iter().flat_map(|c| &c.rules).filter(|r| r.action == Action::Pass) {
        if let AddrMatch::Nets { negated: false, nets } = &rule.matches.src {
            out.extend(nets.iter().map(|&net| Trusted { net, why: format!("pass rule {}", rule.origin.id) }));
        }
    }
    out.sort_by(|a, b| (a.net, &a.why).cmp(&(b.net, &b.why)));
    out.dedup_by(|a, b| a.net == b.net);
    out
}

/// Names of the feeds that a block or reject rule matches on.
pub fn blocking_feeds(rs: &Ruleset) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in rs.chains.iter().flat_map(|c| &c.rules).filter(|r| r.action != Action::Pass) {
        for m in [&rule.matches.src, &rule.matches.dst] {
            if let AddrMatch::Set { negated: false, set } = m {
                if let Some(SetKind::Feed { feed }) = rs.set(set).map(|s| &s.kind) {
                    out.insert(feed.clone());
                }
            }
        }
    }
    out
}

/// What was cut out of a feed, for the warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The feed entry that overlapped.
    pub entry: IpNet,
    pub trusted: Trusted,
}

/// `nets` minus every trusted network, exactly: an entry that contains a
/// trusted network is split into the prefixes around it. Sorted result.
pub fn subtract(nets: Vec<IpNet>, trusted: &[Trusted]) -> (Vec<IpNet>, Vec<Cut>) {
    let mut nets = nets;
    let mut cuts = Vec::new();
    for t in trusted {
        let mut next = Vec::with_capacity(nets.len());
        for n in nets {
            if !(n.contains(&t.net) || t.net.contains(&n)) {
                next.push(n);
                continue;
            }
            cuts.push(Cut { entry: n, trusted: t.clone() });
            if n.contains(&t.net) && n != t.net {
                next.extend(around(n, t.net));
            }
        }
        nets = next;
    }
    nets.sort_unstable();
    (nets, cuts)
}

/// The prefixes that cover `outer` except `inner` (which it contains):
/// the sibling of each step on the way from `inner` up to `outer`.
fn around(outer: IpNet, inner: IpNet) -> Vec<IpNet> {
    ((outer.prefix_len() + 1)..=inner.prefix_len())
        .map(|len| {
            let step = IpNet::new(inner.addr(), len).expect("shorter than inner's prefix").trunc();
            let parent = step.supernet().expect("longer than outer's prefix");
            parent.subnets(len).expect("one bit longer").find(|s| *s != step).expect("two halves")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Trusted {
        Trusted { net: n(s), why: "allow-always".into() }
    }

    #[test]
    fn splitting_leaves_exactly_the_rest() {
        let (left, cuts) = subtract(vec![n("10.0.0.0/8"), n("192.0.2.0/24")], &[t("10.10.0.0/24")]);
        assert_eq!(cuts.len(), 1);
        // Every address of 10/8 but 10.10.0.0/24 is still covered, once.
        let total: u64 = left.iter().filter(|x| x.addr().is_ipv4()).map(|x| 1u64 << (32 - x.prefix_len())).sum();
        assert_eq!(total, (1 << 24) + 256 - 256);
        assert!(left.iter().all(|x| !x.contains(&n("10.10.0.5/32")) && !n("10.10.0.0/24").contains(x)));
        assert!(left.contains(&n("10.10.1.0/24")) && left.contains(&n("10.0.0.0/13")));
        assert_eq!(IpNet::aggregate(&left), left, "no overlaps, already minimal");
    }

    #[test]
    fn a_trusted_network_swallows_smaller_entries() {
        let (left, cuts) = subtract(vec![n("10.10.0.7/32"), n("2001:db8::/32")], &[t("10.10.0.0/24")]);
        assert_eq!(left, vec![n("2001:db8::/32")]);
        assert_eq!(cuts[0].entry, n("10.10.0.7/32"));
    }
}
