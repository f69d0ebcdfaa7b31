//! One feed update: fetch, parse, validate against the last good copy, cache
//! it, and the nft transaction that swaps a feed set's elements in place.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use nftables::schema::{Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Set, SetType, SetTypeValue};
use nftables::types::NfFamily;

use super::cache::{Cache, Meta};
use super::fetch::{self, Fetched, Validators};
use super::normalize::{self, Parsed};
use super::parts;
use super::provider::{self, Download};
use super::FeedConfig;
use crate::guard::{self, Operator, Protected};
use crate::ir::{feed_layout, nft_set_name, Family, Ruleset};
use crate::nft::emit::feed_elem;
use crate::nft::{Nft, NftError};

/// How an update attempt ended. Only `Updated` changes the cached copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Updated,
    NotModified,
    /// The new copy was refused (or could not be fetched); the last good
    /// copy, if any, stays in force.
    Kept {
        reason: String,
    },
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
    /// Junk lines (host bits set among them), skipped header.
    pub warnings: Vec<String>,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// [`refresh_with`] without a lockout check: for tests and tools that load
/// nothing ([`update_feeds`], which loads, goes through the guard).
pub fn refresh(cfg: &FeedConfig, cache: &Cache, now: u64) -> Result<Report, String> {
    refresh_with(cfg, cache, now, &mut |_| Ok(()))
}

/// Fetches a feed and, if the new copy is good and `accept` takes it (the
/// lockout guard), makes it the cached copy; a refused copy never becomes
/// the last good one. Errors are only about the cache directory itself.
pub fn refresh_with(
    cfg: &FeedConfig,
    cache: &Cache,
    now: u64,
    accept: &mut dyn FnMut(&[IpNet]) -> Result<(), String>,
) -> Result<Report, String> {
    // `meta.source` is where the cached copy came from. Only a copy of this
    // same source counts for the shrink check and the conditional request;
    // a copy of an older source still stays in force until a good new one.
    let prev = cache.meta(&cfg.name)?;
    let same = prev.as_ref().filter(|m| {
        m.fetched_at > 0 && m.source == cfg.source && m.format == cfg.format.name() && m.column == cfg.column
    });
    let known = same.map(Meta::validators).unwrap_or_default();
    let prev_total = same.map_or(0, |m| m.v4 + m.v6);
    // A URL's pause holds even before the feed's first good copy.
    let prev_parts = prev.as_ref().filter(|m| m.source == cfg.source).map(|m| m.parts.clone()).unwrap_or_default();
    let mut base = prev.unwrap_or_else(|| Meta {
        source: cfg.source.clone(),
        format: cfg.format.name().to_string(),
        column: cfg.column,
        ..Meta::default()
    });
    base.checked_at = now;
    // Read before the file itself: an edit in between is seen as a change next time.
    base.source_mtime_ns = local_mtime_ns(&cfg.source);
    base.provider = cfg.provider_name().map(str::to_string);
    base.retry_at = None;
    // A feed of several URLs pauses, and is conditional, per URL.
    let several = !cfg.more_sources.is_empty();
    let pause = |e: &provider::DownloadError, failures: u32| backoff(cfg, e, failures, now);
    let (downloaded, mut parts) = match several {
        true => {
            let (d, records) = parts::download(cfg, cache, &prev_parts, now, &pause)?;
            (d, Some(records))
        }
        false => (provider::download(cfg, &cfg.source, &known, now), None),
    };
    let (outcome, warnings) = match downloaded {
        Err(e) => {
            base.retry_at = if several { None } else { pause(&e, base.failures + 1) };
            (Outcome::Kept { reason: format!("download failed: {e}") }, Vec::new())
        }
        Ok(Download { fetched: Fetched::NotModified, .. }) => (Outcome::NotModified, Vec::new()),
        Ok(Download { fetched: Fetched::Body { text, validators }, notes }) => {
            match normalize::parse(&text, cfg.format, cfg.column) {
                Err(e) => (Outcome::Kept { reason: e.to_string() }, notes),
                Ok(parsed) => {
                    let mut warnings = warnings(&parsed);
                    warnings.extend(notes);
                    let nets: Vec<IpNet> = parsed.nets().collect();
                    match validate(&parsed, prev_total, cfg).and_then(|()| accept(&nets)) {
                        Err(reason) => (Outcome::Kept { reason }, warnings),
                        Ok(()) => {
                            let mut meta = good_meta(cfg, base.clone(), &parsed, validators, now);
                            meta.failures = 0;
                            meta.next_at = next_attempt(cfg, &meta);
                            if let Some(p) = parts.take() {
                                p.accepted(cache, &cfg.name, &mut meta, now)?;
                            }
                            cache.store(&cfg.name, &nets, &meta)?;
                            return Ok(Report { outcome: Outcome::Updated, meta, warnings });
                        }
                    }
                }
            }
        }
    };
    base.status = outcome.status().to_string();
    base.message = match &outcome {
        Outcome::Kept { reason } => Some(reason.clone()),
        _ => None,
    };
    if let Some(p) = parts {
        base.parts = p.if_refused;
    }
    if let Outcome::Kept { reason } = &outcome {
        (base.last_error, base.last_error_at) = (Some(reason.clone()), Some(now));
    }
    let failed = matches!(outcome, Outcome::Kept { .. });
    base.failures = if failed { base.failures + 1 } else { 0 };
    base.failures_total += u64::from(failed);
    base.next_at = next_attempt(cfg, &base);
    cache.store_meta(&cfg.name, &base)?;
    Ok(Report { outcome, meta: base, warnings })
}

