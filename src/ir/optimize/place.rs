//! Where each rule goes: in policy order, a rule joins the latest group of
//! rules of its shape (same tail, same matches but for the merged fields,
//! values disjoint from the group's) when it may move up to the group's
//! place, or starts a place of its own at the end.
//!
//! A rule may move up past another when no packet matches both (a field
//! proves them disjoint), or when both have the same verdict and neither has
//! a side effect (counter, log, limit, quota) that would see which of the two
//! decided. Every packet then meets the rules that match it in the original
//! order, so first-match semantics are unchanged.
//!
//! Lines with a limit, quota, log or named counter group into verdict maps
//! (each keeps its own rule, in its own chain). They have side effects, so
//! they move only past lines that no packet matches as well, and no line
//! moves past them otherwise: when such a line's limit lets a packet
//! through, the lines after the map rule that the packet can match are
//! exactly those after the line in the policy, in their order.
//!
//! Cost: groups are found by hashing the shape, and the rules a mover would
//! pass are looked at from the end backwards, a block of [`BLOCK`] places at
//! a time under one bounding box, and at most [`BUDGET`] places one by one;
//! beyond that the rule is treated as unable to move (a new group starts).

use std::rc::Rc;

use rustc_hash::FxHashMap;

use super::overlap::{disjoint, RuleBox, Taken};
use super::{MergeField, Values};
use crate::ir::{Action, Match, RejectWith, Rule, SetMark};

/// The fields a group may differ in, in order of preference: one field (a
/// plain set), then the pairs that concatenated sets serve.
pub const SHAPES: [&[MergeField]; 11] = {
    use MergeField::*;
    [
        &[Source],
        &[Destination],
        &[SourcePort],
        &[DestinationPort],
        &[InputInterface],
        &[OutputInterface],
        &[Source, DestinationPort],
        &[Destination, DestinationPort],
        &[InputInterface, DestinationPort],
        &[Source, Destination],
        &[InputInterface, Source],
    ]
};

/// Places per bounding box.
const BLOCK: usize = 64;
/// Places a moving rule is compared with one by one, at most.
const BUDGET: usize = 512;

/// Rules that may form one group: the tail they share (`None` for a verdict
/// map, whose lines keep their own), shape, and the matches without the
/// shape's fields.
type Key = (Option<Tail>, usize, Match);
/// A key shared by the index and its slot (a key holds a whole `Match`).
type SharedKey = Rc<Key>;
/// Action, counter, label, reject answer and mark of a set group's lines.
type Tail = (Action, bool, Option<String>, Option<RejectWith>, Vec<SetMark>);

/// One place in the optimized chain: a rule, or a group of rules merged into one.
pub struct Slot<'a> {
    /// Members with their index in the original chain, in policy order.
    pub rules: Vec<(usize, &'a Rule)>,
    /// Per member: it moved past a rule that may match the same packets
    /// (same verdict, no side effects), not only past disjoint ones.
    pub past_same_verdict: Vec<bool>,
    /// Index into [`SHAPES`], once the group has two members.
    pub shape: Option<usize>,
    keys: Vec<SharedKey>,
    /// The first member's matches without the shape's fields.
    rest: Option<Match>,
    /// Per field of the shape: the union of the members' values, and whether
    /// the members are pairwise disjoint in it (one such field suffices).
    taken: Vec<Taken>,
    disjoint: Vec<bool>,
    bbox: RuleBox,
}

/// How a moving rule relates to the rules of a place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meet {
    Disjoint,
    SameVerdict,
    Interacts,
}

/// Whether a rule may be part of a rule over a set (its tail is shared by
/// the group's lines).
pub fn mergeable(r: &Rule) -> bool {
    r.offload.is_none()
        && r.limit.is_none()
        && r.quota.is_none()
        && r.log.is_none()
        && !r.early
        && !r.notrack
        && r.merged.is_none()
        && r.counter_name.is_none()
}

/// Whether a rule may be a line of a verdict map: its own rule in a chain
/// of its own, whatever it does there.
fn dispatchable(r: &Rule) -> bool {
    !r.early && !r.notrack && r.merged.is_none()
}

/// No side effect tells which of two rules decided a packet.
fn quiet(r: &Rule) -> bool {
    !r.counter
        && r.counter_name.is_none()
        && r.log.is_none()
        && r.limit.is_none()
        && r.quota.is_none()
        && !r.early
        && !r.notrack
        && r.set_marks.is_empty()
        && r.offload.is_none()
}

fn keys(r: &Rule) -> Vec<SharedKey> {
    let tail = if mergeable(r) {
        Some((r.action, r.counter, r.label.clone(), r.reject, r.set_marks.clone()))
    } else if dispatchable(r) {
        None
    } else {
        return Vec::new();
    };
    let m = &r.matches;
    SHAPES
        .iter()
        .enumerate()
        .filter(|(_, shape)| shape.iter().all(|f| f.given(m)))
        .map(|(i, shape)| Rc::new((tail.clone(), i, MergeField::cleared(shape, m))))
        .collect()
}

