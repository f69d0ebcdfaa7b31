//! Proposals as a unified diff against the given policy: flagged sources go
//! into a learned set with their evidence and a block rule before the first
//! input rule; services really used get pass rules at the end. The patched
//! policy is compiled and checked with the exact evaluator before it is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::config::Config;
use super::detect::Finding;
use super::services::Service;
use super::{fmt_time, Report};
use crate::guard::Protected;
use crate::ir::eval::{decide, Packet, SetContents};
use crate::ir::expiry::{Clock, Date};
use crate::ir::{self, names, Action, Hook, Ruleset};
use crate::policy::ast::{Direction, SetBody, Stmt};
use crate::policy::{self, LoadError};

/// A proposed change to one policy file.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub old_text: String,
    pub new_text: String,
    /// Unified diff (`a/FILE` -> `b/FILE`); empty when nothing changes.
    pub diff: String,
    /// Sources added to the learned set.
    pub blocked: Vec<IpAddr>,
    /// Flagged sources that were not proposed, each with why.
    pub spared: Vec<Spared>,
    /// Rate limits proposed for services flooded from many sources.
    pub limits: Vec<String>,
    /// The pass rules added, as written.
    pub passes: Vec<String>,
    /// Things the reviewer should know (e.g. a rule shadowing a learned pass).
    pub warnings: Vec<String>,
}

/// A flagged source that is never proposed for blocking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spared {
    pub source: IpAddr,
    pub detector: &'static str,
    /// `loopback`, `allow-always`, `pass rule policy.pf:12`, `--host`, ...
    pub why: String,
}

/// What the proposal is made for, besides the report.
#[derive(Clone, Debug)]
pub struct Context {
    /// Protected beyond the built-ins and what the policy trusts: this
    /// host's addresses, the gateway, the operator's SSH client.
    pub protected: Protected,
    /// When `learn` ran (µs since the epoch): expiry dates count from it,
    /// and the proposal is checked as of then.
    pub now_us: u64,
    /// Extra evidence per source (the baseline comparison), one line each.
    pub notes: BTreeMap<IpAddr, String>,
}

impl Default for Context {
    /// Nothing protected beyond the policy, learn running now.
    fn default() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Context {
            protected: Protected::default(),
            now_us: now.map_or(0, |d| d.as_micros() as u64),
            notes: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A bug: the patched policy does not compile. Carries the rendered diagnostics.
    #[error("the proposed policy does not compile:\n{0}")]
    Broken(String),
}

/// Where in the main policy file things go.
struct Anchors {
    /// Start of the line of the first input filter rule (or end of file).
    first_input_rule: usize,
    /// Where a block rule goes: after the leading `pass in on lo`,
    /// `state invalid` and established/related rules (or the first input rule).
    block_rule_at: usize,
    /// The existing learned set: byte offset of its closing `}` and its elements.
    learned_set: Option<(usize, Vec<IpNet>)>,
    /// A rule already blocks `<learned set>`.
    has_block_rule: bool,
}

fn anchors(p: &policy::Policy, set_name: &str) -> Anchors {
    let text = &p.sources.file(0).text;
    let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |at: usize| text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
    let mut a =
        Anchors { first_input_rule: text.len(), block_rule_at: text.len(), learned_set: None, has_block_rule: false };
    let reference = format!("<{set_name}>");
    let mut in_preamble = true;
    for stmt in &p.stmts {
        match stmt {
            Stmt::Rule(r) if r.span.file == 0 => {
                if r.direction.node == Direction::In && a.first_input_rule == text.len() {
                    a.first_input_rule = line_start(r.span.start);
                    a.block_rule_at = a.first_input_rule;
                }
                if r.direction.node == Direction::In && in_preamble {
                    if preamble_rule(p.sources.snippet(r.span)) {
                        a.block_rule_at = line_end(r.span.end);
                    } else {
                        in_preamble = false;
                    }
                }
                a.has_block_rule |= p.sources.snippet(r.span).contains(&reference) && r.action.node != Action::Pass;
            }
            Stmt::Set { name, body: SetBody::Static(_), span } if span.file == 0 && name.node == set_name => {
                let close = p.sources.snippet(*span).rfind('}').map(|i| span.start + i);
                a.learned_set = close.map(|c| (c, Vec::new()));
            }
            _ => {}
        }
    }
    a
}

/// Rules that must stay above any learned block: loopback, invalid packets,
/// and the replies of established connections.
fn preamble_rule(snippet: &str) -> bool {
    let words: Vec<&str> =
        snippet.split(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ',')).filter(|w| !w.is_empty()).collect();
    let has = |w: &str| words.contains(&w);
    (has("on") && has("lo")) || (has("state") && (has("established") || has("related") || has("invalid")))
}