/// Longest wait after repeated 429/503 answers.
const MAX_BACKOFF_SECS: u64 = 86400;

/// When a busy provider may be asked again: not before its `Retry-After`,
/// and after `failures` busy answers in a row not before `refresh` times
/// 2^(failures-1) (at most a day). Other failures keep the usual schedule.
fn backoff(cfg: &FeedConfig, e: &provider::DownloadError, failures: u32, now: u64) -> Option<u64> {
    if !e.busy {
        return None;
    }
    let doubled = cfg.refresh.as_secs().saturating_mul(1u64 << (failures.saturating_sub(1)).min(20));
    let wait = doubled.min(MAX_BACKOFF_SECS).max(e.retry_after.unwrap_or(0));
    Some(now + wait)
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
    super::coverage::check(&p.v4, &p.v6, cfg.max_coverage_prefix)?;
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

/// Is a feed due for an update? Never fetched, its refresh interval has
/// passed, or (for a local file) the file changed since the last check.
pub fn is_due(cfg: &FeedConfig, last: Option<&Meta>, now: u64) -> bool {
    let Some(m) = last else { return true };
    if m.retry_at.is_some_and(|t| now < t) {
        return false; // the provider asked for a pause
    }
    if now >= next_attempt(cfg, m) {
        return true;
    }
    local_mtime_ns(&cfg.source).is_some_and(|t| m.source_mtime_ns != Some(t))
}

/// Unix time of a feed's next scheduled update: its refresh interval after
/// the latest attempt, or later if the provider asked for a pause.
pub fn next_attempt(cfg: &FeedConfig, last: &Meta) -> u64 {
    (last.checked_at + cfg.refresh.as_secs()).max(last.retry_at.unwrap_or(0))
}

/// A local source file's modification time, in ns (`None` for URLs).
fn local_mtime_ns(source: &str) -> Option<u128> {
    if fetch::is_url(source) {
        return None;
    }
    let modified = std::fs::metadata(source).and_then(|md| md.modified()).ok()?;
    Some(modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()))
}

/// What an update did to the live sets of a feed whose copy changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetLoad {
    Replaced {
        v4: usize,
        v6: usize,
        millis: u128,
    },
    /// Cached for the next `apply`.
    NoTable,
    NoSet,
}

/// One feed's part in [`update_feeds`].
#[derive(Clone, Debug)]
pub struct FeedRun {
    pub name: String,
    pub source: String,
    /// `None`: skipped, not due.
    pub report: Option<Report>,
    pub load: Option<SetLoad>,
    /// Allowlist cuts made before loading.
    pub cuts: Vec<String>,
}

