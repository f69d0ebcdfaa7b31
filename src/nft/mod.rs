//! nftables back end: emitting the IR as nft JSON or script, and loading it
//! into the kernel atomically, touching nothing but phantomc's own table.

pub mod apply;
pub mod block;
pub mod emit;
pub mod iptables_save;
mod json;
pub mod kernel;
pub mod legacy;
pub mod record;
pub mod rollback;
mod run;
pub mod script;
pub mod session;
pub mod tables;
pub mod wire;

use ipnet::IpNet;
use nftables::expr::Expression;
use nftables::schema::{Element, NfCmd, NfListObject, NfObject, Nftables};
use nftables::types::NfFamily;

pub use emit::{build, match_chain, Elements, NftTable, SetElem, EARLY_CHAIN, EARLY_OUT_CHAIN};
pub use json::{counts_elements, to_json, to_json_pretty};
pub use run::{in_scratch_netns, objects, write_to_child, Nft, NftError};

use crate::diag::Diag;
use crate::ir::feed_layout::{self, Kind};
use crate::ir::{Compiled, Family, Ruleset, SetKind};

/// Elements of the live run-time and feed sets, so a reload keeps what
/// `phantomc block` and feed updates put there. Read over netlink; a set the
/// live table does not have yet (new in this policy) is empty.
pub fn live_elements(rs: &Ruleset) -> Result<Elements, NftError> {
    live_elements_of(rs, |_| true)
}

/// [`live_elements`] of the run-time and feed sets that `wanted` names.
pub fn live_elements_of(rs: &Ruleset, wanted: impl Fn(&str) -> bool) -> Result<Elements, NftError> {
    let mut out = Elements::default();
    if !kernel::table_exists(&rs.table).map_err(NftError::Kernel)? {
        return Ok(out);
    }
    let runtime = rs
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Dynamic { .. } | SetKind::Feed { .. }) && wanted(&s.nft_name));
    for def in runtime {
        let elems = match def.kind {
            SetKind::Feed { .. } => live_feed_set(&rs.table, &def.nft_name, def.family).map_err(NftError::Kernel)?,
            _ => kernel::set_elements(&rs.table, &def.nft_name).map_err(NftError::Kernel)?,
        };
        out.by_set.insert(def.nft_name.clone(), elems);
    }
    Ok(out)
}

/// A feed set's networks, joined from its kernel sets (see [`feed_layout`]).
pub fn live_feed_set(table: &str, set: &str, family: Family) -> std::io::Result<Vec<SetElem>> {
    let mut nets = Vec::new();
    for k in feed_layout::kernel_sets(set, family) {
        match k.kind {
            Kind::Hash(len) => nets.extend(kernel::hash_set_nets(table, &k.name, len)?),
            Kind::Interval => nets.extend(kernel::set_elements(table, &k.name)?.into_iter().map(|e| e.net)),
            Kind::Prefilter(_) => {}
        }
    }
    Ok(feed_layout::join(nets).into_iter().map(|net| SetElem { net, timeout: None, comment: None }).collect())
}

/// Maps an nft error about a script line back to the policy rule that line
/// came from (every rule carries its origin as a comment).
pub fn locate_script_error(stderr: &str, script: &str, rs: &Ruleset) -> Option<Diag> {
    // nft reports `/dev/stdin:LINE:COL-COL: Error: message`.
    let (pos, message) =
        stderr.lines().find_map(|l| l.strip_prefix("/dev/stdin:")).and_then(|rest| rest.split_once(": Error: "))?;
    let line: usize = pos.split(':').next()?.parse().ok()?;
    let text = script.lines().nth(line.checked_sub(1)?)?;
    let comment = text.rsplit_once("comment \"")?.1.trim_end_matches('"');
    let id = comment.split(' ').next()?;
    let origin = rs
        .chains
        .iter()
        .flat_map(|c| c.rules.iter().map(|r| &r.origin))
        .chain(rs.nat.iter().map(|n| &n.origin))
        .find(|o| o.id == id)?;
    Some(
        Diag::error("nft-refused", origin.span, format!("nft refused the rule compiled from {id}"), message.trim())
            .with_help(format!("compiled nft rule: {}", text.trim())),
    )
}

/// Run-time block entries changed in one transaction (`phantomc block` /
/// `unblock`): `deletes` go first, so a network can replace the entries it covers.
pub fn elements_batch(table: &str, deletes: &[(String, IpNet)], adds: &[(String, SetElem)]) -> Nftables<'static> {
    let obj = |set: &str, elem: Expression<'static>| {
        NfListObject::Element(Element {
            family: NfFamily::INet,
            table: table.to_string().into(),
            name: set.to_string().into(),
            elem: vec![elem].into(),
        })
    };
    let mut objects: Vec<NfObject<'static>> =
        deletes.iter().map(|(set, net)| NfObject::CmdObject(NfCmd::Delete(obj(set, emit::net_expr(*net))))).collect();
    objects.extend(adds.iter().map(|(set, e)| NfObject::CmdObject(NfCmd::Add(obj(set, e.expr())))));
    Nftables { objects: objects.into() }
}

/// sha256 (hex) of a policy's compiled nft JSON without run-time or feed
/// entries: names a ruleset, and stays the same when only blocks change.
pub fn policy_hash(rs: &Ruleset) -> String {
    use sha2::{Digest, Sha256};
    let json = to_json(&build(rs, &Elements::default()).replace_batch());
    Sha256::digest(json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes phantomc's table and nothing else.
pub fn delete_batch(table: &str) -> Nftables<'static> {
    Nftables { objects: vec![NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(emit::table(table))))].into() }
}

/// The nft script of a compiled policy, with a header naming its source.
pub fn script_for(c: &Compiled, table: &NftTable) -> String {
    let main = c.sources.files().first().map_or("policy", |f| f.name.as_str());
    let header = format!(
        "Generated by phantomc from {main}; do not edit.\nLoads atomically: replaces table inet {} and nothing else.\n{} rules",
        table.name,
        table.rule_count()
    );
    script::script(table, &header)
}
