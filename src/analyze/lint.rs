//! `lint`: findings about a policy, decided exactly in header space.
//!
//! | code | severity | meaning |
//! |---|---|---|
//! | `never-matches` | error | no packet can match the rule (contradictory clauses) |
//! | `after-catch-all` | error | an earlier rule matches every packet of the chain |
//! | `shadowed` | error | earlier rules with another verdict decide every packet of the rule |
//! | `redundant` | warning | earlier rules with the same verdict decide all its packets, or without it later rules (or the default policy) would give them the same verdict |
//! | `unused-define`, `unused-set` | warning | declared but never used |
//! | `overlapping-entries`, `feed-overlaps-allow` | warning | see [`super::entries`] |
//! | `expired` | warning | a rule or entry is past its `expires` date and was left out |
//! | `expires-soon` | warning | a rule or entry expires within [`Options::expiry_warn_days`] |
//!
//! Rules with a rate limit or a run-time (dynamic or feed) set may not match
//! a packet their header clauses match, so they never shadow anything.

use std::collections::BTreeSet;

use crate::diag::{Diag, SourceMap, Span};
use crate::ir::expiry::{self, Date};
use crate::ir::{Chain, Compiled, Hook, Rule, Ruleset};
use crate::policy::{LoadError, PolicyError};

use super::index::CubeIndex;
use super::space::{condition, subtract_all, Cube, Universe};

/// What lint checks against: today's date and how far ahead expiry is announced.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub today: Date,
    pub expiry_warn_days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options { today: expiry::today(), expiry_warn_days: expiry::DEFAULT_WARN_DAYS }
    }
}

/// Lints a policy file: its rules (on the IR) and its address lists (on the syntax tree).
pub fn lint_file(path: &std::path::Path, opts: &Options) -> Result<(Compiled, Vec<Diag>), LoadError> {
    lint_policy(crate::policy::load(path)?, opts)
}

/// Lints policy text that would live at `path` (its includes resolve from there).
pub fn lint_text_at(path: &std::path::Path, text: String, opts: &Options) -> Result<(Compiled, Vec<Diag>), LoadError> {
    lint_policy(crate::policy::load_str(&path.display().to_string(), path, text)?, opts)
}

fn lint_policy(p: crate::policy::Policy, opts: &Options) -> Result<(Compiled, Vec<Diag>), LoadError> {
    let mut out = super::entries::overlapping_entries(&p.stmts);
    let (ruleset, unused) = match crate::ir::lower(&p) {
        Ok(lowered) => lowered,
        Err(diags) => return Err(LoadError::Policy(PolicyError { sources: p.sources, diags })),
    };
    let c = Compiled { sources: p.sources, ruleset, unused };
    out.extend(lint_with(&c, opts));
    out.sort_by(|a, b| (a.span, a.code).cmp(&(b.span, b.code)));
    Ok((c, out))
}

/// Lints a compiled policy (everything but the address-list checks, which need the syntax tree).
pub fn lint(c: &Compiled) -> Vec<Diag> {
    lint_with(c, &Options::default())
}

pub fn lint_with(c: &Compiled, opts: &Options) -> Vec<Diag> {
    let rs = &c.ruleset;
    let u = Universe::new(&[rs]);
    let mut out: Vec<Diag> = chain_findings(rs, &u, true).into_iter().map(|d| tighten(d, &c.sources)).collect();
    for unused in &c.unused {
        let code = if unused.kind == "define" { "unused-define" } else { "unused-set" };
        out.push(
            Diag::warning(
                code,
                unused.span,
                format!("{} `{}` is never used", unused.kind, unused.name),
                "declared here",
            )
            .with_help(format!("remove the {}, or use it in a rule", unused.kind)),
        );
    }
    out.extend(super::entries::feed_overlaps(rs, &c.sources));
    out.extend(super::lockout::findings(rs));
    out.extend(expiry_findings(rs, opts).into_iter().map(|d| tighten(d, &c.sources)));
    out.extend(offload_findings(rs).into_iter().map(|d| tighten(d, &c.sources)));
    out.extend(exemption_findings(rs, &u).into_iter().map(|d| tighten(d, &c.sources)));
    out.sort_by(|a, b| (a.span, a.code).cmp(&(b.span, b.code)));
    out
}

