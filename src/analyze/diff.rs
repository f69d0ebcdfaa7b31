//! Semantic diff: the regions of header space whose outcome differs between
//! two policies, each named with the rules that decide it in old and new.
//!
//! Each chain is first cut into disjoint cubes by outcome: the rules a
//! packet meets in order until one surely decides it. A rule with a rate
//! limit or a run-time set is a conditional step ("pass if under limit ...,
//! else ..."), since offline it may or may not match. Then the two
//! partitions are intersected, and pieces that differ only in one field are
//! merged back for reading.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::{Action, Chain, Compiled, Hook, Rule, Ruleset, SetMark};

use super::space::{condition, subtract_all, tracked_states, Cube, Dim, Ranges, Universe};

/// One step of an outcome: a conditional rule, or the final verdict.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Step {
    pub verdict: Action,
    /// How a reject answers (`icmpx admin-prohibited`), when the rule chose;
    /// `notrack` for an early pass that conntrack never sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why it may not apply (rate limit, run-time set); `None` on the final step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// `file:line` of the rule or the default policy.
    pub rule: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// More traffic may pass than before.
    Widen,
    /// Less traffic may pass than before.
    Narrow,
    /// Same reach, other handling (block <-> reject, another limit).
    Change,
}

#[derive(Clone, Debug, Serialize)]
pub struct Region {
    pub change: Change,
    pub hook: Hook,
    /// The packets, in the policy's words.
    pub packets: String,
    pub old: Vec<Step>,
    pub new: Vec<Step>,
    #[serde(skip)]
    pub cube: Cube,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub regions: Vec<Region>,
    /// NAT rules are compared as written, not analysed.
    pub nat_changed: bool,
    /// Sets whose timed entries (which time out, or when) differ; verdicts
    /// are compared for the sets as loaded, before anything times out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeouts_changed: Vec<String>,
}

impl Diff {
    pub fn widens(&self) -> bool {
        self.regions.iter().any(|r| r.change == Change::Widen)
    }
}

/// The outcome of every packet of `within` (disjoint cubes) in a chain, as disjoint cubes.
pub fn partition(rs: &Ruleset, ch: &Chain, u: &Universe, within: Vec<Cube>) -> Vec<(Cube, Vec<Step>)> {
    let mut open: Vec<(Cube, Vec<Step>)> = within.into_iter().map(|c| (c, Vec::new())).collect();
    let mut done = Vec::new();
    // Packets an early pass let through: they skip the early rules after it
    // (which all come before the other rules) and meet the others.
    let mut exempt: Vec<(Cube, Vec<Step>)> = Vec::new();
    // A merged rule's lines are disjoint: meeting them one by one is meeting it.
    for rule in ch.rules.iter().flat_map(Rule::lines) {
        if !rule.early {
            open.append(&mut exempt);
        }
        if open.is_empty() && exempt.is_empty() {
            break;
        }
        if open.is_empty() {
            continue;
        }
        let cubes = u.cubes(rs, &rule.matches);
        // Lowering refuses a limit, quota or run-time set on an early pass.
        let cond = condition(rs, rule);
        let mut next = Vec::with_capacity(open.len());
        for (piece, path) in open {
            if !cubes.iter().any(|c| piece.intersects(c)) {
                next.push((piece, path));
                continue;
            }
            let mut outside = vec![piece.clone()];
            for c in &cubes {
                outside = outside.iter().flat_map(|o| o.subtract(c)).collect();
            }
            next.extend(outside.into_iter().map(|o| (o, path.clone())));
            if rule.exempts() {
                exempt.extend(cubes.iter().filter_map(|c| piece.intersect(c)).map(|inside| (inside, path.clone())));
                continue;
            }
            for inside in cubes.iter().filter_map(|c| piece.intersect(c)) {
                let mut path = path.clone();
                path.push(Step {
                    verdict: rule.action,
                    answer: answer(rule),
                    condition: cond.clone(),
                    rule: rule.origin.id.clone(),
                });
                if cond.is_some() {
                    next.push((inside, path));
                } else {
                    done.push((inside, path));
                }
            }
        }
        open = next;
    }
    open.append(&mut exempt);
    let policy = Step {
        verdict: ch.policy.action,
        answer: None,
        condition: None,
        rule: ch.policy.origin.as_ref().map_or_else(|| format!("built-in {} policy", ch.hook.name()), |o| o.id.clone()),
    };
    done.extend(open.into_iter().map(|(c, mut path)| {
        path.push(policy.clone());
        (c, path)
    }));
    done
}

