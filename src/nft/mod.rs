//! nftables back end: emitting the IR as nft JSON or script, and loading it
//! into the kernel atomically, touching nothing but phantomc's own table.

pub mod apply;
pub mod block;
pub mod emit;
pub mod kernel_rules;
pub mod rollback;
mod run;
pub mod script;
pub mod session;

use std::net::IpAddr;

use ipnet::IpNet;
use nftables::expr::Expression;
use nftables::schema::{Element, NfCmd, NfListObject, NfObject, Nftables};
use nftables::types::NfFamily;

pub use emit::{build, Elements, NftTable, SetElem, EARLY_CHAIN};
pub use run::{objects, to_json, to_json_value, write_to_child, Nft, NftError};

use crate::diag::Diag;
use crate::ir::{Compiled, Ruleset, SetKind};

/// Elements of the live run-time and feed sets, so a reload keeps what
/// `phantomc block` and feed updates put there.
pub fn live_elements(nft: &Nft, rs: &Ruleset) -> Result<Elements, NftError> {
    let mut out = Elements::default();
    if !nft.table_exists(&rs.table)? {
        return Ok(out);
    }
    let runtime = rs.sets.iter().filter(|s| matches!(s.kind, SetKind::Dynamic { .. } | SetKind::Feed { .. }));
    for def in runtime {
        // A set the live table does not have yet (new in this policy) is empty.
        let Ok(listing) = nft.run(&["-j", "list", "set", "inet", &rs.table, &def.nft_name], None) else { continue };
        let v: serde_json::Value = serde_json::from_str(&listing).map_err(|e| NftError::BadOutput(e.to_string()))?;
        let elems = objects(&v)
            .filter_map(|o| o.get("set"))
            .flat_map(|s| s.get("elem").and_then(|e| e.as_array()).into_iter().flatten())
            .filter_map(parse_live_elem)
            .collect();
        out.by_set.insert(def.nft_name.clone(), elems);
    }
    Ok(out)
}

/// One element of `nft -j list`: `"1.2.3.4"`, `{"prefix": ...}`, `{"range": ...}`
/// (kept only if it is one prefix) or `{"elem": {"val": ..., "expires": N}}`.
pub fn parse_live_elem(v: &serde_json::Value) -> Option<SetElem> {
    if let Some(e) = v.get("elem") {
        let net = parse_net(e.get("val")?)?;
        let timeout = e.get("expires").and_then(|x| x.as_u64()).map(|x| u32::try_from(x.max(1)).unwrap_or(u32::MAX));
        let comment = e.get("comment").and_then(|c| c.as_str()).map(str::to_string);
        return Some(SetElem { net, timeout, comment });
    }
    Some(SetElem { net: parse_net(v)?, timeout: None, comment: None })
}

fn parse_net(v: &serde_json::Value) -> Option<IpNet> {
    if let Some(s) = v.as_str() {
        return s.parse::<IpAddr>().ok().map(IpNet::from);
    }
    if let Some(p) = v.get("prefix") {
        let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
        return IpNet::new(addr, u8::try_from(p.get("len")?.as_u64()?).ok()?).ok();
    }
    None
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
