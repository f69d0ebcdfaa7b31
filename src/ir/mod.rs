//! The normalized rule model: the one meaning of a policy that the compiler,
//! the analyzer and the learner all share.
//!
//! Every IR rule is a conjunction of independent header matches (a cube in
//! header space) plus a verdict. A policy rule whose clauses mix protocols
//! or address families becomes several IR rules with the same [`Origin`], so
//! each IR rule maps to exactly one nft rule and has one family and protocol.

pub mod eval;
pub mod expiry;
pub mod feed_layout;
pub mod feed_options;
mod lower;
pub mod names;
pub mod optimize;
pub mod providers;
pub mod ranges;

use std::path::Path;

use ipnet::IpNet;
use serde::Serialize;

use crate::diag::{SourceMap, Span};
pub use crate::policy::ast::{Action, Family, Hook, TimeUnit};
use crate::policy::{self, LoadError, Policy, PolicyError};
pub use lower::{lower, lower_at, nft_set_name};

/// A compiled policy: its sources (for messages) and its IR.
#[derive(Debug)]
pub struct Compiled {
    pub sources: SourceMap,
    pub ruleset: Ruleset,
    /// Defines and sets that no rule used (for `lint`).
    pub unused: Vec<Unused>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unused {
    pub kind: &'static str,
    pub name: String,
    pub span: Span,
}

/// Reads, parses and lowers a policy file.
pub fn compile_file(path: &Path) -> Result<Compiled, LoadError> {
    let policy = policy::load(path)?;
    Ok(finish(policy)?)
}

/// Parses and lowers policy text (tests, fuzzing, `explain` on stdin).
pub fn compile(name: &str, text: &str) -> Result<Compiled, PolicyError> {
    let policy = policy::load_str(name, Path::new(name), text.to_string())?;
    finish(policy)
}

/// Lowers new text for the policy at `path` (its includes resolve from
/// there): a rewrite checked before it is written.
pub fn compile_text_at(path: &Path, text: String) -> Result<Compiled, PolicyError> {
    finish(policy::load_str(&path.display().to_string(), path, text)?)
}

/// Parses and lowers policy text with expiry judged at `clock` (a learned
/// proposal checked as of when `learn` ran).
pub fn compile_at(name: &str, text: &str, clock: expiry::Clock) -> Result<Compiled, PolicyError> {
    let policy = policy::load_str(name, Path::new(name), text.to_string())?;
    finish_at(policy, clock)
}

fn finish(policy: Policy) -> Result<Compiled, PolicyError> {
    finish_at(policy, expiry::Clock::system())
}

fn finish_at(policy: Policy, clock: expiry::Clock) -> Result<Compiled, PolicyError> {
    match lower_at(&policy, clock) {
        Ok((ruleset, unused)) => Ok(Compiled { sources: policy.sources, ruleset, unused }),
        Err(diags) => Err(PolicyError { sources: policy.sources, diags }),
    }
}

/// Where an IR rule came from in the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// `file:line`, shown in nft comments, log prefixes and reports.
    pub id: String,
    #[serde(skip)]
    pub span: Span,
    /// Index of the policy statement this came from (shared by its expansions).
    pub stmt: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// The nft table (family inet) that phantomc owns.
    pub table: String,
    pub sets: Vec<SetDef>,
    /// Filter chains in hook order: input, forward, output.
    pub chains: Vec<Chain>,
    pub nat: Vec<NatRule>,
    /// `match ... set mark N`, in order: they run before the filter chains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<MarkRule>,
    /// `flowtable NAME { devices ... }`: fast paths `offload` rules fill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flowtables: Vec<Flowtable>,
    pub feeds: Vec<FeedDef>,
    /// `allow-always` networks, aggregated: never blocked by a feed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_always: Vec<IpNet>,
    pub tests: Vec<TestCase>,
    /// `adaptive { ... }`: what `watch` does with what its detectors find.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Adaptive>,
    /// Rules and entries with an `expires` date, the expired ones left out above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expiries: Vec<expiry::Expiry>,
}

