//! Which cubes of many rules may intersect a query cube, without testing
//! every rule: per address family, the intervals of each cube in a few
//! selective fields (destination port, source, destination) in an interval
//! index; a query takes the field that yields the fewest candidates.

use crate::ir::Family;

use super::space::{Cube, Dim};

/// Fields indexed, most selective first for typical policies.
const FIELDS: [Dim; 3] = [Dim::Dport, Dim::Src, Dim::Dst];

/// Intervals sorted by start, with a max-end segment tree over that order:
/// a query visits only subtrees that hold an overlapping interval.
struct Intervals {
    /// (lo, hi, owner), sorted by lo.
    items: Vec<(u128, u128, usize)>,
    /// `max_hi[node]` over the items below a node (1-based heap layout).
    max_hi: Vec<u128>,
    size: usize,
}

impl Intervals {
    fn new(mut items: Vec<(u128, u128, usize)>) -> Intervals {
        items.sort_unstable();
        let size = items.len().next_power_of_two().max(1);
        let mut max_hi = vec![0u128; 2 * size];
        for (i, it) in items.iter().enumerate() {
            max_hi[size + i] = it.1;
        }
        for n in (1..size).rev() {
            max_hi[n] = max_hi[2 * n].max(max_hi[2 * n + 1]);
        }
        Intervals { items, max_hi, size }
    }

    /// Owners of intervals overlapping `lo..=hi`, or `None` once more than `cap`.
    fn query(&self, lo: u128, hi: u128, cap: usize) -> Option<Vec<usize>> {
        // Only items starting at or before `hi` can overlap.
        let end = self.items.partition_point(|it| it.0 <= hi);
        let mut out = Vec::new();
        let mut stack = vec![(1usize, 0usize, self.size)];
        while let Some((node, from, to)) = stack.pop() {
            if from >= end || self.max_hi[node] < lo {
                continue;
            }
            if to - from == 1 {
                out.push(self.items[from].2);
                if out.len() > cap {
                    return None;
                }
                continue;
            }
            let mid = (from + to) / 2;
            stack.push((2 * node + 1, mid, to));
            stack.push((2 * node, from, mid));
        }
        Some(out)
    }
}

pub struct CubeIndex {
    /// Per family (v4, v6), per field of [`FIELDS`].
    fields: [Vec<Intervals>; 2],
}

fn slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The intervals of a field; a long list counts as its bounding interval.
fn spans(c: &Cube, d: Dim) -> Vec<(u128, u128)> {
    let r = &c.get(d).0;
    match r.as_slice() {
        [] => Vec::new(),
        few if few.len() <= 8 => few.to_vec(),
        many => vec![(many[0].0, many[many.len() - 1].1)],
    }
}

impl CubeIndex {
    /// Indexes `owners[i]`'s cubes under owner `i`.
    pub fn new(owners: &[Vec<Cube>]) -> CubeIndex {
        let fields = [Family::V4, Family::V6].map(|family| {
            FIELDS
                .iter()
                .map(|&d| {
                    let items = owners
                        .iter()
                        .enumerate()
                        .flat_map(|(i, cubes)| cubes.iter().filter(|c| c.family == family).map(move |c| (c, i)))
                        .flat_map(|(c, i)| spans(c, d).into_iter().map(move |(lo, hi)| (lo, hi, i)))
                        .collect();
                    Intervals::new(items)
                })
                .collect()
        });
        CubeIndex { fields }
    }

    /// Owners that may have a cube intersecting `q` (a superset), sorted.
    pub fn candidates(&self, q: &Cube) -> Vec<usize> {
        let mut best: Option<Vec<usize>> = None;
        'fields: for (field, idx) in FIELDS.iter().zip(&self.fields[slot(q.family)]) {
            let cap = best.as_ref().map_or(usize::MAX, |b| b.len());
            let mut found = Vec::new();
            for (lo, hi) in spans(q, *field) {
                match idx.query(lo, hi, cap.saturating_sub(found.len())) {
                    Some(more) => found.extend(more),
                    None => continue 'fields,
                }
            }
            best = Some(found);
        }
        let mut out = best.unwrap_or_default();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Owners that may intersect any of `qs`, sorted.
    pub fn candidates_any(&self, qs: &[Cube]) -> Vec<usize> {
        let mut out: Vec<usize> = qs.iter().flat_map(|q| self.candidates(q)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::space::Universe;

    #[test]
    fn candidates_are_a_superset_of_the_intersecting_rules() {
        let mut text = String::new();
        for i in 0..300 {
            text += &match i % 4 {
                0 => format!("pass in proto tcp from 10.{}.0.0/16 to port {}\n", i % 7, 1000 + i),
                1 => format!("block in proto udp to port {}-{}\n", i * 10, i * 10 + 40),
                2 => format!("pass in from fd00:{:x}::/32\n", i),
                _ => format!("reject in proto tcp to 192.0.2.{} port 1000-1100\n", i % 250),
            };
        }
        let c = crate::ir::compile("t.pf", &text).expect("compiles");
        let u = Universe::new(&[&c.ruleset]);
        let rules = &c.ruleset.chains[0].rules;
        let cubes: Vec<Vec<Cube>> = rules.iter().map(|r| u.cubes(&c.ruleset, &r.matches)).collect();
        let index = CubeIndex::new(&cubes);
        let mut pruned = 0;
        for q in cubes.iter().flatten() {
            let cand = index.candidates(q);
            let truth: Vec<usize> = (0..cubes.len()).filter(|&j| cubes[j].iter().any(|c| c.intersects(q))).collect();
            assert!(truth.iter().all(|t| cand.binary_search(t).is_ok()), "missed an intersecting rule");
            pruned += cubes.len() - cand.len();
        }
        assert!(pruned > cubes.len() * cubes.len() / 2, "the index prunes most pairs ({pruned})");
    }
}
