//! The protected-address set: addresses no block may ever cover (a `block`
//! entry, a feed, a learned proposal, an adaptive block), each with the
//! reason it is protected.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::Operator;
use crate::host;
use crate::ir::{Action, AddrMatch, Ruleset};

/// The broadest network one block may cover: a /8 (1/256 of its family's
/// address space). Broader ones are refused; a feed may not cover more
/// than this much of a family in total.
pub const BROADEST_BLOCK: u8 = 8;

/// Why an address is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Loopback,
    LinkLocal,
    /// `0.0.0.0` and `::`: a source only spoofed packets carry.
    Unspecified,
    /// An address of one of this host's interfaces.
    ThisHost,
    DefaultGateway,
    AllowAlways,
    /// The source of a `pass` rule of the policy.
    PassRule,
    /// A client of the operator's session (SSH).
    Operator,
}

/// One protected network and why (`allow-always`, `pass rule policy.pf:12`,
/// `this host's address on eth0`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub net: IpNet,
    pub kind: Kind,
    pub why: String,
}

/// What was cut out of a list of networks, for the warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The listed network that overlapped.
    pub entry: IpNet,
    pub protected: Entry,
}

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockRefusal {
    #[error("{net} is the whole {family} address space; blocking it would cut off everyone, you included")]
    Everything { net: IpNet, family: &'static str },
    #[error(
        "{net} is broader than a /{BROADEST_BLOCK} ({share} of the {family} address space); block smaller networks"
    )]
    TooBroad { net: IpNet, family: &'static str, share: String },
    #[error("{net} covers {}, which is protected: {}", show(.protected.net), .protected.why)]
    Protected { net: IpNet, protected: Entry },
}

/// The protected set. Build it with [`Protected::of_policy`] (no kernel
/// access) or [`Protected::gather`] (adds this host's addresses, gateways
/// and the operator's sessions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Protected {
    entries: Vec<Entry>,
    /// What could not be read (so some addresses may be missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

impl Protected {
    /// Loopback and link-local, which are always protected.
    pub fn builtin() -> Protected {
        let mut p = Protected::default();
        for (net, kind, why) in [
            ("127.0.0.0/8", Kind::Loopback, "loopback"),
            ("::1/128", Kind::Loopback, "loopback"),
            ("169.254.0.0/16", Kind::LinkLocal, "link-local"),
            ("fe80::/10", Kind::LinkLocal, "link-local"),
            ("0.0.0.0/32", Kind::Unspecified, "unspecified address"),
            ("::/128", Kind::Unspecified, "unspecified address"),
        ] {
            p.add(net.parse().expect("valid network"), kind, why);
        }
        p
    }

    /// Built-ins plus what the policy trusts: `allow-always` networks and the
    /// explicit sources of `pass` rules.
    pub fn of_policy(rs: &Ruleset) -> Protected {
        let mut p = Protected::builtin();
        let allow =
            rs.allow_always.iter().map(|&net| Entry { net, kind: Kind::AllowAlways, why: "allow-always".into() });
        let mut passed = Vec::new();
        for rule in rs.chains.iter().flat_map(|c| &c.rules).filter(|r| r.action == Action::Pass) {
            if let AddrMatch::Nets { negated: false, nets } = &rule.matches.src {
                let why = format!("pass rule {}", rule.origin.id);
                passed.extend(nets.iter().map(|&net| Entry { net, kind: Kind::PassRule, why: why.clone() }));
            }
        }
        p.extend(allow.chain(passed));
        p
    }

    /// [`Protected::of_policy`] (built-ins only without a policy) plus this
    /// host's addresses, its default gateways and the operator's session
    /// clients. What cannot be read is listed in `unknown`.
    pub fn gather(rs: Option<&Ruleset>, operator: &Operator) -> Protected {
        let mut p = rs.map_or_else(Protected::builtin, Protected::of_policy);
        p.add_host(operator);
        p
    }