impl Ruleset {
    pub fn chain(&self, hook: Hook) -> &Chain {
        self.chains.iter().find(|c| c.hook == hook).expect("every hook has a chain")
    }

    pub fn set(&self, nft_name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.nft_name == nft_name)
    }

    /// Why a run-time block must not go into the policy set `name`: the policy
    /// fixes its entries (static or feed; a static set with `timeout` entries
    /// looks like a dynamic one in the kernel), so the next reload would undo it.
    pub fn refuse_runtime_entries(&self, name: &str) -> Option<String> {
        let def = self.sets.iter().find(|s| s.name == name)?;
        let kind = match def.kind {
            SetKind::Dynamic { .. } => return None,
            SetKind::Static { .. } => "its entries are written in the policy",
            SetKind::Feed { .. } => "it is filled by a feed",
        };
        Some(format!(
            "set `{name}` is not a run-time set: {kind}, so the next reload would undo the change; \
             block into a `set NAME dynamic` instead"
        ))
    }

    /// The NFLOG groups (`log group N`) of the rules and default policies
    /// `wanted` picks by hook and action, sorted and once each.
    pub fn nflog_groups(&self, wanted: impl Fn(Hook, Action) -> bool) -> Vec<u16> {
        let mut groups = std::collections::BTreeSet::new();
        for ch in &self.chains {
            let rules = ch.rules.iter().map(|r| (r.action, r.log.as_ref()));
            for (action, log) in rules.chain(std::iter::once((ch.policy.action, ch.policy.log.as_ref()))) {
                if wanted(ch.hook, action) {
                    groups.extend(log.and_then(|l| l.group));
                }
            }
        }
        groups.into_iter().collect()
    }

    /// No input rule and an input default that does not pass: nothing
    /// reaches this host, loopback included (a blank or comment-only policy).
    pub fn passes_nothing(&self) -> bool {
        let input = self.chain(Hook::Input);
        input.rules.iter().all(Rule::exempts) && input.policy.action != Action::Pass
    }
}

/// One nft set: a policy set is split into an IPv4 and an IPv6 half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetDef {
    /// Name in the policy (`admins`).
    pub name: String,
    /// Name in nft (`admins_v4`).
    pub nft_name: String,
    pub family: Family,
    pub kind: SetKind,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SetKind {
    /// Elements fixed by the policy (aggregated, no overlaps); `timed` are
    /// the ones the kernel removes after a while (`timeout`, or `expires` in
    /// a named set), disjoint from `elements` and from each other.
    Static {
        elements: Vec<IpNet>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        timed: Vec<TimedNet>,
    },
    /// Filled at run time by `phantomc block`; kept across reloads.
    Dynamic { timeout: Option<u64> },
    /// Filled from a threat feed.
    Feed { feed: String },
}

/// A set element that times out: seconds after the set is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TimedNet {
    pub net: IpNet,
    pub timeout: u64,
}

impl SetKind {
    /// A static set's networks as loaded, timed ones included (the analyzer
    /// sees a set as it is right after a load, before anything timed out).
    pub fn loaded(&self) -> Option<Vec<IpNet>> {
        match self {
            SetKind::Static { elements, timed } if timed.is_empty() => Some(elements.clone()),
            SetKind::Static { elements, timed } => {
                Some(IpNet::aggregate(&elements.iter().copied().chain(timed.iter().map(|t| t.net)).collect()))
            }
            _ => None,
        }
    }

    /// A static set some of whose elements time out.
    pub fn has_timeouts(&self) -> bool {
        matches!(self, SetKind::Static { timed, .. } if !timed.is_empty())
    }
}

/// A threat feed declaration (loaded by the `feeds` module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedDef {
    pub name: String,
    pub options: feed_options::FeedOptions,
    pub origin: Origin,
}