/// Early passes that no early rule after them could match a packet of: they
/// skip nothing, and read as if they passed packets, which the filter rules
/// still decide. (Every early rule sits in the input chain.)
fn exemption_findings(rs: &Ruleset, u: &Universe) -> Vec<Diag> {
    let rules = &rs.chain(Hook::Input).rules;
    // Per statement: its span, and whether one of its rules skips a later early rule.
    let mut found: Vec<(usize, Span, bool)> = Vec::new();
    for (i, r) in rules.iter().enumerate().filter(|(_, r)| r.exempts()) {
        let mine = u.rule_cubes(rs, r);
        let mut later = rules[i + 1..].iter().filter(|l| l.early && !l.notrack && l.origin.stmt != r.origin.stmt);
        let skips = later.any(|l| u.rule_cubes(rs, l).iter().any(|c| mine.iter().any(|m| m.intersects(c))));
        match found.iter_mut().find(|(stmt, ..)| *stmt == r.origin.stmt) {
            Some(f) => f.2 |= skips,
            None => found.push((r.origin.stmt, r.origin.span, skips)),
        }
    }
    found
        .into_iter()
        .filter(|(_, _, skips)| !skips)
        .map(|(_, span, _)| {
            Diag::warning(
                "exempts-nothing",
                span,
                "this early pass exempts nothing: no early rule after it matches its packets",
                "skips no rule",
            )
            .with_help("an early `pass` only skips the early rules after it, and the filter rules still decide its packets: to pass them, remove `early`; to spare them an early block, put it above that block")
        })
        .collect()
}

/// `offload` rules that name an interface their flowtable does not hook:
/// the kernel offloads a connection only when both its directions arrive
/// on devices of the flowtable, so those connections stay in the slow path.
fn offload_findings(rs: &Ruleset) -> Vec<Diag> {
    let mut out: Vec<Diag> = Vec::new();
    for r in rs.chain(crate::ir::Hook::Forward).rules.iter() {
        let Some(ft) = r.offload.as_ref().and_then(|n| rs.flowtables.iter().find(|f| &f.name == n)) else {
            continue;
        };
        let named = [&r.matches.iif, &r.matches.oif].into_iter().flatten().filter(|i| !i.negated);
        let mut missing: Vec<&str> = named
            .flat_map(|i| &i.names)
            .filter(|n| !n.ends_with('*') && !ft.devices.contains(n))
            .map(String::as_str)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() || out.iter().any(|d| d.span == r.origin.span) {
            continue;
        }
        out.push(
            Diag::warning(
                "offload-device",
                r.origin.span,
                format!(
                    "flowtable `{}` has no device {}: these connections are not offloaded",
                    ft.name,
                    missing.join(", ")
                ),
                "offloads through other devices",
            )
            .with_related(ft.origin.span, format!("hooks {}", ft.devices.join(", ")))
            .with_help("add the devices to the flowtable (both directions' input devices), or drop `offload` here"),
        );
    }
    out
}

/// Expired rules and entries, and those that expire within the warning window.
pub fn expiry_findings(rs: &Ruleset, opts: &Options) -> Vec<Diag> {
    let mut out = Vec::new();
    for e in &rs.expiries {
        let left = e.days_left(opts.today);
        if e.expired {
            out.push(e.expired_warning());
        } else if left <= opts.expiry_warn_days {
            let when = match left {
                0 => "today is its last day".to_string(),
                1 => "1 day left".to_string(),
                n => format!("{n} days left"),
            };
            out.push(
                Diag::warning(
                    "expires-soon",
                    e.origin.span,
                    format!("{} {} expires on {} ({when})", e.kind, e.what, e.date),
                    format!("expires {}", e.date),
                )
                .with_help("after that day it is left out of the compiled ruleset; move the date or remove it"),
            );
        }
    }
    out
}