/// Updates the given feeds of a compiled policy (only the due ones with
/// `due_only`) and swaps the live sets of those whose copy changed. Each new
/// copy has the protected addresses cut out and must pass the lockout guard
/// (with the other feeds' cached copies) before it is cached or loaded.
pub fn update_feeds(
    nft: &Nft,
    rs: &Ruleset,
    configs: &[FeedConfig],
    cache: &Cache,
    now: u64,
    due_only: bool,
    operator: &Operator,
) -> Result<Vec<FeedRun>, String> {
    let protected = Protected::gather(Some(rs), operator);
    let mut contents = super::cached_elements(rs, &protected, cache)?.0.contents();
    let mut runs = Vec::new();
    for cfg in configs {
        let mut run =
            FeedRun { name: cfg.name.clone(), source: cfg.source.clone(), report: None, load: None, cuts: Vec::new() };
        if !due_only || is_due(cfg, cache.meta(&cfg.name)?.as_ref(), now) {
            let mut accepted = None;
            let report = refresh_with(cfg, cache, now, &mut |nets| {
                let (nets, cuts) = super::protect(rs, &protected, &cfg.name, nets.to_vec());
                let mut trial = contents.clone();
                for family in [Family::V4, Family::V6] {
                    let half = nets.iter().filter(|n| n.addr().is_ipv4() == (family == Family::V4)).copied();
                    trial.insert(nft_set_name(&cfg.name, family), half.collect());
                }
                guard::check(rs, &trial, operator).map_err(|r| r.to_string())?;
                accepted = Some((nets, cuts, trial));
                Ok(())
            })?;
            if let (Outcome::Updated, Some((nets, cuts, trial))) = (&report.outcome, accepted) {
                run.cuts = cuts;
                run.load = Some(load_set(nft, &rs.table, &cfg.name, &nets)?);
                contents = trial;
            }
            run.report = Some(report);
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Swaps a feed's live sets for `nets` in one transaction.
fn load_set(nft: &Nft, table: &str, feed: &str, nets: &[IpNet]) -> Result<SetLoad, String> {
    let started = Instant::now();
    // No listing first: with a big set in the table, any nft listing reads
    // every element (seconds per 100k). A missing table or set fails the
    // transaction, which then changes nothing.
    if let Err(e) = nft.load_json(&replace_batch(table, feed, nets)) {
        if !nft.table_exists(table).map_err(|e| e.to_string())? {
            return Ok(SetLoad::NoTable);
        }
        if matches!(&e, NftError::Refused { stderr } if stderr.contains("No such file or directory")) {
            return Ok(SetLoad::NoSet);
        }
        return Err(e.to_string());
    }
    let v4 = nets.iter().filter(|n| n.addr().is_ipv4()).count();
    Ok(SetLoad::Replaced { v4, v6: nets.len() - v4, millis: started.elapsed().as_millis() })
}

/// Replaces the elements of all of a feed's kernel sets (both families, see
/// [`feed_layout`]) in one transaction: flush each, then add. Nothing else
/// in the table is touched.
pub fn replace_batch(table: &str, feed: &str, nets: &[IpNet]) -> Nftables<'static> {
    let mut objs = Vec::new();
    for family in [Family::V4, Family::V6] {
        let half: Vec<IpNet> = nets.iter().filter(|n| n.addr().is_ipv4() == (family == Family::V4)).copied().collect();
        let set_type = if family == Family::V4 { SetType::Ipv4Addr } else { SetType::Ipv6Addr };
        for (kernel, part) in feed_layout::split(&nft_set_name(feed, family), family, &half) {
            let set = Set {
                family: NfFamily::INet,
                table: table.to_string().into(),
                name: kernel.name.clone().into(),
                set_type: SetTypeValue::Single(set_type),
                ..Default::default()
            };
            objs.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(Box::new(set)))));
            if !part.is_empty() {
                objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Element(Element {
                    family: NfFamily::INet,
                    table: table.to_string().into(),
                    name: kernel.name.clone().into(),
                    elem: part.iter().map(|&n| feed_elem(&kernel, n)).collect::<Vec<_>>().into(),
                }))));
            }
        }
    }
    Nftables { objects: objs.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::Format;

    fn cfg(max_entries: usize, max_shrink_percent: u64) -> FeedConfig {
        FeedConfig { max_entries, max_shrink_percent, ..FeedConfig::new("t", "x", Format::Plain) }
    }

    fn parsed(text: &str) -> Parsed {
        normalize::parse(text, Format::Plain, 1).unwrap()
    }

    #[test]
    fn a_feed_is_due_when_never_fetched_expired_or_its_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        std::fs::write(&file, "192.0.2.0/24\n").unwrap();
        let c = FeedConfig { source: file.to_string_lossy().into_owned(), ..cfg(10, 50) };
        let checked = Meta { checked_at: 1_000, source_mtime_ns: local_mtime_ns(&c.source), ..Meta::default() };
        assert!(is_due(&c, None, 1_000));
        assert!(!is_due(&c, Some(&checked), 1_000 + 3599));
        assert!(is_due(&c, Some(&checked), 1_000 + 3600));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        assert!(is_due(&c, Some(&checked), 1_000 + 1), "an edited local file is due at once");
    }

    #[test]
    fn a_refused_copy_never_becomes_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        let c = FeedConfig { source: file.to_string_lossy().into_owned(), ..cfg(10, 50) };
        let cache = Cache::new(dir.path().join("cache"));
        std::fs::write(&file, "192.0.2.0/24\n").unwrap();
        assert_eq!(refresh(&c, &cache, 1_000).unwrap().outcome, Outcome::Updated);
        for poison in ["0.0.0.0/1\n128.0.0.0/1\n", "192.0.2.0/24\n198.51.0.0/1", "::/1\n8000::/1\n"] {
            std::fs::write(&file, poison).unwrap();
            let report = refresh(&c, &cache, 2_000).unwrap();
            assert!(matches!(report.outcome, Outcome::Kept { .. }), "{poison:?}: {:?}", report.outcome);
            assert_eq!(
                cache.nets(&c.name).unwrap(),
                Some(vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]),
                "{poison:?}"
            );
        }
        // The failure counter of /metrics: three refusals, and a good copy does not reset it.
        std::fs::write(&file, "192.0.2.0/24\n198.51.100.0/24\n").unwrap();
        let report = refresh(&c, &cache, 3_000).unwrap();
        assert_eq!((report.outcome, report.meta.failures, report.meta.failures_total), (Outcome::Updated, 0, 3));
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
        let halves = parsed("0.0.0.0/1\n128.0.0.0/1\n");
        assert!(validate(&halves, 0, &cfg(10, 50)).unwrap_err().starts_with("too broad: covers"));
        let two_eights = parsed("8.0.0.0/8\n11.0.0.0/8\n");
        assert!(validate(&two_eights, 0, &cfg(10, 50)).unwrap_err().starts_with("too broad: covers 33554432"));
        let wide = FeedConfig { max_coverage_prefix: 7, ..cfg(10, 50) };
        assert_eq!(validate(&two_eights, 0, &wide), Ok(()), "max-coverage raises the bound");
    }
}