/// Build the proposal for `policy_path` from a report.
pub fn propose(
    policy_path: &Path,
    report: &Report,
    cfg: &Config,
    capture_name: &str,
    ctx: &Context,
) -> Result<Proposal, ProposeError> {
    let parsed = policy::load(policy_path)?;
    let old_text = parsed.sources.file(0).text.to_string();
    let before = ir::compile_file(policy_path)?.ruleset;
    let set_name = &cfg.propose.block_set;
    let mut anchors = anchors(&parsed, set_name);
    if let Some((_, elements)) = &mut anchors.learned_set {
        for nft_name in [ir::nft_set_name(set_name, ir::Family::V4), ir::nft_set_name(set_name, ir::Family::V6)] {
            if let Some(e) = before.set(&nft_name).and_then(|s| s.kind.loaded()) {
                elements.extend(e);
            }
        }
    }
    let already = anchors.learned_set.as_ref().map(|(_, e)| e.clone()).unwrap_or_default();

    let mut protected = Protected::of_policy(&before);
    protected.merge(&ctx.protected);
    let mut by_source: BTreeMap<IpAddr, Vec<&Finding>> = BTreeMap::new();
    let mut spared = Vec::new();
    for f in report.findings.iter().filter(|f| !already.iter().any(|n| n.contains(&f.source))) {
        match protected.protecting(f.source) {
            Some(e) => spared.push(Spared { source: f.source, detector: f.detector.name(), why: e.why.clone() }),
            None => by_source.entry(f.source).or_default().push(f),
        }
    }
    let blocked: Vec<IpAddr> = by_source.keys().copied().collect();
    let entries: String = by_source.iter().map(|(ip, fs)| block_entry(*ip, fs, report, cfg, ctx)).collect();

    let mut inserts: Vec<(usize, String)> = Vec::new();
    if !entries.is_empty() {
        match anchors.learned_set {
            Some((close, _)) => inserts.push((close, entries)),
            None => inserts.push((
                anchors.block_rule_at,
                format!(
                    "# Learned by `phantomc learn` from {capture_name}: sources flagged by its detectors.\n\
                     # Each entry carries its evidence and expires {days} days after learn ran (nft removes it then).\nset {set_name} = {{\n{entries}}}\n",
                    days = cfg.propose.block_expiry_days
                ),
            )),
        }
        if !anchors.has_block_rule {
            inserts.push((anchors.block_rule_at, format!("block in from <{set_name}> log \"learned\"\n\n")));
        }
    }

    let limits = flood_limits(&old_text, report, cfg);
    if !limits.is_empty() {
        let body: String = limits.iter().map(|r| format!("{r}\n")).collect();
        inserts.push((
            anchors.block_rule_at,
            format!(
                "# Learned by `phantomc learn` from {capture_name}: SYN floods from many sources; new\n\
                 # connections over the limit are dropped (also keep net.ipv4.tcp_syncookies=1).\n\
                 # If real clients must keep connecting during a flood, a SYN proxy (nft `synproxy`\n\
                 # in a table of its own; phantomc's language has none) answers handshakes first.\n{body}\n"
            ),
        ));
    }

    let passes = pass_rules(&before, &report.services, cfg);
    if !passes.is_empty() {
        let body: String = passes.iter().map(|r| format!("{r}\n")).collect();
        inserts.push((
            old_text.len(),
            format!("\n# Learned by `phantomc learn` from {capture_name}: services used.\n{body}"),
        ));
    }

    // Apply from the end so earlier offsets stay valid; equal offsets keep their order.
    let mut new_text: String = old_text.clone();
    if !inserts.is_empty() && !new_text.is_empty() && !new_text.ends_with('\n') {
        // Text appended at the end must start on a line of its own.
        new_text.push('\n');
        for (at, _) in inserts.iter_mut().filter(|(at, _)| *at == old_text.len()) {
            *at += 1;
        }
    }
    for (at, text) in inserts.iter().rev() {
        new_text.insert_str(*at, text);
    }
    let name = policy_path.display().to_string();
    // Checked as of when learn ran, the time its entries' dates count from.
    let clock = Clock::at(ctx.now_us / 1_000_000);
    let after = ir::compile_at(&name, &new_text, clock).map_err(|e| ProposeError::Broken(e.to_string()))?.ruleset;
    let warnings = check(&after, report, &blocked, cfg);
    let diff = if new_text == old_text {
        String::new()
    } else {
        similar::TextDiff::from_lines(&old_text, &new_text)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{name}"), &format!("b/{name}"))
            .to_string()
    };
    Ok(Proposal { old_text, new_text, diff, blocked, spared, limits, passes, warnings })
}