    /// Adds this host's addresses, its default gateways and the operator's
    /// session clients (what cannot be read goes to `unknown`).
    pub fn add_host(&mut self, operator: &Operator) {
        let p = self;
        p.add_operator(operator);
        match host::addresses() {
            Ok(addrs) => {
                for a in addrs {
                    p.add(IpNet::from(a.addr), Kind::ThisHost, &format!("an address of this host ({})", a.dev));
                }
            }
            Err(e) => p.unknown.push(format!("this host's addresses: {e}")),
        }
        match host::gateways() {
            Ok(gws) => {
                for g in gws {
                    p.add(IpNet::from(g.addr), Kind::DefaultGateway, "the default gateway");
                }
            }
            Err(e) => p.unknown.push(format!("the default gateways: {e}")),
        }
    }

    /// The clients of the operator's sessions.
    pub fn add_operator(&mut self, operator: &Operator) {
        for s in &operator.sessions {
            let why = format!("your session {} ({})", s.session, s.source);
            self.add(IpNet::from(s.session.client.ip()), Kind::Operator, &why);
        }
    }

    /// Adds one entry (kept sorted; an equal one is not added twice).
    pub fn add(&mut self, net: IpNet, kind: Kind, why: &str) {
        let net = net.trunc();
        if let Err(at) = self.entries.binary_search_by_key(&(net, kind), |e| (e.net, e.kind)) {
            self.entries.insert(at, Entry { net, kind, why: why.to_string() });
        }
    }

    /// Adds every entry of `other`.
    pub fn merge(&mut self, other: &Protected) {
        self.extend(other.entries.iter().cloned());
        self.unknown.extend(other.unknown.iter().cloned());
    }

    /// Adds many entries with one sort (a policy may pass 200,000 sources).
    fn extend(&mut self, more: impl IntoIterator<Item = Entry>) {
        self.entries.extend(more.into_iter().map(|e| Entry { net: e.net.trunc(), ..e }));
        self.entries.sort_by_key(|e| (e.net, e.kind));
        self.entries.dedup_by_key(|e| (e.net, e.kind));
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The first entry that protects `ip`.
    pub fn protecting(&self, ip: IpAddr) -> Option<&Entry> {
        self.entries.iter().find(|e| e.net.contains(&ip))
    }

    /// Entries that overlap `net` (inside it, or containing it).
    pub fn overlapping(&self, net: IpNet) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| overlap(e.net, net))
    }

    /// May `net` be blocked? Never the whole address space, nor a network
    /// that overlaps a protected one.
    pub fn check_block(&self, net: IpNet) -> Result<(), BlockRefusal> {
        let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        if net.prefix_len() == 0 {
            return Err(BlockRefusal::Everything { net, family });
        }
        if net.prefix_len() < BROADEST_BLOCK {
            let share = format!("1/{}", 1u32 << net.prefix_len());
            return Err(BlockRefusal::TooBroad { net, family, share });
        }
        match self.overlapping(net).next() {
            Some(e) => Err(BlockRefusal::Protected { net, protected: e.clone() }),
            None => Ok(()),
        }
    }

    /// `nets` minus every protected network, exactly: a network that
    /// contains a protected one is split into the prefixes around it.
    /// Returns the rest (sorted) and what was cut.
    pub fn cut(&self, nets: Vec<IpNet>) -> (Vec<IpNet>, Vec<Cut>) {
        self.cut_where(nets, |_| true)
    }

    /// [`Protected::cut`] with only the entries `keep` selects.
    pub fn cut_where(&self, nets: Vec<IpNet>, keep: impl Fn(&Entry) -> bool) -> (Vec<IpNet>, Vec<Cut>) {
        let mut nets = nets;
        let mut cuts = Vec::new();
        for p in self.entries.iter().filter(|e| keep(e)) {
            if !nets.iter().any(|&n| overlap(n, p.net)) {
                continue;
            }
            let mut next = Vec::with_capacity(nets.len());
            for n in nets {
                if !overlap(n, p.net) {
                    next.push(n);
                    continue;
                }
                cuts.push(Cut { entry: n, protected: p.clone() });
                if n.contains(&p.net) && n != p.net {
                    next.extend(around(n, p.net));
                }
            }
            nets = next;
        }
        nets.sort_unstable();
        (nets, cuts)
    }
}

fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

/// A host as a plain address, a network in CIDR notation.
pub fn show(n: IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
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

    fn allow(nets: &[&str]) -> Protected {
        let mut p = Protected::default();
        for s in nets {
            p.add(n(s), Kind::AllowAlways, "allow-always");
        }
        p
    }

    #[test]
    fn splitting_leaves_exactly_the_rest() {
        let (left, cuts) = allow(&["10.10.0.0/24"]).cut(vec![n("10.0.0.0/8"), n("192.0.2.0/24")]);
        assert_eq!(cuts.len(), 1);
        // Every address of 10/8 but 10.10.0.0/24 is still covered, once.
        let total: u64 = left.iter().filter(|x| x.addr().is_ipv4()).map(|x| 1u64 << (32 - x.prefix_len())).sum();
        assert_eq!(total, (1 << 24) + 256 - 256);
        assert!(left.iter().all(|x| !x.contains(&n("10.10.0.5/32")) && !n("10.10.0.0/24").contains(x)));
        assert!(left.contains(&n("10.10.1.0/24")) && left.contains(&n("10.0.0.0/13")));
        assert_eq!(IpNet::aggregate(&left), left, "no overlaps, already minimal");
    }

    #[test]
    fn a_protected_network_swallows_smaller_entries() {
        let (left, cuts) = allow(&["10.10.0.0/24"]).cut(vec![n("10.10.0.7/32"), n("2001:db8::/32")]);
        assert_eq!(left, vec![n("2001:db8::/32")]);
        assert_eq!(cuts[0].entry, n("10.10.0.7/32"));
    }

    #[test]
    fn blocks_of_everything_or_of_protected_addresses_are_refused() {
        let rs = crate::ir::compile(
            "p.pf",
            "allow-always { 192.0.2.0/25 }\npass in proto tcp from 198.51.100.7 to port 22\nblock in from 203.0.113.0/24\n",
        )
        .unwrap()
        .ruleset;
        let p = Protected::of_policy(&rs);
        assert!(matches!(p.check_block(n("0.0.0.0/0")), Err(BlockRefusal::Everything { .. })));
        assert!(matches!(p.check_block(n("::/0")), Err(BlockRefusal::Everything { family: "IPv6", .. })));
        let loopback = p.check_block(n("127.0.0.1/32")).unwrap_err();
        assert_eq!(loopback.to_string(), "127.0.0.1/32 covers 127.0.0.0/8, which is protected: loopback");
        let half = p.check_block(n("0.0.0.0/1")).unwrap_err().to_string();
        assert_eq!(half, "0.0.0.0/1 is broader than a /8 (1/2 of the IPv4 address space); block smaller networks");
        assert!(p.check_block(n("2000::/7")).is_err());
        let wide = p.check_block(n("198.51.0.0/16")).unwrap_err().to_string();
        assert!(wide.contains("198.51.100.7, which is protected: pass rule p.pf:2"), "{wide}");
        assert!(p.check_block(n("192.0.2.200/32")).is_ok(), "outside allow-always");
        assert!(p.check_block(n("192.0.2.3/32")).is_err());
        assert!(p.check_block(n("fe80::1/128")).is_err());
        assert!(p.check_block(n("203.0.113.9/32")).is_ok(), "blocked sources are not protected");
        assert_eq!(p.protecting("::1".parse().unwrap()).map(|e| e.kind), Some(Kind::Loopback));
    }
}
