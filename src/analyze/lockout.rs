//! Lockout findings for `lint`: a policy that drops loopback, the replies of
//! established connections, or every way in for SSH. Each is checked by
//! evaluating concrete packets with the exact evaluator (`ir::eval`); run-time
//! sets are taken as empty. (`apply` refusing such a policy is the lockout
//! guard's job; this only reports.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::diag::{Diag, Span};
use crate::ir::eval::{self, Packet, SetContents};
use crate::ir::{names, Action, AddrMatch, Family, Hook, Rule, Ruleset};

/// The codes of the findings made here.
pub const CODES: [&str; 3] = ["drops-loopback", "drops-established", "no-management-access"];

const SSH: u16 = 22;
/// A documentation address (RFC 5737 / 3849) for "somewhere on the internet".
const SOMEWHERE_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const SOMEWHERE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const THIS_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

fn state(name: &str) -> u8 {
    names::ct_state_bit(name).unwrap_or(0)
}

fn tcp(hook: Hook, iif: Option<&str>, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, ct: &str) -> Packet {
    let oif = (hook == Hook::Output).then(|| iif.unwrap_or("eth0").to_string());
    Packet {
        hook,
        iif: (hook == Hook::Input).then(|| iif.unwrap_or("eth0").to_string()),
        oif,
        src,
        dst,
        proto: names::TCP,
        sport: Some(sport),
        dport: Some(dport),
        icmp_type: None,
        ct_state: state(ct),
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: crate::ir::eval::default_local(hook, dst),
    }
}

/// The rule or default policy that dropped `p`, as a span and a name.
fn blame(rs: &Ruleset, p: &Packet, d: &eval::Decision) -> (Span, String) {
    match eval::deciding_rule(rs, p, d) {
        Some(rule) => (rule.origin.span, format!("rule {}", rule.origin.id)),
        None => {
            let policy = &rs.chain(p.hook).policy;
            let span = policy.origin.as_ref().map_or_else(Span::default, |o| o.span);
            let what = if policy.origin.is_some() { "the default" } else { "the built-in default" };
            (span, format!("{what} {} policy", p.hook.name()))
        }
    }
}

fn passes(rs: &Ruleset, p: &Packet) -> Result<(), (Span, String)> {
    let d = eval::decide(rs, p, &SetContents::default());
    if d.verdict == Action::Pass {
        Ok(())
    } else {
        Err(blame(rs, p, &d))
    }
}

pub fn findings(rs: &Ruleset) -> Vec<Diag> {
    let mut out = Vec::new();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let loopback = [
        tcp(Hook::Input, Some("lo"), lo, lo, 40000, 8080, "new"),
        tcp(Hook::Output, Some("lo"), lo, lo, 40000, 8080, "new"),
    ];
    if let Some((span, who)) = loopback.iter().find_map(|p| passes(rs, p).err()) {
        out.push(
            Diag::warning(
                "drops-loopback",
                span,
                format!("this policy drops loopback traffic ({who})"),
                format!("{who} drops it"),
            )
            .with_help(
                "local services talk over `lo` (databases, resolvers, agents): add `pass in on lo` near the top",
            ),
        );
    }
    let replies = [
        tcp(Hook::Input, None, SOMEWHERE_V4, THIS_HOST, 443, 40000, "established"),
        tcp(Hook::Input, None, SOMEWHERE_V4, THIS_HOST, 443, 40000, "related"),
    ];
    if let Some((span, who)) = replies.iter().find_map(|p| passes(rs, p).err()) {
        out.push(
            Diag::warning(
                "drops-established",
                span,
                format!("this policy drops established and related traffic ({who})"),
                format!("{who} drops the replies to this host's own connections"),
            )
            .with_help("without it every connection needs a rule both ways, and your SSH session stalls: add `pass in state { established, related }` near the top"),
        );
    }
    if !ssh_reachable(rs) {
        let input = &rs.chain(Hook::Input).policy;
        let span = input.origin.as_ref().map_or_else(Span::default, |o| o.span);
        out.push(
            Diag::warning(
                "no-management-access",
                span,
                format!("no new SSH connection (tcp port {SSH}) can come in"),
                "no rule passes it, and the input policy drops it",
            )
            .with_help("if this host is managed over SSH, add `pass in proto tcp from $admin_net to port 22 state new` (or the port your sshd uses)"),
        );
    }
    out
}

/// Can some new SSH connection come in? Tried from the default policy and,
/// for each input `pass` rule that passes new SSH connections, from an
/// address and interface that rule names. (Only those: trying a packet per
/// `pass` rule through the whole chain was quadratic in the rule count.)
fn ssh_reachable(rs: &Ruleset) -> bool {
    let mut tries = vec![tcp(Hook::Input, None, SOMEWHERE_V4, THIS_HOST, 50000, SSH, "new")];
    // Loopback is no way in from another host.
    let remote = |r: &&Rule| !r.matches.iif.as_ref().is_some_and(|i| !i.negated && i.names.iter().all(|n| n == "lo"));
    let passing = rs.chain(Hook::Input).rules.iter().filter(|r| r.action == Action::Pass);
    let no_sets = SetContents::default();
    tries.extend(
        passing
            .filter(remote)
            .map(|r| (r, ssh_packet_for(r)))
            .filter(|(r, p)| eval::check(rs, &r.matches, p, &no_sets).is_ok())
            .map(|(_, p)| p),
    );
    tries.iter().any(|p| passes(rs, p).is_ok())
}

/// A new SSH packet that `rule`'s source and interface clauses accept.
fn ssh_packet_for(rule: &Rule) -> Packet {
    let m = &rule.matches;
    let somewhere = if m.family == Some(Family::V6) { SOMEWHERE_V6 } else { SOMEWHERE_V4 };
    let src = match &m.src {
        AddrMatch::Nets { negated: false, nets } => nets.first().map_or(somewhere, |n| n.network()),
        _ => somewhere,
    };
    let dst = match &m.dst {
        AddrMatch::Nets { negated: false, nets } => nets.first().map_or(THIS_HOST, |n| n.network()),
        _ if src.is_ipv6() => SOMEWHERE_V6,
        _ => THIS_HOST,
    };
    let iif = m.iif.as_ref().and_then(|i| i.example());
    tcp(Hook::Input, iif.as_deref(), src, dst, 50000, SSH, "new")
}

#[cfg(test)]
mod tests {
    fn codes(policy: &str) -> Vec<&'static str> {
        let c = crate::ir::compile("l.pf", policy).expect("compiles");
        super::findings(&c.ruleset).into_iter().map(|d| d.code).collect()
    }

    #[test]
    fn empty_policy_locks_out_on_three_counts() {
        assert_eq!(codes(""), ["drops-loopback", "drops-established", "no-management-access"]);
        let safe = "pass in on lo\npass in state { established, related }\npass in proto tcp from 10.10.0.0/24 to port 22 state new\n";
        assert_eq!(codes(safe), Vec::<&str>::new());
        // SSH only on the management interface still counts as a way in.
        assert_eq!(
            codes("pass in on lo\npass in state { established, related }\npass in on mgmt* proto tcp to port 22\n"),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes("pass in on lo\npass in state { established, related }\npass in proto tcp to port 2222\n"),
            ["no-management-access"]
        );
        assert_eq!(codes("policy input pass\nblock in on lo\n"), ["drops-loopback"]);
    }
}