/// One element of the learned set with its evidence as comments. It
/// `expires` `block_expiry_days` after learn ran (a proposal from an old
/// capture is not born expired): the compiled set drops it then, and the
/// kernel removes it at the end of that day even without a recompile.
fn block_entry(ip: IpAddr, findings: &[&Finding], report: &Report, cfg: &Config, ctx: &Context) -> String {
    let last = findings.iter().map(|f| f.last_seen_us).max().unwrap_or(0);
    let first = findings.iter().map(|f| f.first_seen_us).min().unwrap_or(0);
    let until_us = ctx.now_us + cfg.propose.block_expiry_days * 86_400 * 1_000_000;
    let until = Date::from_days(i64::try_from(until_us / 86_400_000_000).unwrap_or(0));
    let confidence = findings.iter().map(|f| f.confidence).fold(0.0, f64::max);
    let mut out = format!(
        "    # {ip}: {} (confidence {confidence:.2}); seen {} .. {}\n",
        findings.iter().map(|f| f.detector.name()).collect::<Vec<_>>().join(", "),
        fmt_time(first),
        fmt_time(last),
    );
    for f in findings {
        out.push_str(&format!("    #   {}: {}; {}\n", f.detector.name(), f.threshold, f.counts));
        if !f.also.is_empty() {
            let also: Vec<&str> = f.also.iter().map(|d| d.name()).collect();
            out.push_str(&format!("    #   also matched: {}\n", also.join(", ")));
        }
        for e in &f.examples {
            out.push_str(&format!("    #     e.g. {e}\n"));
        }
    }
    if let Some(note) = ctx.notes.get(&ip) {
        out.push_str(&format!("    #   compared: {note}\n"));
    }
    if let Some((i, r)) = report.ranking.iter().enumerate().find(|(_, r)| r.source == ip) {
        out.push_str(&format!("    #   ml (advisory): {}\n", super::score::explain(r, i, report.ranking.len())));
    }
    out.push_str(&format!("    {ip} expires {until},\n"));
    out
}

/// A rate limit per flooded service: new connections up to twice the
/// busiest second its completed clients needed (at least the configured
/// floor) pass; the rest of the flood is dropped.
fn flood_limits(old_text: &str, report: &Report, cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for f in &report.floods {
        let rate = ((f.benign_rate * 2.0).ceil() as u64).max(cfg.spoofed_flood.min_rate.ceil() as u64);
        let port = f.target.port();
        let evidence = format!(
            "{} half-open from {} sources at {:.1}/s, {} .. {}",
            f.half_open,
            f.sources,
            f.rate,
            fmt_time(f.first_seen_us),
            fmt_time(f.last_seen_us)
        );
        let rule = format!(
            "pass  in proto tcp to port {port} state new limit {rate}/second burst {} label \"learned\"",
            rate * 2
        );
        if old_text.contains(&rule) {
            continue;
        }
        out.push(format!("# tcp {}: {evidence}\n{rule}\nblock in proto tcp to port {port} state new", f.target));
    }
    out
}