impl<'a> Slot<'a> {
    fn new(index: usize, rule: &'a Rule, keys: Vec<SharedKey>, bbox: RuleBox) -> Slot<'a> {
        Slot {
            rules: vec![(index, rule)],
            past_same_verdict: vec![false],
            shape: None,
            keys,
            rest: None,
            taken: Vec::new(),
            disjoint: Vec::new(),
            bbox,
        }
    }

    fn meets(&self, r: &Rule) -> Meet {
        let first = self.rules[0].1;
        if first.early || r.early || first.notrack || r.notrack {
            return Meet::Interacts;
        }
        let apart = match (&self.rest, self.shape) {
            (Some(rest), Some(shape)) => {
                disjoint(&r.matches, rest)
                    || SHAPES[shape]
                        .iter()
                        .zip(&self.taken)
                        .any(|(f, t)| f.values(&r.matches).is_some_and(|v| !t.overlaps(&v)))
            }
            _ => disjoint(&r.matches, &first.matches),
        };
        if apart {
            Meet::Disjoint
        } else if quiet(first) && quiet(r) && (first.action, first.reject) == (r.action, r.reject) {
            Meet::SameVerdict
        } else {
            Meet::Interacts
        }
    }

    /// Adds `r` as a member of shape `si` if its values keep the members
    /// disjoint (the caller found it under the same key).
    fn join(&mut self, index: usize, r: &'a Rule, si: usize) -> bool {
        let shape = SHAPES[si];
        let Some(new) = shape.iter().map(|f| f.values(&r.matches)).collect::<Option<Vec<Values>>>() else {
            return false;
        };
        match self.shape {
            None => {
                let first = &self.rules[0].1.matches;
                self.taken = shape
                    .iter()
                    .map(|f| {
                        let mut t = Taken::default();
                        t.insert(&f.values(first).expect("keyed by this shape"));
                        t
                    })
                    .collect();
                self.disjoint = vec![true; shape.len()];
                self.rest = Some(MergeField::cleared(shape, first));
            }
            Some(cur) if cur != si => return false,
            Some(_) => {}
        }
        let apart: Vec<bool> =
            self.disjoint.iter().zip(&self.taken).zip(&new).map(|((d, t), v)| *d && !t.overlaps(v)).collect();
        if !apart.iter().any(|&a| a) {
            return false;
        }
        for (t, v) in self.taken.iter_mut().zip(&new) {
            t.insert(v);
        }
        self.disjoint = apart;
        self.shape = Some(si);
        self.rules.push((index, r));
        self.past_same_verdict.push(false);
        true
    }
}

/// The places of a chain's rules, in their new order.
pub fn place(rules: &[Rule]) -> Vec<Slot<'_>> {
    let mut slots: Vec<Slot<'_>> = Vec::with_capacity(rules.len());
    let mut blocks: Vec<RuleBox> = Vec::new();
    // Keys hold whole matches: FxHash, not SipHash (no untrusted input chooses them).
    let mut open: FxHashMap<SharedKey, usize> = FxHashMap::default();
    for (index, rule) in rules.iter().enumerate() {
        let keys = keys(rule);
        let rbox = RuleBox::of(&rule.matches);
        let candidates: Vec<(usize, usize)> = keys.iter().filter_map(|k| open.get(k).map(|&s| (s, k.1))).collect();
        let mut joined = None;
        if let Some(lowest) = candidates.iter().map(|c| c.0).min() {
            let (floor, same) = floor(rule, &rbox, &slots, &blocks, lowest);
            for &(s, si) in candidates.iter().filter(|c| c.0 >= floor) {
                if slots[s].join(index, rule, si) {
                    *slots[s].past_same_verdict.last_mut().expect("just joined") = same.iter().any(|&u| u > s);
                    joined = Some((s, si));
                    break;
                }
            }
        }
        match joined {
            Some((s, si)) => {
                slots[s].bbox.widen(&rbox);
                blocks[s / BLOCK].widen(&rbox);
                // A group has one shape: its member's other keys no longer lead to it.
                for k in std::mem::take(&mut slots[s].keys) {
                    if k.1 != si && open.get(&k) == Some(&s) {
                        open.remove(&k);
                    }
                }
            }
            None => {
                let s = slots.len();
                for k in &keys {
                    open.insert(Rc::clone(k), s);
                }
                if s.is_multiple_of(BLOCK) {
                    blocks.push(RuleBox::NONE);
                }
                blocks[s / BLOCK].widen(&rbox);
                slots.push(Slot::new(index, rule, keys, rbox));
            }
        }
    }
    slots
}

/// The lowest place (at least `lowest`) that `rule` may move up to, and the
/// places it would pass that may match the same packets with the same verdict.
fn floor(rule: &Rule, rbox: &RuleBox, slots: &[Slot<'_>], blocks: &[RuleBox], lowest: usize) -> (usize, Vec<usize>) {
    let mut same = Vec::new();
    let mut budget = BUDGET;
    let mut end = slots.len();
    while end > lowest + 1 {
        let start = ((end - 1) / BLOCK * BLOCK).max(lowest + 1);
        if !blocks[(end - 1) / BLOCK].apart(rbox) {
            for u in (start..end).rev() {
                if slots[u].bbox.apart(rbox) {
                    continue;
                }
                budget -= 1;
                match slots[u].meets(rule) {
                    _ if budget == 0 => return (u, same),
                    Meet::Disjoint => {}
                    Meet::SameVerdict => same.push(u),
                    Meet::Interacts => return (u, same),
                }
            }
        }
        end = start;
    }
    (lowest, same)
}