/// How a rule handles what it decides beyond its verdict: a reject's answer,
/// or `notrack` for a pass that conntrack never sees.
fn answer(r: &Rule) -> Option<String> {
    let other =
        || r.notrack.then(|| "notrack".to_string()).or_else(|| r.offload.as_ref().map(|f| format!("offload {f}")));
    r.reject.map(|r| r.to_string()).or_else(other)
}

/// The marks the `match` rules gave a piece of packets: `None` for the one
/// it arrived with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marks {
    mark: Option<u32>,
    ct_mark: Option<u32>,
}

impl Marks {
    fn changed(self) -> bool {
        self != Marks::default()
    }
}

/// Every value a rule of either policy matches or sets a mark to. Rules
/// tell marks apart only by these, so the other values are one class and
/// any of them stands for all.
fn mark_values(rulesets: [&Ruleset; 2]) -> Vec<u128> {
    let mut out = std::collections::BTreeSet::new();
    for rs in rulesets {
        let rules = rs.chains.iter().flat_map(|c| &c.rules);
        for m in rules.clone().map(|r| &r.matches).chain(rs.marks.iter().map(|mr| &mr.matches)) {
            out.extend(m.mark.into_iter().chain(m.ct_mark));
        }
        for s in rules.flat_map(|r| &r.set_marks).chain(rs.marks.iter().flat_map(|mr| &mr.sets)) {
            if let SetMark::Mark(k) | SetMark::CtMark(k) = s {
                out.insert(*k);
            }
        }
    }
    out.into_iter().map(u128::from).collect()
}

/// The packets arriving at `hook`'s chain, cut by the marks its `match`
/// rules give them; each rule sees the marks set before it, the last
/// matching one wins. Cubes are in terms of the arriving packet.
fn mark_pieces(rs: &Ruleset, hook: Hook, u: &Universe, values: &[u128]) -> Vec<(Cube, Marks)> {
    let mut pieces: Vec<(Cube, Marks)> = u.full().into_iter().map(|c| (c, Marks::default())).collect();
    for mr in rs.marks.iter().filter(|mr| mr.runs_before(hook)) {
        let cubes = u.cubes(rs, &mr.matches);
        let mut next = Vec::with_capacity(pieces.len());
        for (piece, marks) in pieces {
            let seen = seen_with(&piece, marks);
            if !cubes.iter().any(|c| seen.intersects(c)) {
                next.push((piece, marks));
                continue;
            }
            let outside = subtract_all(vec![seen.clone()], &cubes);
            next.extend(outside.into_iter().map(|c| (arriving(c, &piece, marks), marks)));
            for inside in cubes.iter().filter_map(|c| seen.intersect(c)) {
                let set = apply_sets(&mr.sets, inside, marks, values);
                next.extend(set.into_iter().map(|(c, now)| (arriving(c, &piece, marks), now)));
            }
        }
        pieces = next;
    }
    pieces
}

/// A rule's `set [ct] mark`s on the packets of `seen` (seen with `marks`),
/// in order: the pieces they cut it into (still seen with `marks`) and the
/// marks each then has. Setting the ct mark of a packet without a
/// connection does nothing; reading it stops the rule.
fn apply_sets(sets: &[SetMark], seen: Cube, marks: Marks, values: &[u128]) -> Vec<(Cube, Marks)> {
    let mut work = vec![(seen, marks)];
    let mut stopped = Vec::new();
    for s in sets {
        let mut next = Vec::with_capacity(work.len());
        for (c, now) in work {
            let (with_ct, without) = if s.uses_ct() { split_tracked(c) } else { (Some(c), None) };
            if let Some(c) = without {
                if *s == SetMark::MarkFromCtMark {
                    stopped.push((c, now));
                } else {
                    next.push((c, now));
                }
            }
            let Some(c) = with_ct else { continue };
            let copy = |from: Option<u32>, dim: Dim, c: Cube| -> Vec<(Cube, u32)> {
                match from {
                    Some(k) => vec![(c, k)],
                    None => by_value(c, dim, values),
                }
            };
            match *s {
                SetMark::Mark(k) => next.push((c, Marks { mark: Some(k), ..now })),
                SetMark::CtMark(k) => next.push((c, Marks { ct_mark: Some(k), ..now })),
                SetMark::MarkFromCtMark => next.extend(
                    copy(now.ct_mark, Dim::CtMark, c).into_iter().map(|(c, k)| (c, Marks { mark: Some(k), ..now })),
                ),
                SetMark::CtMarkFromMark => next.extend(
                    copy(now.mark, Dim::Mark, c).into_iter().map(|(c, k)| (c, Marks { ct_mark: Some(k), ..now })),
                ),
            }
        }
        work = next;
    }
    work.extend(stopped);
    work
}