/// Rule spans run on over the whitespace and comments before the next
/// statement; point at the rule text only.
fn tighten(mut d: Diag, sources: &SourceMap) -> Diag {
    let tight = |s: Span| Span { end: s.start + code_len(sources.snippet(s)), ..s };
    d.span = tight(d.span);
    for (s, _) in &mut d.related {
        *s = tight(*s);
    }
    d
}

/// Length of `text` up to its last character that is not whitespace or in a comment.
fn code_len(text: &str) -> usize {
    let (mut end, mut in_string, mut in_comment) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '#' if !in_string => in_comment = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        if !in_comment && !c.is_whitespace() {
            end = i + c.len_utf8();
        }
    }
    end
}

/// The IR rules of one policy statement (its expansions per family and protocol).
struct Statement {
    rules: Vec<usize>,
    span: Span,
}

fn statements(ch: &Chain) -> Vec<Statement> {
    let mut out: Vec<Statement> = Vec::new();
    for (i, r) in ch.rules.iter().enumerate() {
        match out.last_mut() {
            Some(s) if ch.rules[s.rules[0]].origin.stmt == r.origin.stmt => s.rules.push(i),
            _ => out.push(Statement { rules: vec![i], span: r.origin.span }),
        }
    }
    out
}

/// Side effects besides the verdict: removing such a rule is never a no-op.
/// Counters are not one: every rule has one by default, and a rule that
/// never decides a packet counts nothing worth keeping. A `notrack` pass
/// keeps its packets out of conntrack, and `set [ct] mark` marks them, which a
/// later pass would not; a named counter is counting asked for by name.
fn has_side_effects(r: &Rule) -> bool {
    r.log.is_some() || r.notrack || !r.set_marks.is_empty() || r.counter_name.is_some() || r.offload.is_some()
}

/// The findings of every chain. An early rule sits in both the input and
/// the forward chain, so it is dead or redundant only when it is in both:
/// then the input chain's finding stands for it.
fn chain_findings(rs: &Ruleset, u: &Universe, probe: bool) -> Vec<Diag> {
    let both: BTreeSet<Span> =
        rs.chain(Hook::Input).rules.iter().filter(|r| r.early && !r.notrack).map(|r| r.origin.span).collect();
    let per_chain: Vec<(Hook, Vec<Diag>)> =
        rs.chains.iter().map(|ch| (ch.hook, lint_chain(rs, ch, u, probe))).collect();
    let in_forward: BTreeSet<Span> = per_chain
        .iter()
        .filter(|(hook, _)| *hook == Hook::Forward)
        .flat_map(|(_, ds)| ds.iter().map(|d| d.span))
        .collect();
    per_chain
        .into_iter()
        .flat_map(|(hook, ds)| ds.into_iter().map(move |d| (hook, d)))
        .filter(|(hook, d)| !both.contains(&d.span) || (*hook == Hook::Input && in_forward.contains(&d.span)))
        .map(|(_, d)| d)
        .collect()
}

