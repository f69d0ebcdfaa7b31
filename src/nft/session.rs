//! The lockdown ruleset of `phantomc panic` that keeps only the operator's
//! connection alive.

use std::net::{IpAddr, SocketAddr};

pub use crate::host::session::Session;

use ipnet::IpNet;

use crate::diag::Span;
use crate::ir::{
    names, Action, AddrMatch, Chain, DefaultPolicy, Hook, Ifaces, Match, Origin, PortMatch, Rule, Ruleset,
};

fn host(ip: IpAddr) -> AddrMatch {
    AddrMatch::Nets { negated: false, nets: vec![IpNet::from(ip)] }
}

fn port(p: u16) -> Option<PortMatch> {
    Some(PortMatch { negated: false, ranges: vec![(p, p)] })
}

fn rule(id: &str, matches: Match) -> Rule {
    Rule {
        origin: Origin { id: id.to_string(), span: Span::default(), stmt: 0 },
        matches,
        action: Action::Pass,
        limit: None,
        log: None,
        counter: true,
        label: None,
        reject: None,
        quota: None,
        early: false,
        notrack: false,
        set_marks: Vec::new(),
        offload: None,
        counter_name: None,
        merged: None,
    }
}

/// Everything dropped in every direction, except loopback and `keep` (at a
/// console there is no session to keep: loopback only).
pub fn panic_ruleset(table: &str, keep: Option<&Session>) -> Ruleset {
    let tcp = |keep: &Session, src: SocketAddr, dst: SocketAddr| Match {
        family: Some(keep.family()),
        proto: Some(names::TCP),
        src: host(src.ip()),
        dst: host(dst.ip()),
        sport: port(src.port()),
        dport: port(dst.port()),
        ..Match::default()
    };
    let mut input =
        vec![rule("panic loopback", Match { iif: Some(Ifaces::plain(vec!["lo".into()])), ..Match::default() })];
    let mut output =
        vec![rule("panic loopback", Match { oif: Some(Ifaces::plain(vec!["lo".into()])), ..Match::default() })];
    if let Some(keep) = keep {
        let id = format!("panic keeps {keep}");
        input.push(rule(&id, tcp(keep, keep.client, keep.server)));
        output.push(rule(&id, tcp(keep, keep.server, keep.client)));
    }
    let drop = DefaultPolicy { action: Action::Block, log: None, counter: false, origin: None };
    let chain = |hook, rules| Chain { hook, policy: drop.clone(), rules, priority: 0 };
    Ruleset {
        table: table.to_string(),
        sets: Vec::new(),
        chains: vec![chain(Hook::Input, input), chain(Hook::Forward, Vec::new()), chain(Hook::Output, output)],
        nat: Vec::new(),
        marks: Vec::new(),
        flowtables: Vec::new(),
        feeds: Vec::new(),
        allow_always: Vec::new(),
        tests: Vec::new(),
        adaptive: None,
        expiries: Vec::new(),
    }
}