/// Continuous learning in `watch` (see docs/guide/adaptive.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Adaptive {
    pub mode: AdaptiveMode,
    /// The policy's dynamic set that receives blocked sources.
    pub set: String,
    /// Detector thresholds (YAML, as `learn --config`), as written: a
    /// relative path is relative to the policy file.
    pub thresholds: Option<String>,
    /// Seconds a first block lasts; each repeat doubles it up to `max_timeout`.
    pub timeout: u64,
    pub max_timeout: u64,
    /// At most this many new blocks per minute; findings beyond are reported only.
    pub max_blocks: u64,
    /// Seconds of flows the detectors look at.
    pub window: u64,
    /// A finding blocks only at this confidence (percent) or above; a
    /// detector's finding just at its threshold has 50.
    pub min_confidence: u8,
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdaptiveMode {
    /// Findings are reported, nothing is blocked.
    Observe,
    Block,
}

impl AdaptiveMode {
    pub fn name(self) -> &'static str {
        match self {
            AdaptiveMode::Observe => "observe",
            AdaptiveMode::Block => "block",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestCase {
    pub name: String,
    pub expect: Action,
    /// Packet in the `explain` notation.
    pub packet: String,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub hook: Hook,
    pub policy: DefaultPolicy,
    pub rules: Vec<Rule>,
    /// nft priority of the hook chain (0 is `filter`); orders phantomc's
    /// chain against other tables' chains on the same hook, not its own rules.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What happens to a packet no rule decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DefaultPolicy {
    pub action: Action,
    pub log: Option<Log>,
    pub counter: bool,
    /// `None` when the policy relied on the built-in default.
    pub origin: Option<Origin>,
}

impl DefaultPolicy {
    /// The id its nft rule and counters go by: the policy line's
    /// `file:line`, or `default:HOOK` for a built-in default.
    pub fn id(&self, hook: Hook) -> String {
        self.origin.as_ref().map_or_else(|| format!("default:{}", hook.name()), |o| o.id.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub origin: Origin,
    pub matches: Match,
    pub action: Action,
    pub limit: Option<Limit>,
    /// `quota`: bytes the rule matches in all; after them packets fall through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    pub log: Option<Log>,
    pub counter: bool,
    pub label: Option<String>,
    /// How a reject answers; `None` is nft's default (a TCP reset for TCP-only
    /// rules, else ICMP port unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectWith>,
    /// `early`: runs in the prerouting chain before conntrack and routing, so
    /// the same rule sits first in both the input and the forward chain here
    /// (the order the analyzer sees packets meet it); nft gets it once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub early: bool,
    /// `notrack` (an early `in` or `out` pass): the early chain keeps the
    /// packet from conntrack (arriving ones only when addressed to this
    /// host) and nft passes it again at this rule's place in the input or
    /// output chain, so it is decided here like any other pass.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub notrack: bool,
    /// `set mark ...` / `set ct mark ...` on a pass, in the order written:
    /// the packet leaves with this mark (for routing, tc or other tables;
    /// phantomc's own chains have decided by then), its connection keeps the
    /// ct mark for its later packets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_marks: Vec<SetMark>,
    /// `offload` on a forward pass: the flowtable its established
    /// connections go to; their later packets (both directions) then bypass
    /// the forward chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offload: Option<String>,
    /// `counter "name"`: the rule counts into this named counter (shared by
    /// every rule that names it) instead of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_name: Option<String>,
    /// Set by [`optimize`]: the adjacent rules this one stands for; nft
    /// looks the merged field up in a named set with a counter per element.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<optimize::Merged>,
}

/// `reject with ...`: the answer a reject sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "code")]
pub enum RejectWith {
    /// ICMP (IPv4 only) with this code name.
    Icmp(&'static str),
    /// ICMPv6 (IPv6 only).
    Icmpv6(&'static str),
    /// nft's family-independent ICMP code, sent as ICMP or ICMPv6.
    Icmpx(&'static str),
    #[serde(rename = "tcp reset")]
    TcpReset,
}

impl std::fmt::Display for RejectWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectWith::Icmp(c) => write!(f, "icmp {c}"),
            RejectWith::Icmpv6(c) => write!(f, "icmpv6 {c}"),
            RejectWith::Icmpx(c) => write!(f, "icmpx {c}"),
            RejectWith::TcpReset => f.write_str("tcp reset"),
        }
    }
}

impl Rule {
    /// The nft comment: the origin, then the label if any.
    pub fn comment(&self) -> String {
        match &self.label {
            Some(l) => format!("{} {l}", self.origin.id),
            None => self.origin.id.clone(),
        }
    }

    /// An early `pass` without `notrack`: like an accept in a raw-priority
    /// chain, it only ends the early chain, so its packets skip the early
    /// rules after it and then meet the filter rules like any other packet.
    pub fn exempts(&self) -> bool {
        self.early && self.action == Action::Pass && !self.notrack
    }
}

/// `log`: where a decided packet is logged, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Log {
    /// Full nft log prefix, `<table> <file:line> <verdict> [text] `: every
    /// line names the rule that logged it.
    pub prefix: String,
    /// Rate of the log lines; packets over it are decided all the same, only not logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// NFLOG group: packets go to userspace (`phantomc log`) instead of the kernel log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub rate: u64,
    pub unit: TimeUnit,
    pub burst: Option<u64>,
    /// Per source address, through an nft meter of this name.
    pub per_source: Option<String>,
}

/// Header matches; a field left at its "any" value does not constrain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Match {
    pub family: Option<Family>,
    pub iif: Option<Ifaces>,
    pub oif: Option<Ifaces>,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub proto: Option<u8>,
    pub src: AddrMatch,
    pub dst: AddrMatch,
    pub sport: Option<PortMatch>,
    pub dport: Option<PortMatch>,
    /// ICMP or ICMPv6 type numbers (per `proto`).
    pub icmp_types: Option<Vec<u8>>,
    pub ct_state: Option<CtStates>,
    /// `mark N`: the packet mark (nft `meta mark`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// `ct mark N`: the connection's mark (nft `ct mark`); a packet without
    /// a connection (invalid, untracked) never matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct_mark: Option<u32>,
    /// `from urpf-failed`: the source fails the reverse-path check (nft
    /// `fib saddr . mark . iif oif missing`: no route back to it leaves by
    /// the interface it arrived on). Offline it is a property of the packet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub urpf_failed: bool,
    /// `to self` (`Some(true)`) or `to !self` (`Some(false)`): the destination
    /// is one of this host's addresses (nft `fib daddr type local`). Offline
    /// it is a property of the packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_local: Option<bool>,
}

/// `flowtable NAME { devices ... }`: an nft flowtable on the ingress hook of
/// these devices; connections an `offload` rule adds skip the forward chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flowtable {
    pub origin: Origin,
    pub name: String,
    /// Sorted, deduplicated interface names (no wildcards).
    pub devices: Vec<String>,
}

/// One `set mark ...` or `set ct mark ...` of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetMark {
    /// `set mark N` (nft `meta mark set N`).
    Mark(u32),
    /// `set ct mark N` (nft `ct mark set N`): later packets of the
    /// connection arrive with it.
    CtMark(u32),
    /// `set mark from ct mark` (nft `meta mark set ct mark`): restores the
    /// connection's mark on the packet. Without a connection nft stops the
    /// rule here.
    MarkFromCtMark,
    /// `set ct mark from mark` (nft `ct mark set meta mark`): saves the
    /// packet mark on its connection.
    CtMarkFromMark,
}

