//! Which feeds block: protected addresses ([`crate::guard::Protected`]) are
//! cut out of every feed that a block rule uses, so a feed can never lock
//! out your own network.

use std::collections::BTreeSet;

use crate::ir::{Action, AddrMatch, Ruleset, SetKind};

/// Names of the feeds that a block or reject rule matches on.
pub fn blocking_feeds(rs: &Ruleset) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in rs.chains.iter().flat_map(|c| &c.rules).filter(|r| r.action != Action::Pass) {
        for m in [&rule.matches.src, &rule.matches.dst] {
            if let AddrMatch::Set { negated: false, set } = m {
                if let Some(SetKind::Feed { feed }) = rs.set(set).map(|s| &s.kind) {
                    out.insert(feed.clone());
                }
            }
        }
    }
    out
}