/// `probe`: skip the exact check for statements one packet proves needed
/// (off only to test that it changes no finding).
fn lint_chain(rs: &Ruleset, ch: &Chain, u: &Universe, probe: bool) -> Vec<Diag> {
    let cubes: Vec<Vec<Cube>> = ch.rules.iter().map(|r| u.rule_cubes(rs, r)).collect();
    let sure: Vec<bool> = ch.rules.iter().map(|r| condition(rs, r).is_none()).collect();
    let full = u.full();
    // A catch-all has no field clause, so it has a cube per family and kind.
    // An early pass decides nothing: it keeps its packets from the early
    // rules after it only, so an early rule after one keeps from the rest of
    // the chain what it matches outside every early pass before it.
    let first_exemption = ch.rules.iter().position(Rule::exempts).unwrap_or(ch.rules.len());
    let keeps: Vec<Vec<Cube>> = (0..ch.rules.len())
        .map(|j| match &ch.rules[j] {
            r if r.exempts() => Vec::new(),
            r if r.early && j > first_exemption => {
                let passes = (first_exemption..j).filter(|&k| ch.rules[k].exempts());
                passes.fold(cubes[j].clone(), |left, k| subtract_all(left, &cubes[k]))
            }
            _ => cubes[j].clone(),
        })
        .collect();
    let catch_all = (0..ch.rules.len()).find(|&i| {
        sure[i]
            && !ch.rules[i].exempts()
            && (i < first_exemption || !ch.rules[i].early)
            && cubes[i].len() == full.len()
            && subtract_all(full.clone(), &cubes[i]).is_empty()
    });
    let index = CubeIndex::new(&cubes);
    let mut out = Vec::new();
    for st in statements(ch) {
        let first = st.rules[0];
        if st.rules.iter().all(|&i| cubes[i].is_empty()) {
            out.push(
                Diag::error("never-matches", st.span, "this rule can never match a packet", "contradictory clauses")
                    .with_help("a negation or list excludes every value of some field; fix or remove the rule"),
            );
            continue;
        }
        if let Some(ca) = catch_all.filter(|&ca| ca < first) {
            out.push(
                Diag::error(
                    "after-catch-all",
                    st.span,
                    "rule comes after a rule that matches every packet",
                    "never reached",
                )
                .with_related(ch.rules[ca].origin.span, "matches every packet")
                .with_help("move it above the catch-all rule, or remove it"),
            );
            continue;
        }
        let own: Vec<Cube> = st.rules.iter().flat_map(|&k| cubes[k].iter().cloned()).collect();
        let near = index.candidates_any(&own);
        let prober = Probe { rs, ch, cubes: &cubes, sure: &sure, index: &index };
        if probe && own.iter().flat_map(Cube::corners).any(|p| prober.needed(&st, &p)) {
            continue;
        }
        // What earlier unconditional rules leave of this statement's packets
        // (all that early rules match, for an early one: none is skipped).
        let earlier = if ch.rules[first].early { &cubes } else { &keeps };
        let mut deciders = BTreeSet::new();
        let left: Vec<Vec<Cube>> = st
            .rules
            .iter()
            .map(|&k| {
                let mut rem = cubes[k].clone();
                for &j in near.iter().filter(|&&j| j < first && sure[j]) {
                    if rem.is_empty() {
                        break;
                    }
                    if rem.iter().any(|r| earlier[j].iter().any(|c| r.intersects(c))) {
                        deciders.insert(j);
                        rem = subtract_all(rem, &earlier[j]);
                    }
                }
                rem
            })
            .collect();
        if left.iter().all(Vec::is_empty) {
            out.push(covered(ch, &st, &deciders));
        } else if let Some(d) = redundant_by_later(rs, ch, &st, &cubes, &sure, &near, left) {
            out.push(d);
        }
    }
    out
}

/// A quick proof, from one packet, that a statement is neither shadowed nor
/// redundant, so the exact check (cube subtraction, whose pieces multiply
/// with every rule subtracted: quadratic for a broad rule among thousands)
/// is not needed.
struct Probe<'a> {
    rs: &'a Ruleset,
    ch: &'a Chain,
    cubes: &'a [Vec<Cube>],
    sure: &'a [bool],
    index: &'a CubeIndex,
}