impl SetMark {
    /// Whether it reads or writes the connection mark (needs conntrack).
    pub fn uses_ct(self) -> bool {
        !matches!(self, SetMark::Mark(_))
    }

    /// Applies it to a packet's (mark, ct mark); `tracked`: the packet has
    /// a connection. `false` when nft stops the rule here (no ct mark to read).
    pub fn apply(self, mark: &mut u32, ct_mark: &mut u32, tracked: bool) -> bool {
        match self {
            SetMark::Mark(k) => *mark = k,
            SetMark::CtMark(k) if tracked => *ct_mark = k,
            SetMark::MarkFromCtMark if tracked => *mark = *ct_mark,
            SetMark::MarkFromCtMark => return false,
            SetMark::CtMarkFromMark if tracked => *ct_mark = *mark,
            // Setting the mark of no connection does nothing.
            SetMark::CtMark(_) | SetMark::CtMarkFromMark => {}
        }
        true
    }
}

impl std::fmt::Display for SetMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetMark::Mark(k) => write!(f, "set mark {k}"),
            SetMark::CtMark(k) => write!(f, "set ct mark {k}"),
            SetMark::MarkFromCtMark => f.write_str("set mark from ct mark"),
            SetMark::CtMarkFromMark => f.write_str("set ct mark from mark"),
        }
    }
}