/// A cube cut into the packets with a connection (a ct mark) and those without.
fn split_tracked(c: Cube) -> (Option<Cube>, Option<Cube>) {
    let tracked = c.get(Dim::Ct).intersect(&tracked_states());
    let other = c.get(Dim::Ct).subtract(&tracked_states());
    let with = |r: Ranges| {
        (!r.is_empty()).then(|| {
            let mut part = c.clone();
            part.dims[Dim::Ct as usize] = r;
            part
        })
    };
    (with(tracked), with(other))
}

/// A cube cut by its value in `dim`: one piece per value of `values` it
/// holds, and the rest, each with the value it stands for.
fn by_value(c: Cube, dim: Dim, values: &[u128]) -> Vec<(Cube, u32)> {
    let range = c.get(dim).clone();
    let mut out = Vec::new();
    let mut rest = range.clone();
    for &v in values {
        let one = Ranges::span(v, v);
        if range.intersects(&one) {
            let mut part = c.clone();
            part.dims[dim as usize] = one.clone();
            out.push((part, v as u32));
            rest = rest.subtract(&one);
        }
    }
    if let Some(&(first, _)) = rest.0.first() {
        let mut part = c;
        part.dims[dim as usize] = rest;
        out.push((part, first as u32));
    }
    out
}

/// A piece as the rules see it: with the marks it was given.
fn seen_with(piece: &Cube, marks: Marks) -> Cube {
    let mut c = piece.clone();
    for (given, dim) in [(marks.mark, Dim::Mark), (marks.ct_mark, Dim::CtMark)] {
        if let Some(k) = given {
            c.dims[dim as usize] = Ranges::span(k as u128, k as u128);
        }
    }
    c
}

/// Part of a seen piece back in terms of the arriving packet: a mark it
/// was given was any of the piece's.
fn arriving(mut part: Cube, piece: &Cube, marks: Marks) -> Cube {
    for (given, dim) in [(marks.mark, Dim::Mark), (marks.ct_mark, Dim::CtMark)] {
        if given.is_some() {
            part.dims[dim as usize] = piece.get(dim).clone();
        }
    }
    part
}

/// The outcome of every arriving packet within `within` (seen cubes) as
/// disjoint cubes of arriving packets: the chain decides each mark piece
/// with the marks it was given.
fn outcomes(
    rs: &Ruleset,
    ch: &Chain,
    u: &Universe,
    pieces: &[(Cube, Marks)],
    within: &[Cube],
) -> Vec<(Cube, Vec<Step>)> {
    let mut out = Vec::new();
    for (piece, marks) in pieces {
        let seen = seen_with(piece, *marks);
        let parts: Vec<Cube> = within.iter().filter_map(|w| seen.intersect(w)).collect();
        out.extend(partition(rs, ch, u, parts).into_iter().map(|(c, steps)| (arriving(c, piece, *marks), steps)));
    }
    out
}

/// What an outcome means, without rule locations (which move between versions).
fn meaning(steps: &[Step]) -> Vec<(Action, Option<&str>, Option<&str>)> {
    steps.iter().map(|s| (s.verdict, s.answer.as_deref(), s.condition.as_deref())).collect()
}

/// (finally passes, may pass at all)
fn reach(steps: &[Step]) -> (bool, bool) {
    let last = steps.last().is_some_and(|s| s.verdict == Action::Pass);
    (last, steps.iter().any(|s| s.verdict == Action::Pass))
}

fn classify(old: &[Step], new: &[Step]) -> Change {
    let (o, n) = (reach(old), reach(new));
    if n.0 && !o.0 || n.1 && !o.1 {
        Change::Widen
    } else if o.0 && !n.0 || o.1 && !n.1 {
        Change::Narrow
    } else {
        Change::Change
    }
}