fn new_packet(client: IpAddr, server: IpAddr, proto: u8, port: u16, state: &str) -> Packet {
    Packet {
        hook: Hook::Input,
        iif: None,
        oif: None,
        src: client,
        dst: server,
        proto,
        sport: Some(40000),
        dport: Some(port),
        icmp_type: None,
        ct_state: names::ct_state_bit(state).unwrap_or(1),
        mark: 0,
        ct_mark: 0,
        urpf_failed: false,
        dst_local: crate::ir::eval::default_local(Hook::Input, server),
    }
}

fn passes(rs: &Ruleset, p: &Packet) -> bool {
    decide(rs, p, &SetContents::new()).verdict == Action::Pass
}

/// Pass rules for services whose clients the policy does not already let in,
/// one rule per protocol and client networks, ports grouped.
fn pass_rules(rs: &Ruleset, services: &[Service], cfg: &Config) -> Vec<String> {
    let mut groups: BTreeMap<(u8, Vec<IpNet>, bool), BTreeSet<u16>> = BTreeMap::new();
    for s in services {
        let missing: BTreeSet<IpAddr> = s
            .clients
            .iter()
            .copied()
            .filter(|c| s.servers.iter().any(|srv| !passes(rs, &new_packet(*c, *srv, s.proto, s.port, "new"))))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let nets = if cfg.propose.any_source {
            Vec::new()
        } else {
            Service { clients: missing.clone(), ..s.clone() }.client_nets(&cfg.propose)
        };
        // Without an "established" rule, a `state new` rule would pass only the first packet.
        let c = *missing.first().expect("not empty");
        let srv = *s.servers.first().expect("a service has a server");
        let needs_all_states = !passes(rs, &new_packet(c, srv, s.proto, s.port, "established"));
        groups.entry((s.proto, nets, needs_all_states)).or_default().insert(s.port);
    }
    groups
        .into_iter()
        .map(|((proto, nets, all_states), ports)| {
            let from = match nets.len() {
                0 => String::new(),
                1 => format!(" from {}", nets[0]),
                _ => format!(" from {{ {} }}", nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
            };
            let ports = list(ports.iter().map(|p| p.to_string()).collect());
            let state = if all_states { "" } else { " state new" };
            format!("pass in proto {}{from} to port {ports}{state} label \"learned\"", names::proto_name(proto))
        })
        .collect()
}

fn list(items: Vec<String>) -> String {
    if items.len() == 1 {
        items.into_iter().next().expect("one")
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// With the exact evaluator: flagged sources are now dropped and the learned
/// services pass. Anything else is a warning for the reviewer.
fn check(after: &Ruleset, report: &Report, blocked: &[IpAddr], cfg: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for f in report.findings.iter().filter(|f| blocked.contains(&f.source)) {
        let target = if f.source.is_ipv4() { "192.0.2.1" } else { "2001:db8::1" };
        let p = new_packet(f.source, target.parse().expect("literal"), names::TCP, 22, "new");
        if passes(after, &p) {
            warnings
                .push(format!("{} is in set {} but an earlier rule still passes it", f.source, cfg.propose.block_set));
        }
    }
    for s in &report.services {
        for c in s.clients.iter().filter(|c| !report.flagged().contains(c)) {
            let srv = *s.servers.first().expect("a service has a server");
            if !passes(after, &new_packet(*c, srv, s.proto, s.port, "new")) {
                warnings.push(format!(
                    "{} {} -> {srv}:{} still does not pass: an earlier rule decides it",
                    names::proto_name(s.proto),
                    c,
                    s.port
                ));
            }
        }
    }
    warnings.sort();
    warnings.dedup();
    warnings
}