/// `on eth0`, `on { eth0, br-* }` or, negated, `on !docker0`: the interface
/// names a packet's interface is (or is not) one of. `p*` stands for every
/// name that starts with `p`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Ifaces {
    pub negated: bool,
    /// Sorted and deduplicated, never empty.
    pub names: Vec<String>,
}

impl Ifaces {
    pub fn plain(names: Vec<String>) -> Ifaces {
        Ifaces { negated: false, names }
    }

    /// Whether a packet's interface matches. A packet without one (an
    /// output packet's input interface) has the empty name, as in nft: no
    /// plain name matches it, and only `!*` refuses it.
    pub fn matches(&self, name: Option<&str>) -> bool {
        let name = name.unwrap_or("");
        let named = !name.is_empty() || self.negated;
        named && (self.names.iter().any(|p| eval::iface_matches(p, name)) != self.negated)
    }

    /// The names both matches accept, exactly: `docker0` and `!br-*` is
    /// `docker0`; `!docker0` and `!br-*` is `!{ br-*, docker0 }`. `None` when
    /// no name is left, or when the result has no exact form (a plain `br-*`
    /// of which `!br-lan` takes a part).
    pub fn and(&self, other: &Ifaces) -> Option<Ifaces> {
        let sorted = |mut names: Vec<String>| {
            names.sort();
            names.dedup();
            names
        };
        let (plain, negated) = match (self.negated, other.negated) {
            (true, true) => {
                let names = sorted(self.names.iter().chain(&other.names).cloned().collect());
                return Some(Ifaces { negated: true, names });
            }
            (false, false) => {
                let kept: Vec<String> = self
                    .names
                    .iter()
                    .filter(|p| other.names.iter().any(|q| eval::pattern_covers(q, p)))
                    .chain(other.names.iter().filter(|q| self.names.iter().any(|p| eval::pattern_covers(p, q))))
                    .cloned()
                    .collect();
                // Two patterns that share a name are one inside the other: the narrower is the intersection.
                let kept = sorted(kept);
                return (!kept.is_empty()).then(|| Ifaces::plain(kept));
            }
            (false, true) => (self, other),
            (true, false) => (other, self),
        };
        let mut kept = Vec::new();
        for p in &plain.names {
            if negated.names.iter().any(|q| eval::pattern_covers(q, p)) {
                continue;
            }
            if negated.names.iter().any(|q| Ifaces::overlap(p, q)) {
                return None;
            }
            kept.push(p.clone());
        }
        (!kept.is_empty()).then(|| Ifaces::plain(kept))
    }

    /// No name matches both.
    pub fn disjoint(&self, other: &Ifaces) -> bool {
        // Every name `plain` matches is one a pattern of `excluded` covers.
        let all_excluded = |plain: &[String], excluded: &[String]| {
            plain.iter().all(|x| excluded.iter().any(|y| eval::pattern_covers(y, x)))
        };
        match (self.negated, other.negated) {
            (false, false) => !self.names.iter().any(|x| other.names.iter().any(|y| Ifaces::overlap(x, y))),
            (false, true) => all_excluded(&self.names, &other.names),
            (true, false) => all_excluded(&other.names, &self.names),
            // Two negations of finitely many patterns leave names to both.
            (true, true) => false,
        }
    }

