//! One feed update: fetch, parse, validate against the last good copy, cache
//! it, and the nft transaction that swaps a feed set's elements in place.

use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use nftables::schema::{Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Set, SetType, SetTypeValue};
use nftables::types::NfFamily;

use super::cache::{Cache, Meta};
use super::fetch::{self, Fetched, Validators};
use super::normalize::{self, Parsed};
use super::FeedConfig;
use crate::ir::{nft_set_name, Family};
use crate::nft::emit::net_expr;

/// How an update attempt ended. Only `Updated` changes the cached copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Updated,
    NotModified,
    /// The new copy was refused (or could not be fetched); the last good
    /// copy, if any, stays in force.
    Kept { reason: String },
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Updated => "ok",
            Outcome::NotModified => "not-modified",
            Outcome::Kept { .. } => "kept-last-good",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// What the cache holds now.
    pub meta: Meta,
    /// Junk lines, host bits, skipped header.
    pub warnings: Vec<String>,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Fetches a feed and, if the new copy is good, makes it the cached copy.
/// Errors are only about the cache directory itself.
pub fn refresh(cfg: &FeedConfig, cache: &Cache, now: u64) -> Result<Report, String> {
    // `meta.source` is where the cached copy came from. Only a copy of this
    // same source counts for the shrink check and the conditional request;
    // a copy of an older source still stays in force until a good new one.
    let prev = cache.meta(&cfg.name)?;
    let same = prev.as_ref().filter(|m| m.fetched_at > 0 && m.source == cfg.source && m.format == cfg.format.name() && m.column == cfg.column);
    let known = same.map(Meta::validators).unwrap_or_default();
    let prev_total = same.map_or(0, |m| m.v4 + m.v6);
    let mut base = prev.unwrap_or_else(|| Meta {
        source: cfg.source.clone(),
        format: cfg.format.name().to_string(),
        column: cfg.column,
        ..Meta::default()
    });
    base.checked_at = now;
    let (outcome, warnings) = match fetch::fetch(&cfg.source, &known) {
        Err(e) => (Outcome::Kept { reason: format!("download failed: {e}") }, Vec::new()),
        Ok(Fetched::NotModified) => (Outcome::NotModified, Vec::new()),
        Ok(Fetched::Body { text, validators }) => match normalize::parse(&text, cfg.format, cfg.column) {
            Err(e) => (Outcome::Kept { reason: e.to_string() }, Vec::new()),
            Ok(parsed) => {
                let warnings = warnings(&parsed);
                match validate(&parsed, prev_total, cfg) {
                    Err(reason) => (Outcome::Kept { reason }, warnings),
                    Ok(()) => {
                        let meta = good_meta(cfg, base.clone(), &parsed, validators, now);
                        cache.store(&cfg.name, &parsed.nets().collect::<Vec<_>>(), &meta)?;
                        return Ok(Report { outcome: Outcome::Updated, meta, warnings });
                    }
                }
            }
        },
    };
    base.status = outcome.status().to_string();
    base.message = match &outcome {
        Outcome::Kept { reason } => Some(reason.clone()),
        _ => None,
    };
    cache.store_meta(&cfg.name, &base)?;
    Ok(Report { outcome, meta: base, warnings })
}

fn good_meta(cfg: &FeedConfig, base: Meta, parsed: &Parsed, v: Validators, now: u64) -> Meta {
    Meta {
        source: cfg.source.clone(),
        format: cfg.format.name().to_string(),
        column: cfg.column,
        etag: v.etag,
        last_modified: v.last_modified,
        fetched_at: now,
        v4: parsed.v4.len(),
        v6: parsed.v6.len(),
        status: Outcome::Updated.status().to_string(),
        message: None,
        ..base
    }
}

fn warnings(p: &Parsed) -> Vec<String> {
    let mut out: Vec<String> = p.junk.warning().into_iter().collect();
    if p.host_bits > 0 {
        out.push(format!("{} entries had host bits set (like 10.1.2.3/24) and were taken as their network", p.host_bits));
    }
    if let Some(line) = p.header {
        out.push(format!("line {line} taken as the CSV header"));
    }
    out
}

