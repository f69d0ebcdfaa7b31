//! Which cubes of many rules may intersect a query cube, without testing
//! every rule: a bounding-box tree. Per address family, each cube's bounding
//! interval in a few selective fields (destination port, source, destination)
//! is a leaf; leaves are sorted by those fields and every tree node keeps the
//! bounding box of the leaves below it, so a query skips every subtree whose
//! box misses the query's box in any of the fields.

use crate::ir::Family;

use super::space::{Cube, Dim};

/// Fields boxed, in sort order.
const FIELDS: [Dim; 3] = [Dim::Dport, Dim::Src, Dim::Dst];

type BoxOf = [(u128, u128); 3];

fn bbox(c: &Cube) -> BoxOf {
    FIELDS.map(|d| {
        let r = &c.get(d).0;
        (r.first().map_or(1, |x| x.0), r.last().map_or(0, |x| x.1))
    })
}

/// Both boxes non-empty and overlapping in every field.
fn overlaps(a: &BoxOf, b: &BoxOf) -> bool {
    a.iter().zip(b).all(|(x, y)| x.0 <= x.1 && y.0 <= y.1 && x.0 <= y.1 && y.0 <= x.1)
}

fn union(a: &BoxOf, b: &BoxOf) -> BoxOf {
    let empty = |x: &BoxOf| x[0].0 > x[0].1;
    match (empty(a), empty(b)) {
        (true, _) => *b,
        (_, true) => *a,
        _ => std::array::from_fn(|i| (a[i].0.min(b[i].0), a[i].1.max(b[i].1))),
    }
}

/// A complete binary tree over sorted leaves (1-based heap layout).
struct Tree {
    owners: Vec<usize>,
    /// Box of each node; empty nodes hold an empty box (lo > hi).
    boxes: Vec<BoxOf>,
    size: usize,
}

const EMPTY: BoxOf = [(1, 0); 3];

impl Tree {
    fn new(mut leaves: Vec<(BoxOf, usize)>) -> Tree {
        leaves.sort_unstable();
        let size = leaves.len().next_power_of_two().max(1);
        let mut boxes = vec![EMPTY; 2 * size];
        for (i, (b, _)) in leaves.iter().enumerate() {
            boxes[size + i] = *b;
        }
        for n in (1..size).rev() {
            boxes[n] = union(&boxes[2 * n], &boxes[2 * n + 1]);
        }
        Tree { owners: leaves.into_iter().map(|(_, o)| o).collect(), boxes, size }
    }

    fn query(&self, q: &BoxOf, out: &mut Vec<usize>) {
        let mut stack = vec![1usize];
        while let Some(node) = stack.pop() {
            if !overlaps(&self.boxes[node], q) {
                continue;
            }
            if node >= self.size {
                out.push(self.owners[node - self.size]);
            } else {
                stack.extend([2 * node + 1, 2 * node]);
            }
        }
    }
}

pub struct CubeIndex {
    /// Per family: v4, v6.
    trees: [Tree; 2],
}

fn slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl CubeIndex {
    /// Indexes `owners[i]`'s cubes under owner `i`.
    pub fn new(owners: &[Vec<Cube>]) -> CubeIndex {
        let trees = [Family::V4, Family::V6].map(|family| {
            let leaves = owners
                .iter()
                .enumerate()
                .flat_map(|(i, cubes)| cubes.iter().filter(|c| c.family == family).map(move |c| (bbox(c), i)))
                .collect();
            Tree::new(leaves)
        });
        CubeIndex { trees }
    }

    /// Owners that may have a cube intersecting any of `qs` (a superset), sorted.
    pub fn candidates_any(&self, qs: &[Cube]) -> Vec<usize> {
        let mut out = Vec::new();
        for q in qs {
            self.trees[slot(q.family)].query(&bbox(q), &mut out);
        }
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
            let cand = index.candidates_any(std::slice::from_ref(q));
            let truth: Vec<usize> = (0..cubes.len()).filter(|&j| cubes[j].iter().any(|c| c.intersects(q))).collect();
            assert!(truth.iter().all(|t| cand.binary_search(t).is_ok()), "missed an intersecting rule");
            pruned += cubes.len() - cand.len();
        }
        assert!(pruned > cubes.len() * cubes.len() / 2, "the index prunes most pairs ({pruned})");
    }
}