/// What a rule does to the packets it may match, comparable across policies;
/// whether it is early (an early pass only exempts, early pass skips early rules).
type RuleKey = (Vec<Cube>, Action, Option<String>, Option<String>, bool);

fn keys(rs: &Ruleset, ch: &Chain, u: &Universe) -> Vec<RuleKey> {
    ch.rules
        .iter()
        .flat_map(Rule::lines)
        .map(|r| (u.cubes(rs, &r.matches), r.action, answer(r), condition(rs, r), r.early))
        .collect()
}

/// Where the two chains may differ at all, as disjoint cubes. Rules both
/// chains have in the same order (a longest common subsequence) decide a
/// packet alike in both, so a packet can only change outcome if it may match
/// a rule outside that subsequence, or if the default policies differ.
fn may_differ(a: &[RuleKey], b: &[RuleKey], defaults_differ: bool, u: &Universe) -> Vec<Cube> {
    if defaults_differ {
        return u.full();
    }
    let mut changed: Vec<&Cube> = Vec::new();
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, a, b) {
        let (old_range, new_range) = (op.old_range(), op.new_range());
        if op.tag() != similar::DiffTag::Equal {
            changed.extend(a[old_range].iter().chain(&b[new_range]).flat_map(|k| &k.0));
        }
    }
    changed.into_iter().fold(Vec::new(), |mut disjoint, c| {
        let fresh = subtract_all(vec![c.clone()], &disjoint);
        disjoint.extend(fresh);
        disjoint
    })
}

pub fn diff(old: &Compiled, new: &Compiled) -> Diff {
    let u = Universe::new(&[&old.ruleset, &new.ruleset]);
    let values = mark_values([&old.ruleset, &new.ruleset]);
    let mut regions = Vec::new();
    for hook in Hook::ALL {
        let (och, nch) = (old.ruleset.chain(hook), new.ruleset.chain(hook));
        let (ka, kb) = (keys(&old.ruleset, och, &u), keys(&new.ruleset, nch, &u));
        let (ma, mb) = (mark_pieces(&old.ruleset, hook, &u, &values), mark_pieces(&new.ruleset, hook, &u, &values));
        // Marks move packets between regions of the chain: compare it all then.
        let marked = ma.iter().chain(&mb).any(|(_, m)| m.changed());
        let defaults_differ = och.policy.action != nch.policy.action;
        let within = if marked { u.full() } else { may_differ(&ka, &kb, defaults_differ, &u) };
        let a = outcomes(&old.ruleset, och, &u, &ma, &within);
        let b = outcomes(&new.ruleset, nch, &u, &mb, &within);
        // Pieces with the same old and new steps, merged where possible.
        let mut groups: BTreeMap<(Vec<Step>, Vec<Step>), Vec<Cube>> = BTreeMap::new();
        for (ca, sa) in &a {
            for (cb, sb) in &b {
                if meaning(sa) == meaning(sb) {
                    continue;
                }
                if let Some(c) = ca.intersect(cb) {
                    groups.entry((sa.clone(), sb.clone())).or_default().push(c);
                }
            }
        }
        for ((old_steps, new_steps), cubes) in groups {
            for cube in merge(cubes) {
                regions.push(Region {
                    change: classify(&old_steps, &new_steps),
                    hook,
                    packets: u.describe(&cube),
                    old: old_steps.clone(),
                    new: new_steps.clone(),
                    cube,
                });
            }
        }
    }
    regions.sort_by(|x, y| {
        (x.hook, x.change, &x.packets, &x.old, &x.new).cmp(&(y.hook, y.change, &y.packets, &y.old, &y.new))
    });
    let nat = |c: &Compiled| c.ruleset.nat.iter().map(|n| (n.matches.clone(), n.action.clone())).collect::<Vec<_>>();
    Diff { regions, nat_changed: nat(old) != nat(new), timeouts_changed: timeouts_changed(&old.ruleset, &new.ruleset) }
}

