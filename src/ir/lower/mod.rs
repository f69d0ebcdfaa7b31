//! AST -> IR: resolves defines and sets, checks meaning, and expands each
//! policy rule into one IR rule per protocol and address family.
//!
//! The [`Lowerer`] walks the statements here; its other jobs live beside it:
//! declarations ([`decls`]), value resolution ([`values`]), filter rules
//! ([`rules`]) and NAT ([`nat`]).

mod decls;
mod flowtables;
mod marks;
mod nat;
mod rules;
mod values;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::expiry::{self, Date, Expiry};
use super::names::{self, ICMP, ICMPV6};
use super::ranges::{self, Ranges};
use super::*;
use crate::diag::{Diag, SourceMap, Span};
use crate::policy::ast::{
    self, Direction, HostSpec, IfaceSpec, Item, MarkSource, NatKind, RuleOpt, SetBody, Spanned, Stmt, Value,
};
use crate::policy::Policy;

const DEFAULT_TABLE: &str = "phantomc";
/// nft's limits (IFNAMSIZ - 1, NFT_USERDATA_MAXLEN, log prefix).
const MAX_IFNAME: usize = 15;
const MAX_COMMENT: usize = 128;
const MAX_LOG_PREFIX: usize = 127;
/// nft states an element's timeout in 32 bits of seconds (about 136 years).
const MAX_ENTRY_TIMEOUT: u64 = u32::MAX as u64;

/// Gives meaning to a parsed policy.
pub fn lower(policy: &Policy) -> Result<(Ruleset, Vec<Unused>), Vec<Diag>> {
    lower_at(policy, expiry::Clock::system())
}

/// [`lower`] with expiry judged at `clock`.
pub fn lower_at(policy: &Policy, clock: expiry::Clock) -> Result<(Ruleset, Vec<Unused>), Vec<Diag>> {
    let mut l = Lowerer::new(&policy.sources, clock);
    l.declare(&policy.stmts);
    for (idx, stmt) in policy.stmts.iter().enumerate() {
        if l.elements_left.is_none() {
            break; // over the element budget: the rest would only repeat it
        }
        l.stmt(idx, stmt);
    }
    l.finish()
}

/// A value item after macro expansion, remembering the `$macro` it came through.
#[derive(Clone, Debug)]
struct Resolved {
    item: Item,
    span: Span,
    via: Option<Span>,
    /// Seconds the entry stays in a named set once loaded; `None` forever.
    timeout: Option<EntryTimeout>,
}

/// How long a list entry stays in the kernel: as written (`timeout 1h`), or
/// until the end of its `expires` day.
#[derive(Clone, Copy, Debug)]
struct EntryTimeout {
    seconds: u64,
    /// Where `timeout` was written; `None` for the time left to an `expires` date.
    written: Option<Span>,
}

impl EntryTimeout {
    /// The shorter of two timeouts of one entry.
    fn min(self, other: Option<EntryTimeout>) -> EntryTimeout {
        match other {
            Some(o) => EntryTimeout { seconds: self.seconds.min(o.seconds), written: self.written.or(o.written) },
            None => self,
        }
    }
}

impl Resolved {
    fn diag(&self, code: &'static str, message: impl Into<String>, label: impl Into<String>) -> Diag {
        let d = Diag::error(code, self.span, message, label);
        match self.via {
            Some(via) if via != self.span => d.with_related(via, "used here"),
            _ => d,
        }
    }
}

struct SetInfo {
    span: Span,
    /// Families the set can hold elements of.
    families: Vec<Family>,
}

/// An address clause after resolution, before splitting by family.
#[derive(Clone, Debug)]
enum AddrSpec {
    Any,
    Nets { negated: bool, nets: Vec<(IpNet, Span)> },
    Set { negated: bool, name: String },
}

#[derive(Clone, Debug)]
struct PortItem {
    proto: Option<u8>,
    lo: u16,
    hi: u16,
    span: Span,
    /// From a service name (`port domain`): one item per protocol it is
    /// served on; a `proto` clause picks among them.
    named: bool,
}