impl Probe<'_> {
    /// Does packet `p` (one of the statement's) reach the statement past
    /// every earlier rule, and would the rules after it (or the default
    /// policy) decide it otherwise? Then the exact check finds nothing either.
    fn needed(&self, st: &Statement, p: &Cube) -> bool {
        let (first, last) = (st.rules[0], *st.rules.last().expect("a statement has rules"));
        let near = self.index.candidates_any(std::slice::from_ref(p));
        let hits = |j: usize| self.cubes[j].iter().any(|c| c.intersects(p));
        if near.iter().any(|&j| j < first && self.sure[j] && hits(j)) {
            return false;
        }
        let rules: Vec<&Rule> = st.rules.iter().map(|&i| &self.ch.rules[i]).collect();
        if rules.iter().any(|r| has_side_effects(r) || condition(self.rs, r).is_some() || r.exempts()) {
            return true;
        }
        let action = rules[0].action;
        match near.iter().find(|&&j| j > last && hits(j)) {
            // Without this rule the early pass would exempt the packet, and
            // which rule decides it then is for the exact check.
            Some(&j) if self.ch.rules[j].exempts() => false,
            Some(&j) => {
                let later = &self.ch.rules[j];
                !self.sure[j] || later.action != action || has_side_effects(later)
            }
            None => self.ch.policy.action != action || self.ch.policy.log.is_some(),
        }
    }
}

/// Every packet of the statement is decided by earlier rules.
fn covered(ch: &Chain, st: &Statement, deciders: &BTreeSet<usize>) -> Diag {
    let action = ch.rules[st.rules[0]].action;
    let same = deciders.iter().all(|&j| ch.rules[j].action == action);
    let ids: Vec<String> = dedup_origins(ch, deciders).iter().map(|r| r.origin.id.clone()).collect();
    let mut d = if same {
        let verb = if ids.len() == 1 { verb(action) } else { action.keyword() };
        Diag::warning(
            "redundant",
            st.span,
            format!("rule is redundant: {} already {verb} all its packets", ids.join(", ")),
            "never decides a packet",
        )
    } else {
        Diag::error(
            "shadowed",
            st.span,
            format!("rule is shadowed by {}: it never matches", ids.join(", ")),
            "never decides a packet",
        )
    };
    for r in dedup_origins(ch, deciders) {
        d = d.with_related(r.origin.span, format!("decides some of its packets ({})", r.action.keyword()));
    }
    d.with_help(if same {
        "remove it; rules with a rate limit or a run-time set are not counted, since they may not match"
    } else {
        "move it above the rules that shadow it, or remove it; rules with a rate limit or a run-time set are not counted"
    })
}

fn verb(a: crate::ir::Action) -> &'static str {
    match a {
        crate::ir::Action::Pass => "passes",
        crate::ir::Action::Block => "blocks",
        crate::ir::Action::Reject => "rejects",
    }
}

/// One rule per policy statement, in order.
fn dedup_origins<'a>(ch: &'a Chain, idx: &BTreeSet<usize>) -> Vec<&'a Rule> {
    let mut seen = BTreeSet::new();
    idx.iter().map(|&j| &ch.rules[j]).filter(|r| seen.insert(r.origin.stmt)).collect()
}