/// The policy sets whose timed entries differ between `old` and `new`.
fn timeouts_changed(old: &Ruleset, new: &Ruleset) -> Vec<String> {
    let timed = |rs: &Ruleset, name: &str| -> Vec<crate::ir::TimedNet> {
        let halves = rs.sets.iter().filter(|s| s.name == name);
        halves
            .flat_map(|s| match &s.kind {
                crate::ir::SetKind::Static { timed, .. } => timed.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    let mut names: Vec<&str> = old.sets.iter().chain(&new.sets).map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().filter(|n| timed(old, n) != timed(new, n)).map(str::to_string).collect()
}

/// Unions cubes that differ in one field, until none do.
fn merge(mut cubes: Vec<Cube>) -> Vec<Cube> {
    cubes.sort();
    loop {
        let mut merged = false;
        let mut i = 0;
        while i < cubes.len() {
            let mut j = i + 1;
            while j < cubes.len() {
                if let Some(m) = cubes[i].merge(&cubes[j]) {
                    cubes[i] = m;
                    cubes.swap_remove(j);
                    merged = true;
                } else {
                    j += 1;
                }
            }
            i += 1;
        }
        if !merged {
            cubes.sort();
            return cubes;
        }
    }
}

fn outcome_text(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| {
            let verdict = match &s.answer {
                Some(a) if s.verdict == Action::Pass => format!("pass {a}"),
                Some(a) => format!("{} with {a}", s.verdict.keyword()),
                None => s.verdict.keyword().to_string(),
            };
            match &s.condition {
                Some(c) => format!("{verdict} ({}) if {c}", s.rule),
                None => format!("{verdict} ({})", s.rule),
            }
        })
        .collect::<Vec<_>>()
        .join(", else ")
}

pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    for r in &d.regions {
        let word = match r.change {
            Change::Widen => "widen ",
            Change::Narrow => "narrow",
            Change::Change => "change",
        };
        out += &format!(
            "{word} {} {}:\n         {}\n      -> {}\n",
            r.hook.name(),
            r.packets,
            outcome_text(&r.old),
            outcome_text(&r.new)
        );
    }
    let count = |c| d.regions.iter().filter(|r| r.change == c).count();
    if d.regions.is_empty() {
        out += "no packet changes verdict\n";
    } else {
        out += &format!(
            "{} regions change: {} widen, {} narrow, {} other\n",
            d.regions.len(),
            count(Change::Widen),
            count(Change::Narrow),
            count(Change::Change)
        );
    }
    if d.nat_changed {
        out += "note: NAT rules differ (diff compares filter verdicts; NAT is not analysed)\n";
    }
    if !d.timeouts_changed.is_empty() {
        out += &format!(
            "note: entry timeouts differ in set {} (verdicts are compared for the sets as loaded)\n",
            d.timeouts_changed.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::packet;
    use crate::ir::eval::{decide, SetContents};

    fn compile(text: &str, name: &str) -> Compiled {
        crate::ir::compile(name, text).expect("compiles")
    }

    #[test]
    fn names_the_widened_region_and_the_rule_behind_it() {
        let old = compile("pass in proto tcp to port 22\n", "old.pf");
        let new = compile("pass in proto tcp to port 22\npass in proto tcp from 10.1.0.0/16 to port 5432\n", "new.pf");
        let d = diff(&old, &new);
        assert_eq!(d.regions.len(), 1, "{}", render(&d));
        let r = &d.regions[0];
        assert_eq!(
            (r.change, r.hook, r.packets.as_str()),
            (Change::Widen, Hook::Input, "ipv4 proto tcp from 10.1.0.0/16 to port 5432")
        );
        assert_eq!(outcome_text(&r.old), "block (built-in input policy)");
        assert_eq!(outcome_text(&r.new), "pass (new.pf:2)");
        assert!(d.widens());
        assert!(diff(&new, &old).regions.iter().all(|r| r.change == Change::Narrow));
    }

    #[test]
    fn a_timed_entry_counts_as_present_and_a_new_timeout_is_noted() {
        let set = |entry: &str| format!("set t = {{ {entry}, 10.9.0.0/16 }}\npass in proto tcp from <t> to port 22\n");
        let (plain, timed) = (compile(&set("192.0.2.1"), "old.pf"), compile(&set("192.0.2.1 timeout 1h"), "new.pf"));
        let d = diff(&plain, &timed);
        assert!(d.regions.is_empty(), "{}", render(&d));
        assert_eq!(d.timeouts_changed, ["t"]);
        assert!(render(&d).contains("note: entry timeouts differ in set t"), "{}", render(&d));
        assert!(diff(&timed, &timed).timeouts_changed.is_empty());
    }

    #[test]
    fn another_reject_answer_is_a_change_of_handling() {
        let old = compile("reject in proto udp to port 53\n", "old.pf");
        let new = compile("reject in proto udp to port 53 with icmpx admin-prohibited\n", "new.pf");
        let d = diff(&old, &new);
        let packets: Vec<&str> = d.regions.iter().map(|r| r.packets.as_str()).collect();
        assert_eq!(packets, ["ipv4 proto udp to port 53", "ipv6 proto udp to port 53"], "{}", render(&d));
        for r in &d.regions {
            assert_eq!(r.change, Change::Change);
            assert_eq!(outcome_text(&r.old), "reject (old.pf:1)");
            assert_eq!(outcome_text(&r.new), "reject with icmpx admin-prohibited (new.pf:1)");
        }
    }

    #[test]
    fn widening_a_negated_interface_list_narrows_exactly_the_new_names() {
        let old = compile("pass in on !docker0 proto tcp to port 80\n", "old.pf");
        let new = compile("pass in on !{ docker0, br-* } proto tcp to port 80\n", "new.pf");
        let d = diff(&old, &new);
        let packets: Vec<&str> = d.regions.iter().map(|r| r.packets.as_str()).collect();
        assert_eq!(
            packets,
            ["ipv4 proto tcp in on br-* to port 80", "ipv6 proto tcp in on br-* to port 80"],
            "{}",
            render(&d)
        );
        assert!(d.regions.iter().all(|r| r.change == Change::Narrow));
        // The same decision written with a negation or with the names: no difference.
        let plain =
            compile("pass in on { docker0, br-* } proto tcp to port 80\nblock in proto tcp to port 80\n", "plain.pf");
        let negated =
            compile("block in on !{ docker0, br-* } proto tcp to port 80\npass in proto tcp to port 80\n", "neg.pf");
        assert!(diff(&plain, &negated).regions.is_empty(), "{}", render(&diff(&plain, &negated)));
        // Swapped verdicts differ on exactly both sides of the negation.
        let swapped =
            compile("pass in on !{ docker0, br-* } proto tcp to port 80\nblock in proto tcp to port 80\n", "swap.pf");
        let text = render(&diff(&plain, &swapped));
        assert!(text.contains("ipv4 proto tcp in on ! { br-*, docker0 } to port 80"), "{text}");
        assert!(text.contains("ipv4 proto tcp in on { br-*, docker0 } to port 80"), "{text}");
    }

    #[test]
    fn reordering_without_overlap_and_moving_lines_change_nothing() {
        let old = compile("pass in proto tcp to port 22\nblock in proto udp to port 53\n", "a.pf");
        let new = compile("# moved\nblock in proto udp to port 53\n\npass in proto tcp to port 22\n", "b.pf");
        assert!(diff(&old, &new).regions.is_empty());
    }

    #[test]
    fn every_packet_whose_verdict_changes_lies_in_a_region() {
        let old = compile("policy input reject\npass in on eth0 proto tcp to port 20-30\nblock in from 10.0.0.0/8\npass in proto udp\npass in proto icmp limit 1/second\n", "old.pf");
        let new = compile("pass in on eth0 proto tcp to port 20-30\npass in proto udp to port 53\nblock in from 10.0.0.0/8\npass in proto udp\npass in on eth* proto tcp to port 25\n", "new.pf");
        let d = diff(&old, &new);
        let u = Universe::new(&[&old.ruleset, &new.ruleset]);
        let mut checked = 0;
        for src in ["10.1.2.3", "192.0.2.1"] {
            for iif in ["eth0", "eth1", "lo"] {
                for (proto, port) in
                    [("tcp", ":25"), ("tcp", ":22"), ("udp", ":53"), ("udp", ":54"), ("icmp", ""), ("gre", "")]
                {
                    let p = packet::parse(&format!("{proto} {src} -> 192.0.2.9{port} in {iif}")).expect("packet");
                    let (a, b) =
                        (decide(&old.ruleset, &p, &SetContents::new()), decide(&new.ruleset, &p, &SetContents::new()));
                    let inside = d.regions.iter().any(|r| r.hook == Hook::Input && r.cube.intersects(&u.point(&p)));
                    if a.verdict != b.verdict || a.rate_limited != b.rate_limited {
                        assert!(inside, "{} changes but is in no region:\n{}", packet::format(&p), render(&d));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10, "{checked}");
    }

    #[test]
    fn early_passes_exempt_from_early_rules_only() {
        let old = compile(
            "policy input pass\nblock in from 10.0.0.0/8 early\nblock in proto udp from 10.1.0.0/16\n",
            "old.pf",
        );
        let new = compile("policy input pass\npass in from 10.1.0.0/16 early\nblock in from 10.0.0.0/8 early\nblock in proto udp from 10.1.0.0/16\n", "new.pf");
        // Without `early` the pass comes after the early block, which then drops all of 10/8.
        let plain = compile("policy input pass\nblock in from 10.0.0.0/8 early\npass in from 10.1.0.0/16\nblock in proto udp from 10.1.0.0/16\n", "plain.pf");
        let mut packets = Vec::new();
        for src in ["10.1.2.3", "10.2.0.1", "192.0.2.1"] {
            for (proto, port) in [("tcp", ":22"), ("udp", ":53"), ("icmp", "")] {
                packets.push(format!("{proto} {src} -> 192.0.2.9{port} in eth0"));
            }
        }
        let (d, changed) = input_regions_match_verdicts(&old, &new, &packets);
        // tcp and icmp from 10.1/16 now pass; udp from there is still blocked by line 4.
        assert_eq!(changed, 2, "{}", render(&d));
        assert!(d.regions.iter().all(|r| r.change == Change::Widen), "{}", render(&d));
        let (d, changed) = input_regions_match_verdicts(&new, &plain, &packets);
        assert_eq!(changed, 2, "tcp and icmp from 10.1/16\n{}", render(&d));
        assert!(d.regions.iter().all(|r| r.change == Change::Narrow), "{}", render(&d));
    }

    /// Checks that each input packet lies in a region of the diff exactly
    /// when its verdict changes; the diff and how many lie in one.
    fn input_regions_match_verdicts(old: &Compiled, new: &Compiled, packets: &[String]) -> (Diff, usize) {
        let d = diff(old, new);
        let u = Universe::new(&[&old.ruleset, &new.ruleset]);
        let mut changed = 0;
        for text in packets {
            let p = packet::parse(text).expect("packet");
            let verdict = |c: &Compiled| decide(&c.ruleset, &p, &SetContents::new()).verdict;
            let inside = d.regions.iter().any(|r| r.hook == Hook::Input && r.cube.intersects(&u.point(&p)));
            assert_eq!(verdict(old) != verdict(new), inside, "{text}\n{}", render(&d));
            changed += usize::from(inside);
        }
        (d, changed)
    }

    #[test]
    fn adding_offload_is_a_change_of_handling() {
        let old = compile("flowtable f { devices { eth0 } }\npass forward in on eth0 proto tcp\n", "old.pf");
        let new = compile("flowtable f { devices { eth0 } }\npass forward in on eth0 proto tcp offload\n", "new.pf");
        let d = diff(&old, &new);
        assert!(!d.regions.is_empty() && d.regions.iter().all(|r| r.change == Change::Change), "{}", render(&d));
        assert!(render(&d).contains("offload f"), "{}", render(&d));
    }

    #[test]
    fn marks_set_by_match_rules_are_followed_into_the_chain() {
        let old = compile("match in on eth1 proto tcp set mark 1\npass in proto tcp to port 80 mark 1\n", "old.pf");
        let new = compile("match in on eth1 proto tcp set mark 1\nmatch in from 10.0.0.0/8 set mark 2\npass in proto tcp to port 80 mark 1\npass in mark 3\n", "new.pf");
        let mut packets = Vec::new();
        for src in ["10.1.2.3", "192.0.2.1"] {
            for iif in ["eth0", "eth1"] {
                for mark in [0, 1, 2, 3] {
                    for (proto, port) in [("tcp", ":80"), ("tcp", ":22"), ("udp", ":80")] {
                        packets.push(format!("{proto} {src} -> 192.0.2.9{port} in {iif} mark {mark}"));
                    }
                }
            }
        }
        let (d, changed) = input_regions_match_verdicts(&old, &new, &packets);
        // From 10/8 on eth1: marked 2 now, so port 80 closes; mark 3 opens everything not re-marked.
        assert!(changed >= 8, "{changed}\n{}", render(&d));
    }

    #[test]
    fn connection_marks_saved_and_restored_are_followed_into_the_chain() {
        let old = compile("pass in proto tcp to port 80 state new set ct mark 1\npass in ct mark 1\n", "old.pf");
        let new = compile(
            "match in on eth1 proto tcp set mark 2 set ct mark from mark\nmatch in on eth0 set mark from ct mark\npass in proto tcp to port 80 state new set ct mark 1\npass in ct mark 1\npass in mark 3\npass in proto udp ct mark 2 mark 2\n",
            "new.pf",
        );
        let mut packets = Vec::new();
        for iif in ["eth0", "eth1"] {
            for state in ["new", "established", "invalid", "untracked"] {
                for (mark, ct_mark) in [(0, 0), (2, 0), (0, 1), (0, 2), (3, 3), (0, 3), (7, 7)] {
                    for (proto, port) in [("tcp", ":80"), ("tcp", ":22"), ("udp", ":80")] {
                        packets.push(format!(
                            "{proto} 192.0.2.1{port} -> 192.0.2.9{port} in {iif} {state} mark {mark} ct mark {ct_mark}"
                        ));
                    }
                }
            }
        }
        let (d, changed) = input_regions_match_verdicts(&old, &new, &packets);
        // eth0 with ct mark 3 is restored to mark 3 and passes; tcp on eth1 saves mark 2 (ct mark 1 lost).
        assert!(changed >= 10, "{changed}\n{}", render(&d));
    }

    #[test]
    fn every_region_agrees_with_the_evaluator() {
        let old = compile("pass in on eth0 proto tcp to port 1-1000\nreject in proto udp\nset bl dynamic\nblock in from <bl>\npass in proto icmp limit 1/second\n", "old.pf");
        let new = compile("block in proto tcp from 10.0.0.0/8\npass in on eth* proto tcp to port 500-2000\npass in proto udp to port 53\nreject in proto udp\n", "new.pf");
        let d = diff(&old, &new);
        assert!(!d.regions.is_empty());
        // A packet from the middle of each region gets different verdicts or steps.
        for r in &d.regions {
            let pick = |dim| r.cube.get(dim).0[0].0;
            use crate::analyze::space::Dim;
            let u = Universe::new(&[&old.ruleset, &new.ruleset]);
            let proto = pick(Dim::Proto) as u8;
            let ip = |v: u128| -> std::net::IpAddr {
                if r.cube.family == crate::ir::Family::V4 {
                    std::net::Ipv4Addr::from(v as u32).into()
                } else {
                    std::net::Ipv6Addr::from(v).into()
                }
            };
            let p = crate::ir::eval::Packet {
                hook: r.hook,
                iif: Some(u.ifaces[pick(Dim::Iif) as usize].clone()),
                oif: None,
                src: ip(pick(Dim::Src)),
                dst: ip(pick(Dim::Dst)),
                proto,
                sport: crate::ir::names::has_ports(proto).then(|| pick(Dim::Sport) as u16),
                dport: crate::ir::names::has_ports(proto).then(|| pick(Dim::Dport) as u16),
                icmp_type: matches!(proto, 1 | 58).then(|| pick(Dim::Icmp) as u8),
                ct_state: crate::ir::names::CT_STATES[pick(Dim::Ct) as usize].1,
                mark: pick(Dim::Mark) as u32,
                ct_mark: pick(Dim::CtMark) as u32,
                urpf_failed: pick(Dim::Urpf) == 1,
                dst_local: pick(Dim::Local) == 1,
            };
            let (a, b) = (decide(&old.ruleset, &p, &SetContents::new()), decide(&new.ruleset, &p, &SetContents::new()));
            let last = |s: &[Step]| s.last().map(|x| x.verdict);
            // With empty run-time sets and under every limit, the evaluator
            // must agree with the first passing conditional step or the final one.
            let expect = |s: &[Step]| {
                s.iter()
                    .find(|x| x.condition.as_deref().is_some_and(|c| c.starts_with("under")))
                    .map(|x| x.verdict)
                    .or(last(s))
            };
            assert_eq!(Some(a.verdict), expect(&r.old), "old, {} / {}", packet::format(&p), r.packets);
            assert_eq!(Some(b.verdict), expect(&r.new), "new, {} / {}", packet::format(&p), r.packets);
        }
    }
}