    /// Do two patterns share a name? (Two that do are one inside the other.)
    fn overlap(a: &str, b: &str) -> bool {
        eval::pattern_covers(a, b) || eval::pattern_covers(b, a)
    }

    /// A name this match accepts, for a probe packet: the first name (a
    /// pattern's prefix with `0` appended), or for a negation a common name
    /// it does not exclude.
    pub fn example(&self) -> Option<String> {
        if !self.negated {
            return self.names.first().map(|p| pattern_example(p));
        }
        ["eth0", "ens3", "wlan7", "x0"].into_iter().find(|n| self.matches(Some(n))).map(String::from)
    }

    /// The names written, without `!`: `eth0, br-*`.
    pub fn names_text(&self) -> String {
        self.names.join(", ")
    }

    /// `eth0`, `{ eth0, br-* }`, `!docker0`: as written in a policy.
    pub fn to_policy(&self) -> String {
        let list =
            if self.names.len() == 1 { self.names[0].clone() } else { format!("{{ {} }}", self.names.join(", ")) };
        if self.negated {
            format!("!{list}")
        } else {
            list
        }
    }
}

/// A name interface pattern `p` matches: itself, or for `br-*` `br-0`.
pub fn pattern_example(p: &str) -> String {
    match p.strip_suffix('*') {
        Some(prefix) => format!("{prefix}0"),
        None => p.to_string(),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum AddrMatch {
    #[default]
    Any,
    /// Networks of the rule's family, aggregated and sorted.
    Nets { negated: bool, nets: Vec<IpNet> },
    /// A named nft set of the rule's family.
    Set { negated: bool, set: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PortMatch {
    pub negated: bool,
    /// Sorted, merged, inclusive ranges.
    pub ranges: Vec<(u16, u16)>,
}

/// A set of conntrack states as a bit mask (see [`names::CT_STATES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CtStates(pub u8);

impl CtStates {
    pub fn names(self) -> Vec<&'static str> {
        names::CT_STATES.iter().filter(|(_, bit)| self.0 & bit != 0).map(|(n, _)| *n).collect()
    }
}

/// `match in|out ... set [ct] mark ...`: sets the marks of the packets it
/// matches and decides nothing. Runs before every filter chain (at raw
/// priority, or after conntrack when it uses the connection mark), so the
/// filter rules see the marks; the last matching one wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkRule {
    pub origin: Origin,
    /// `Input` for `match in` (prerouting: this host's and forwarded
    /// packets alike), `Output` for `match out`.
    pub hook: Hook,
    pub matches: Match,
    /// In the order written.
    pub sets: Vec<SetMark>,
    pub counter: bool,
}

impl MarkRule {
    /// Whether it runs before the chain of `hook`.
    pub fn runs_before(&self, hook: Hook) -> bool {
        (self.hook == Hook::Output) == (hook == Hook::Output)
    }

    /// Whether it reads or writes the connection mark, so it runs after
    /// conntrack (mangle priority) rather than at raw priority.
    pub fn uses_ct(&self) -> bool {
        self.matches.ct_mark.is_some() || self.sets.iter().any(|s| s.uses_ct())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NatRule {
    pub origin: Origin,
    pub matches: Match,
    pub action: NatAction,
}

impl NatRule {
    /// NAT rules run in the prerouting (dnat) or postrouting (snat) chain.
    pub fn chain_name(&self) -> &'static str {
        match self.action {
            NatAction::Dnat { .. } => "nat_prerouting",
            _ => "nat_postrouting",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum NatAction {
    Masquerade,
    Snat { addr: std::net::IpAddr },
    Dnat { addr: std::net::IpAddr, port: Option<u16> },
}
