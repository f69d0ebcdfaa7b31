//! Which cubes of many rules may intersect a query cube, without testing
//! every rule: per address family, the intervals of each cube in a few
//! selective fields (destination port, source, destination) in an interval
//! index; the fields are searched side by side and the first search to
//! finish (the most selective field for that query) gives the candidates.

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

    /// A lazy search for the owners of intervals overlapping any of `ranges`.
    fn walk(&self, ranges: Vec<(u128, u128)>) -> Walk<'_> {
        Walk { iv: self, ranges, stack: Vec::new(), end: 0, found: Vec::new() }
    }
}

/// A depth-first search of one [`Intervals`] that can be advanced step by
/// step, so several fields can be searched side by side and the search that
/// finishes first (the most selective field for this query) wins.
struct Walk<'a> {
    iv: &'a Intervals,
    /// Query ranges not yet started (the current one is on the stack).
    ranges: Vec<(u128, u128)>,
    /// (node, from, to, lo of the current range)
    stack: Vec<(usize, usize, usize, u128)>,
    /// Items at or after this index start after the current range.
    end: usize,
    found: Vec<usize>,
}

impl Walk<'_> {
    /// Advances by one tree node; true once the search is complete.
    fn step(&mut self) -> bool {
        let Some((node, from, to, lo)) = self.stack.pop() else {
            let Some((lo, hi)) = self.ranges.pop() else { return true };
            self.end = self.iv.items.partition_point(|it| it.0 <= hi);
            self.stack.push((1, 0, self.iv.size, lo));
            return false;
        };
        if from >= self.end || self.iv.max_hi[node] < lo {
            return false;
        }
        if to - from == 1 {
            self.found.push(self.iv.items[from].2);
        } else {
            let mid = (from + to) / 2;
            self.stack.push((2 * node + 1, mid, to, lo));
            self.stack.push((2 * node, from, mid, lo));
        }
        false
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
        let mut walks: Vec<Walk<'_>> = FIELDS.iter().zip(&self.fields[slot(q.family)]).map(|(f, iv)| iv.walk(spans(q, *f))).collect();
        let mut out = 'search: loop {
            for w in &mut walks {
                if w.step() {
                    break 'search std::mem::take(&mut w.found);
                }
            }
        };
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