/// Without this statement, would later rules (or the default policy) give the
/// packets it decides the same verdict, with no log or counter lost?
/// `near`: the rules that may intersect the statement (from the index).
fn redundant_by_later(
    rs: &Ruleset,
    ch: &Chain,
    st: &Statement,
    cubes: &[Vec<Cube>],
    sure: &[bool],
    near: &[usize],
    left: Vec<Vec<Cube>>,
) -> Option<Diag> {
    let rules: Vec<&Rule> = st.rules.iter().map(|&i| &ch.rules[i]).collect();
    // An early pass decides nothing, so no later rule decides its packets the same.
    if rules.iter().any(|r| has_side_effects(r) || condition(rs, r).is_some() || r.exempts()) {
        return None;
    }
    let action = rules[0].action;
    let last = *st.rules.last()?;
    let mut rem: Vec<Cube> = left.into_iter().flatten().collect();
    let mut deciders = BTreeSet::new();
    for &j in near.iter().filter(|&&j| j > last) {
        if rem.is_empty() {
            break;
        }
        if !rem.iter().any(|r| cubes[j].iter().any(|c| r.intersects(c))) {
            continue;
        }
        let later = &ch.rules[j];
        if !sure[j] || later.action != action || has_side_effects(later) || later.exempts() {
            return None;
        }
        deciders.insert(j);
        rem = subtract_all(rem, &cubes[j]);
    }
    let policy = &ch.policy;
    let to_default = !rem.is_empty();
    if to_default && (policy.action != action || policy.log.is_some()) {
        return None;
    }
    let mut who: Vec<String> = dedup_origins(ch, &deciders).iter().map(|r| r.origin.id.clone()).collect();
    if to_default {
        who.push(format!("the {} default policy", ch.hook.name()));
    }
    let mut d = Diag::warning(
        "redundant",
        st.span,
        format!("rule is redundant: without it, {} would {} the same packets", who.join(" and "), action.keyword()),
        "removing it changes nothing",
    );
    for r in dedup_origins(ch, &deciders) {
        d = d.with_related(r.origin.span, format!("would {} them", r.action.keyword()));
    }
    if let Some(o) = policy.origin.as_ref().filter(|_| to_default) {
        d = d.with_related(o.span, "would decide the rest");
    }
    Some(d.with_help("remove it, unless it documents intent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The findings about rules only: these small policies lock out on
    /// purpose (the lockout findings have their own tests).
    fn lint(c: &Compiled) -> Vec<Diag> {
        super::lint(c).into_iter().filter(|d| !crate::analyze::lockout::CODES.contains(&d.code)).collect()
    }

    fn codes(policy: &str) -> Vec<(String, &'static str)> {
        let c = crate::ir::compile("t.pf", policy).expect("compiles");
        lint(&c).iter().map(|d| (c.sources.origin(d.span), d.code)).collect()
    }

    #[test]
    fn early_passes_shadow_early_rules_only() {
        // Exempted packets still meet line 4, so it is not dead; line 3 is.
        let p = "policy input pass\npolicy forward pass\npass in from 10.0.0.0/8 early\nblock in from 10.1.0.0/16 early\nblock in from 10.1.2.0/24\n";
        assert_eq!(codes(p), vec![("t.pf:4".to_string(), "shadowed")]);
        // An early block after an exemption keeps from later rules only what is not exempted.
        let p = "policy input pass\npolicy forward pass\npass in from 10.1.0.0/16 early\nblock in from 10.0.0.0/8 early\nblock in from 10.1.2.0/24\n";
        assert_eq!(codes(p), vec![]);
        let p = "policy input pass\npolicy forward pass\npass in from 10.1.0.0/16 early\nblock in from 10.0.0.0/8 early\nblock in from 10.2.0.0/16\n";
        assert_eq!(codes(p), vec![("t.pf:5".to_string(), "redundant")]);
    }

    #[test]
    fn an_early_pass_with_no_early_rule_after_it_to_skip_exempts_nothing() {
        let p =
            "policy input pass\npolicy forward pass\npass in from 10.1.0.0/16 early\nblock in from 10.0.0.0/8 early\n";
        assert_eq!(codes(p), vec![]);
        let p = "policy input pass\npolicy forward pass\nblock in from 10.0.0.0/8 early\npass in proto tcp to port 22 early\nblock in proto udp early\n";
        assert_eq!(codes(p), vec![("t.pf:4".to_string(), "exempts-nothing")]);
    }

    #[test]
    fn an_early_rule_is_redundant_only_in_both_chains_it_sits_in() {
        // Line 3 changes nothing for forwarded packets (the default drops them) but blocks input.
        assert_eq!(codes("policy input pass\npolicy forward block\nblock in from 10.0.0.0/8 early\n"), vec![]);
        let both = codes("policy input block\npolicy forward block\nblock in from 10.0.0.0/8 early\n");
        assert_eq!(both, vec![("t.pf:3".to_string(), "redundant")]);
    }

    #[test]
    fn partial_overlap_is_not_shadowing() {
        // (The default policy passes: a last `block` would be redundant with a blocking default.)
        let p = "policy input pass\npass in proto tcp from 10.0.0.0/9 to port 20-30\nblock in proto tcp from 10.0.0.0/8 to port 22\n";
        assert_eq!(codes(p), vec![]);
        let p = "policy input pass\npass in proto tcp to port 22 state new\nblock in proto tcp to port 22\n";
        assert_eq!(codes(p), vec![], "other states still reach rule 2");
    }

    #[test]
    fn a_union_of_earlier_rules_that_covers_a_later_one_shadows_it() {
        let p = "policy input pass\npass in proto tcp from 10.0.0.0/9 to port 1-100\npass in proto tcp from 10.128.0.0/9 to port 50-200\nblock in proto tcp from 10.0.0.0/8 to port 60-90\n";
        let c = crate::ir::compile("t.pf", p).expect("compiles");
        let d = lint(&c);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].code, c.sources.origin(d[0].span).as_str()), ("shadowed", "t.pf:4"));
        assert_eq!(d[0].message, "rule is shadowed by t.pf:2, t.pf:3: it never matches");
        // One address short of covering: no longer shadowed.
        let p = p.replace("10.128.0.0/9", "10.128.0.1/32");
        assert_eq!(codes(&p), vec![]);
    }

    #[test]
    fn families_and_expansions_count_separately() {
        // The v4 half is covered, the v6 half is not: not shadowed.
        let p = "block in from 10.0.0.0/8\npass in from { 10.1.0.0/16, fd00::/8 }\n";
        assert_eq!(codes(p), vec![]);
        let p = "block in from { 10.0.0.0/8, fd00::/8 }\npass in from { 10.1.0.0/16, fd00:1::/32 }\n";
        assert_eq!(codes(p), vec![("t.pf:2".into(), "shadowed")]);
    }

    #[test]
    fn same_verdict_cover_is_redundant_and_later_duplicates_too() {
        assert_eq!(
            codes("pass in proto tcp to port 1-1000\npass in proto tcp to port 80\n"),
            vec![("t.pf:2".into(), "redundant")]
        );
        // Without rule 1 the default policy blocks the same packets.
        assert_eq!(codes("block in proto udp to port 9\n"), vec![("t.pf:1".into(), "redundant")]);
        // ... but not when the default logs, or the rule logs.
        assert_eq!(codes("policy input block log\nblock in proto udp to port 9\n"), vec![]);
        assert_eq!(codes("block in proto udp to port 9 log\n"), vec![]);
        // A later rule with another verdict would take them: not redundant.
        assert_eq!(codes("block in proto udp to port 9\npass in proto udp\n"), vec![]);
    }

    #[test]
    fn conditional_rules_never_shadow() {
        let p = "policy input pass\nset bl dynamic\npass in proto tcp from <bl>\nblock in proto tcp to port 22\n";
        assert_eq!(codes(p), vec![], "run-time set contents are unknown");
        let p = "policy input pass\npass in proto tcp limit 10/second\nblock in proto tcp to port 22\n";
        assert_eq!(codes(p), vec![], "over the limit, packets fall through");
        // A conditional rule can itself be shadowed.
        let p = "block in proto tcp\nset bl dynamic\npass in proto tcp from <bl> to port 22\n";
        assert_eq!(codes(p), vec![("t.pf:3".into(), "shadowed")]);
    }

    #[test]
    fn static_sets_and_interfaces_are_exact() {
        let p = "set a = { 10.0.0.0/8 }\npass in on eth* from <a>\nblock in on eth0 from 10.1.2.3\nblock in on eth1x from 10.9.0.0/16 proto tcp\n";
        assert_eq!(codes(p), vec![("t.pf:3".into(), "shadowed"), ("t.pf:4".into(), "shadowed")]);
        let p = "policy input pass\npass in on eth0\nblock in on eth* from 10.0.0.0/8\n";
        assert_eq!(codes(p), vec![]);
    }

    #[test]
    fn negated_interfaces_are_exact() {
        // eth0 is not docker0: covered by the negation, shadowed.
        let p = "pass in on !docker0 proto tcp to port 22\nblock in on eth0 proto tcp to port 22\n";
        assert_eq!(codes(p), vec![("t.pf:2".into(), "shadowed")]);
        // docker0 (and br-*) are left to the later rule: not shadowed.
        let p = "pass in on !{ docker0, br-* }\nreject in on { docker0, br-lan }\n";
        assert_eq!(codes(p), vec![]);
        // ... unless an earlier rule takes exactly what the negation leaves.
        let p = "pass in on !{ docker0, br-* }\npass in on { docker0, br-* }\nreject in on br-lan\n";
        assert_eq!(codes(p), vec![("t.pf:3".into(), "shadowed")]);
        // A name and its negation: together every interface.
        let p = "policy input pass\nblock in on lo\nreject in on !lo\npass in proto tcp\n";
        assert_eq!(codes(p), vec![("t.pf:4".into(), "shadowed")]);
    }

    #[test]
    fn contradictions_catch_alls_and_unused_names() {
        assert_eq!(codes("pass in ipv4 from ! 0.0.0.0/0\n"), vec![("t.pf:1".into(), "never-matches")]);
        // `! 0.0.0.0/0` says nothing about IPv6: the rule matches every IPv6 packet.
        assert_eq!(codes("pass in from ! 0.0.0.0/0\n"), vec![]);
        assert_eq!(codes("pass in proto tcp to port ! 0-65535\n"), vec![("t.pf:1".into(), "never-matches")]);
        let p = "policy input reject\npass in\nblock in proto tcp\npass in on eth0\n";
        assert_eq!(codes(p), vec![("t.pf:3".into(), "after-catch-all"), ("t.pf:4".into(), "after-catch-all")]);
        let p = "define x = 10.0.0.1\nset s = { 10.0.0.2 }\npass in proto tcp to port 22 log\n";
        assert_eq!(codes(p), vec![("t.pf:1".into(), "unused-define"), ("t.pf:2".into(), "unused-set")]);
    }

    #[test]
    fn the_probe_changes_no_finding() {
        // Overlapping shapes of every kind: nested networks, port ranges,
        // interface wildcards, states, limits, logs, both verdicts.
        let mut total = 0;
        for seed in 0..12u64 {
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut next = |n: u64| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) % n
            };
            let mut text = format!("policy input {}\n", ["pass", "block"][next(2) as usize]);
            for _ in 0..120 {
                let action = ["pass", "block", "reject"][next(3) as usize];
                let on = ["", " on eth*", " on eth0", " on eth1*", " on wg0", " on !eth0", " on !{ eth1*, wg0 }"]
                    [next(7) as usize];
                let proto = ["", " proto tcp", " proto udp", " proto icmp"][next(4) as usize];
                let from =
                    ["", " from 10.0.0.0/8", " from 10.1.0.0/16", " from 10.1.2.3", " from fd00::/8"][next(5) as usize];
                let from = if proto == " proto icmp" && from.contains("fd00") { "" } else { from };
                let port = if proto == " proto tcp" || proto == " proto udp" {
                    [" to port 22", " to port 20-30", " to port 1000-2000", "", " to port { 22, 80 }"][next(5) as usize]
                } else {
                    ""
                };
                let extra =
                    ["", " state new", " state { established, related }", " log", " limit 10/second"][next(5) as usize];
                text += &format!("{action} in{on}{proto}{from}{port}{extra}\n");
            }
            let c = crate::ir::compile("t.pf", &text).expect("compiles");
            let rs = &c.ruleset;
            let u = Universe::new(&[rs]);
            for ch in &rs.chains {
                let quick = lint_chain(rs, ch, &u, true);
                assert_eq!(quick, lint_chain(rs, ch, &u, false), "seed {seed}:\n{text}");
                total += quick.len();
            }
        }
        assert!(total > 50, "the policies have findings to compare ({total})");
    }

    #[test]
    fn example_policies_are_clean() {
        for p in ["policies/webserver.pf", "policies/bastion.pf", "policies/router.pf"] {
            let c = crate::ir::compile_file(std::path::Path::new(p)).expect("compiles");
            assert_eq!(lint(&c), vec![], "{p}");
        }
    }
}