#[derive(Default)]
struct Clauses<'a> {
    iif: Option<(Ifaces, Span)>,
    oif: Option<(Ifaces, Span)>,
    family: Option<(Family, Span)>,
    proto: Option<&'a Value>,
    from: Option<(&'a HostSpec, Span)>,
    to: Option<(&'a HostSpec, Span)>,
    icmp: Option<&'a Value>,
    state: Option<&'a Value>,
    limit: Option<(&'a ast::LimitSpec, Span)>,
    quota: Option<(u64, Span)>,
    log: Option<(&'a ast::LogSpec, Span)>,
    counter: Option<bool>,
    label: Option<(&'a str, Span)>,
    expires: Option<Date>,
    /// `with KIND CODE`: the kind (`icmp`, `icmpv6`, `icmpx`, `tcp reset`) and code.
    reject_with: Option<(&'a str, Option<&'a str>, Span)>,
    early: Option<Span>,
    notrack: Option<Span>,
    /// `mark N` and `ct mark N`, checked to fit 32 bits.
    mark: Option<(u32, Span)>,
    ct_mark: Option<(u32, Span)>,
    /// `set mark ...` and `set ct mark ...`, in the order written.
    sets: Vec<(SetMark, Span)>,
    counter_name: Option<(&'a str, Span)>,
    /// `offload [NAME]`.
    offload: Option<(Option<&'a str>, Span)>,
    /// `from urpf-failed`.
    urpf: Option<Span>,
}

struct Lowerer<'a> {
    sources: &'a SourceMap,
    diags: Vec<Diag>,
    defines: HashMap<String, (Span, Vec<Resolved>)>,
    /// Every define name with its span, to tell "defined later" from "unknown".
    all_defines: HashMap<String, Span>,
    sets: BTreeMap<String, SetInfo>,
    used: BTreeSet<String>,
    table: Option<Spanned<String>>,
    policies: BTreeMap<Hook, (DefaultPolicy, Span)>,
    out: Ruleset,
    meters: usize,
    /// `offload` clauses (flowtable named or not), resolved once every
    /// flowtable is declared.
    offloads: Vec<(Option<String>, Span)>,
    /// Where the adaptive block names its set (for messages).
    adaptive_set_span: Span,
    /// Rules and entries dated before this day are left out.
    today: Date,
    /// Seconds since the epoch: `expires` entries of named sets time out at the end of their day.
    now: u64,
    /// Index of the statement being lowered (for the origins of expiring entries).
    stmt: usize,
    /// Set and list elements that may still be produced by expanding defines;
    /// `None` once the budget is spent (and reported).
    elements_left: Option<u64>,
}

impl<'a> Lowerer<'a> {
    fn new(sources: &'a SourceMap, clock: expiry::Clock) -> Self {
        Lowerer {
            sources,
            diags: Vec::new(),
            defines: HashMap::new(),
            all_defines: HashMap::new(),
            sets: BTreeMap::new(),
            used: BTreeSet::new(),
            table: None,
            policies: BTreeMap::new(),
            out: Ruleset {
                table: DEFAULT_TABLE.into(),
                sets: Vec::new(),
                chains: Hook::ALL
                    .iter()
                    .map(|&hook| Chain { hook, policy: builtin_policy(hook), rules: Vec::new(), priority: 0 })
                    .collect(),
                nat: Vec::new(),
                marks: Vec::new(),
                flowtables: Vec::new(),
                feeds: Vec::new(),
                allow_always: Vec::new(),
                tests: Vec::new(),
                adaptive: None,
                expiries: Vec::new(),
            },
            meters: 0,
            offloads: Vec::new(),
            adaptive_set_span: Span::default(),
            today: clock.today,
            now: clock.now,
            stmt: 0,
            elements_left: Some(crate::policy::max_elements()),
        }
    }

    fn origin(&self, span: Span, stmt: usize) -> Origin {
        Origin { id: self.sources.origin(span), span, stmt }
    }

    fn stmt(&mut self, idx: usize, stmt: &Stmt) {
        self.stmt = idx;
        match stmt {
            Stmt::Table(name) => self.table_stmt(name),
            Stmt::Define { name, value } => {
                if let Some((prev, _)) = self.defines.get(&name.node) {
                    let d = Diag::error(
                        "duplicate-define",
                        name.span,
                        format!("`{}` is defined twice", name.node),
                        "defined again here",
                    )
                    .with_related(*prev, "first defined here")
                    .with_help("each define name can be used once; rename one of them");
                    self.diags.push(d);
                    return;
                }
                let items = self.expand_entries(value);
                self.defines.insert(name.node.clone(), (name.span, items));
            }
            Stmt::Include { .. } => {} // resolved by the loader
            Stmt::Policy { hook, action, log, counter, priority, span } => {
                if let Some((_, prev)) = self.policies.get(&hook.node) {
                    let d = Diag::error(
                        "duplicate-policy",
                        *span,
                        format!("the {} policy is set twice", hook.node.name()),
                        "set again here",
                    )
                    .with_related(*prev, "first set here");
                    self.diags.push(d);
                    return;
                }
                let origin = self.origin(*span, idx);
                let log = log.as_ref().map(|spec| {
                    let verb = if action.node == Action::Pass { "accept" } else { "drop" };
                    let prefix =
                        format!("{} policy-{} {}", origin.id, hook.node.name(), log_tail(verb, spec.text.as_deref()));
                    self.log(prefix, spec, *span)
                });
                let policy = DefaultPolicy { action: action.node, log, counter: *counter, origin: Some(origin) };
                self.policies.insert(hook.node, (policy, *span));
                if let Some(p) = priority {
                    self.chain_priority(hook.node, p);
                }
            }
            Stmt::Set { name, body, span } => self.set_stmt(idx, name, body, *span),
            Stmt::Feed { name, opts, span } => self.feed_stmt(idx, name, opts, *span),
            Stmt::Adaptive { opts, span } => self.adaptive_stmt(idx, opts, *span),
            Stmt::AllowAlways { value, .. } => self.allow_always(value),
            Stmt::Flowtable { name, devices, span } => self.flowtable(idx, name, devices, *span),
            Stmt::Rule(r) => self.rule(idx, r),
            Stmt::Nat(n) => self.nat(idx, n),
            Stmt::Match(m) => self.match_rule(idx, m),
            Stmt::Test { name, expects, .. } => {
                for e in expects {
                    self.out.tests.push(TestCase {
                        name: name.node.clone(),
                        expect: e.action.node,
                        packet: e.packet.node.clone(),
                        span: e.packet.span,
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Result<(Ruleset, Vec<Unused>), Vec<Diag>> {
        self.check_adaptive_set();
        self.check_early_marks();
        self.check_early_passes();
        self.resolve_offloads();
        for ch in &mut self.out.chains {
            if let Some((p, _)) = self.policies.remove(&ch.hook) {
                ch.policy = p;
            }
        }
        if !self.diags.is_empty() {
            self.diags.sort_by_key(|d| d.span);
            return Err(self.diags);
        }
        let mut unused: Vec<Unused> = self
            .defines
            .iter()
            .filter(|(name, _)| !self.used.contains(&format!("${name}")))
            .map(|(name, (span, _))| Unused { kind: "define", name: name.clone(), span: *span })
            .chain(
                self.sets
                    .iter()
                    .filter(|(name, _)| !self.used.contains(&format!("<{name}>")))
                    .map(|(name, info)| Unused { kind: "set", name: name.clone(), span: info.span }),
            )
            .collect();
        unused.sort_by_key(|u| u.span);
        Ok((self.out, unused))
    }
}

/// Input and forward drop by default, output passes: the usual server stance.
/// Counted like every rule, so `hits` shows what the default decided.
fn builtin_policy(hook: Hook) -> DefaultPolicy {
    let action = if hook == Hook::Output { Action::Pass } else { Action::Block };
    DefaultPolicy { action, log: None, counter: true, origin: None }
}

fn log_tail(verb: &str, custom: Option<&str>) -> String {
    match custom {
        Some(text) => format!("{verb} {text} "),
        None => format!("{verb} "),
    }
}

pub fn nft_set_name(name: &str, family: Family) -> String {
    format!("{name}_{}", family_suffix(family))
}

fn family_suffix(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

#[cfg(test)]
mod tests {
    use super::values::merge_ranges;
    use crate::ir::{compile, AddrMatch, SetKind};

    #[test]
    fn a_set_whose_entries_all_expired_is_kept_empty() {
        let c = compile("t.pf", "set old = { 192.0.2.1 expires 2020-01-01 }\nblock in from <old>\n").expect("compiles");
        let kinds: Vec<_> = c.ruleset.sets.iter().map(|s| (s.nft_name.as_str(), &s.kind)).collect();
        let empty = SetKind::Static { elements: vec![], timed: vec![] };
        assert_eq!(kinds, vec![("old_v4", &empty), ("old_v6", &empty)]);
        assert_eq!(c.ruleset.chains[0].rules.len(), 2, "the rule stays, matching nothing");
    }

    #[test]
    fn timed_entries_are_disjoint_and_an_address_stays_as_long_as_its_longest_entry() {
        let text = "set t = { 10.0.0.0/24 timeout 1h, 10.0.0.0/25 timeout 1d, 10.0.0.64/26, \
                    10.1.0.0/16 timeout 10m, !10.1.128.0/17, 192.0.2.1 expires 2099-12-31 timeout 2h }\n\
                    block in from <t>\n";
        let c = compile("t.pf", text).expect("compiles");
        let Some(SetKind::Static { elements, timed }) = c.ruleset.set("t_v4").map(|s| &s.kind) else { panic!() };
        assert_eq!(elements.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.64/26"]);
        let timed: Vec<_> = timed.iter().map(|t| (t.net.to_string(), t.timeout)).collect();
        let want = [
            ("10.0.0.0/26", 86_400),
            ("10.0.0.128/25", 3600),
            ("10.1.0.0/17", 600),
            // The shorter of its timeout and the time left to its date.
            ("192.0.2.1/32", 7200),
        ];
        assert_eq!(timed, want.map(|(n, t)| (n.to_string(), t)));
        assert_eq!(c.ruleset.set("t_v4").and_then(|s| s.kind.loaded()).map(|l| l.len()), Some(3));
    }

    #[test]
    fn a_timeout_outside_a_named_set_is_an_error() {
        for text in [
            "block in from { 192.0.2.1 timeout 1h }\n",
            "define tmp = { 192.0.2.1 timeout 1h }\nblock in from $tmp\n",
            "set t = { 10.0.0.0/8, !10.1.0.0/16 timeout 1h }\nblock in from <t>\n",
            "set t = { 10.0.0.0/8 timeout 0s }\nblock in from <t>\n",
        ] {
            let err = compile("t.pf", text).expect_err(text);
            assert!(err.diags.iter().any(|d| d.code == "entry-timeout"), "{text}: {:?}", err.diags);
        }
        // A dated entry in a rule's list is only left out when it expires, as before.
        compile("t.pf", "block in from { 192.0.2.1 expires 2099-12-31 }\n").expect("compiles");
    }

    #[test]
    fn exclusions_lower_to_the_exact_difference() {
        let nets = |text: &str| {
            let c = compile("t.pf", text).expect("compiles");
            match &c.ruleset.chains[0].rules[0].matches.src {
                AddrMatch::Nets { negated, nets } => {
                    (*negated, nets.iter().map(ToString::to_string).collect::<Vec<_>>())
                }
                other => panic!("{other:?}"),
            }
        };
        let want = (
            false,
            vec!["10.0.0.0/9".to_string(), "10.128.0.0/10".into(), "10.192.0.0/11".into(), "10.224.0.0/12".into()],
        );
        assert_eq!(nets("pass in from { 10.0.0.0/8, !10.240.0.0/12 }\n"), want);
        assert_eq!(nets("pass in from 10.0.0.0/8 except 10.240.0.0/12\n"), want);
        assert_eq!(nets("define x = { 10.0.0.0/8, !10.240.0.0/12 }\npass in from $x\n"), want);
        // `any except X` is `! X`; `! A except B` negates the difference.
        assert_eq!(nets("pass in from any except 10.0.0.0/8\n"), (true, vec!["10.0.0.0/8".into()]));
        assert!(nets("pass in from ! 10.0.0.0/8 except 10.240.0.0/12\n").0);
    }

    #[test]
    fn rules_and_default_policies_count_unless_nocounter() {
        let c = crate::ir::compile(
            "c.pf",
            "policy input block nocounter\npass in proto tcp\npass in proto udp nocounter\n",
        )
        .expect("compiles");
        let input = c.ruleset.chain(crate::ir::Hook::Input);
        assert_eq!(input.rules.iter().map(|r| r.counter).collect::<Vec<_>>(), [true, false]);
        assert!(!input.policy.counter);
        assert!(c.ruleset.chain(crate::ir::Hook::Output).policy.counter, "built-in defaults count");
        let err = crate::ir::compile("c.pf", "pass in proto tcp counter nocounter\n").expect_err("contradiction");
        assert_eq!(err.diags[0].code, "duplicate-clause");
        assert!(err.diags[0].message.contains("`counter`/`nocounter`"), "{}", err.diags[0].message);
    }

    #[test]
    fn service_names_are_their_ports_on_their_protocols() {
        let matches = |text: &str| {
            let c = compile("s.pf", text).expect("compiles");
            c.ruleset.chains[0].rules.iter().map(|r| (r.matches.proto, r.matches.dport.clone())).collect::<Vec<_>>()
        };
        assert_eq!(
            matches("pass in to port { ssh, domain, https }\n"),
            matches("pass in to port { tcp 22, tcp 53, udp 53, tcp 443, udp 443 }\n")
        );
        // `proto` picks among a name's protocols.
        assert_eq!(matches("pass in proto udp to port domain\n"), matches("pass in proto udp to port 53\n"));
        let codes =
            |text: &str| compile("s.pf", text).expect_err("refused").diags.iter().map(|d| d.code).collect::<Vec<_>>();
        assert_eq!(codes("pass in to port sshh\n"), ["unknown-service"]);
        assert_eq!(codes("pass in proto udp to port ssh\n"), ["proto-conflict"]);
        assert_eq!(codes("pass in proto sctp to port domain\n"), ["proto-conflict"], "one error per name");
    }

    #[test]
    fn merges_adjacent_and_overlapping_port_ranges() {
        assert_eq!(merge_ranges(vec![(80, 80), (81, 90), (443, 443), (85, 100)]), vec![(80, 100), (443, 443)]);
        assert_eq!(merge_ranges(vec![(65535, 65535), (0, 0)]), vec![(0, 0), (65535, 65535)]);
    }
}

#[cfg(test)]
mod adaptive_tests {
    use super::*;

    const BASE: &str = "set attackers dynamic\nblock in from <attackers>\npass in proto tcp to port 22\n";

    #[test]
    fn adaptive_block_with_defaults_and_options() {
        let c = compile("p.pf", &format!("{BASE}adaptive {{ set attackers; }}\n")).expect("compiles");
        let a = c.ruleset.adaptive.expect("adaptive");
        assert_eq!(
            (a.mode, a.set.as_str(), a.timeout, a.max_timeout),
            (AdaptiveMode::Observe, "attackers", 600, 86_400)
        );
        assert_eq!((a.max_blocks, a.window, a.min_confidence, a.thresholds), (10, 600, 50, None));
        assert_eq!(a.origin.id, "p.pf:4");
        let text = format!(
            "{BASE}adaptive {{\n mode block; set attackers; thresholds \"t.yaml\"; timeout 1m; max-timeout 1h;\n max-blocks 3; window 2m; min-confidence 80;\n}}\n"
        );
        let a = compile("p.pf", &text).expect("compiles").ruleset.adaptive.expect("adaptive");
        assert_eq!((a.mode, a.timeout, a.max_timeout, a.max_blocks), (AdaptiveMode::Block, 60, 3600, 3));
        assert_eq!((a.window, a.min_confidence, a.thresholds.as_deref()), (120, 80, Some("t.yaml")));
        // Without the block, nothing adaptive.
        assert!(compile("p.pf", BASE).expect("compiles").ruleset.adaptive.is_none());
    }

    #[test]
    fn adaptive_needs_a_dynamic_set_that_a_rule_blocks() {
        let codes =
            |text: &str| compile("p.pf", text).err().map(|e| e.diags.iter().map(|d| d.code).collect::<Vec<_>>());
        assert_eq!(codes("adaptive { mode block; }\npass in on lo\n"), Some(vec!["adaptive-set"]));
        assert_eq!(codes("set a = { 10.0.0.1 }\nblock in from <a>\nadaptive { set a; }\n"), Some(vec!["adaptive-set"]));
        assert_eq!(
            codes(&format!("{BASE}adaptive {{ set attackers; }}\nadaptive {{ }}\n")),
            Some(vec!["duplicate-adaptive"])
        );
        assert_eq!(codes(&format!("{BASE}adaptive {{ window 0s; }}\n")), Some(vec!["adaptive-set", "adaptive-option"]));
    }
}