/// Is a freshly parsed copy fit to replace one of `prev_total` entries?
pub fn validate(p: &Parsed, prev_total: usize, cfg: &FeedConfig) -> Result<(), String> {
    if let Some((line, text)) = &p.truncated {
        return Err(format!("truncated: the last line ({line}: {text:?}) is cut off"));
    }
    let total = p.total();
    if total == 0 {
        return Err(match p.junk.count {
            0 => "empty: the feed lists no addresses".to_string(),
            n => format!("garbage: no addresses, {n} junk lines"),
        });
    }
    if p.junk.count > p.entries {
        return Err(format!("garbage: {} of {} lines are not addresses", p.junk.count, p.junk.count + p.entries));
    }
    if total > cfg.max_entries {
        return Err(format!("too big: {total} entries after aggregation, max-entries is {}", cfg.max_entries));
    }
    let floor = prev_total as u128 * u128::from(100 - cfg.max_shrink_percent.min(100)) / 100;
    if (total as u128) < floor {
        let lost = 100 - total * 100 / prev_total;
        return Err(format!(
            "shrank from {prev_total} to {total} entries (-{lost}%), more than max-shrink {}%",
            cfg.max_shrink_percent
        ));
    }
    Ok(())
}

/// Replaces the elements of a feed's two sets in one transaction: flush,
/// then add. Nothing else in the table is touched.
pub fn replace_batch(table: &str, feed: &str, nets: &[IpNet]) -> Nftables<'static> {
    let mut objs = Vec::new();
    for family in [Family::V4, Family::V6] {
        let name = nft_set_name(feed, family);
        let set_type = if family == Family::V4 { SetType::Ipv4Addr } else { SetType::Ipv6Addr };
        let set = Set {
            family: NfFamily::INet,
            table: table.to_string().into(),
            name: name.clone().into(),
            set_type: SetTypeValue::Single(set_type),
            ..Default::default()
        };
        objs.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(Box::new(set)))));
        let elems: Vec<_> = nets.iter().filter(|n| n.addr().is_ipv4() == (family == Family::V4)).map(|&n| net_expr(n)).collect();
        if !elems.is_empty() {
            objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Element(Element {
                family: NfFamily::INet,
                table: table.to_string().into(),
                name: name.into(),
                elem: elems.into(),
            }))));
        }
    }
    Nftables { objects: objs.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::Format;

    fn cfg(max_entries: usize, max_shrink_percent: u64) -> FeedConfig {
        FeedConfig {
            name: "t".into(),
            source: "x".into(),
            format: Format::Plain,
            refresh: super::super::DEFAULT_REFRESH,
            max_entries,
            max_shrink_percent,
            column: 1,
        }
    }

    fn parsed(text: &str) -> Parsed {
        normalize::parse(text, Format::Plain, 1).unwrap()
    }

    #[test]
    fn validation_reasons() {
        let three = parsed("192.0.2.1\n192.0.2.3\n192.0.2.5\n");
        assert_eq!(validate(&three, 0, &cfg(10, 50)), Ok(()));
        assert!(validate(&three, 0, &cfg(2, 50)).unwrap_err().starts_with("too big: 3 entries"));
        assert!(validate(&three, 10, &cfg(10, 50)).unwrap_err().starts_with("shrank from 10 to 3 entries (-70%)"));
        assert_eq!(validate(&three, 6, &cfg(10, 50)), Ok(()), "exactly at the limit");
        assert!(validate(&parsed("# nothing\n"), 0, &cfg(10, 50)).unwrap_err().starts_with("empty"));
        assert!(validate(&parsed("a\nb\n192.0.2.1\n"), 0, &cfg(10, 50)).unwrap_err().starts_with("garbage: 2 of 3"));
    }
}
