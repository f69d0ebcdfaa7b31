//! The learner: captured traffic (or conntrack entries) -> flows -> detectors
//! and an advisory ML ranking -> a reviewable policy diff.
//!
//! Stages, one module each: [`reader`] (pcap/pcapng) -> [`decode`] (link and
//! IP headers) -> [`flows`] (bidirectional flow table) -> [`detect`]
//! (explainable detectors; [`distributed`] scans across sources) and
//! [`score`] (linfa ranking) -> [`services`] and [`propose`] (the policy diff). Other flow sources (conntrack) enter at
//! [`analyze`] with the same [`Flow`] records.

pub mod baseline;
pub mod config;
pub mod conntrack;
pub mod decode;
pub mod detect;
pub mod distributed;
pub mod flow_table;
pub mod flows;
pub mod patch;
pub mod propose;
pub mod reader;
pub mod retain;
pub mod score;
pub mod services;
pub mod summary;
mod tcp_state;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

pub use config::Config;
pub use detect::{Detector, Finding};
pub use flows::{ConnState, Flow};

use decode::Skip;
use flow_table::{FlowTable, ShardFeeder};
use reader::ReadSummary;

/// Flows read from a capture file, with what reading and decoding saw.
pub struct Capture {
    pub flows: Vec<Flow>,
    pub read: ReadSummary,
    /// Frames that were captured but carried no usable IP header.
    pub skipped: BTreeMap<String, u64>,
    /// Some closed flows were merged to bound memory.
    pub compacted: bool,
    /// From [`read_summarized`]: the closed flows' summaries; `flows` then
    /// holds only the flows the detectors read one by one.
    pub summary: Option<summary::Summary>,
}

impl Capture {
    /// Flow records read (all of them, also when only a summary was kept).
    pub fn flow_count(&self) -> usize {
        self.summary.as_ref().map_or(self.flows.len(), |s| s.flows() as usize)
    }

    /// [`observe_and_analyze`] of what was read.
    pub fn observe_and_analyze(
        &mut self,
        cfg: &Config,
        hosts: &[std::net::IpAddr],
    ) -> (baseline::Observations, Report) {
        let flows = std::mem::take(&mut self.flows);
        match self.summary.take() {
            Some(summary) => summary.report(&flows, hosts),
            None => observe_and_analyze(flows, cfg, hosts),
        }
    }
}

/// Read a capture into flows, every one of them (`--dump-flows`, tests).
/// The flow table is sharded by flow key, one shard per reading thread (see
/// [`readers`]); `progress` gets the file offset reached now and then.
pub fn read_flows(path: &Path, cfg: &Config, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    read_into(path, FlowTable::new(readers(path), cfg.flows.clone()), progress)
}

/// [`read_flows`], but each flow is summarized as it closes and only the
/// flows the detectors read one by one are kept (see [`summary`]): memory
/// does not grow with the number of flows.
pub fn read_summarized(path: &Path, cfg: &Config, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    read_into(path, FlowTable::summarizing(readers(path), cfg), progress)
}

/// Threads that each read the whole file for their own shard of the flow
/// table: one per rayon thread, at most [`MAX_READERS`] (every one of them
/// parses and decodes every packet), and one for anything but a regular
/// file (a pipe can be read only once).
fn readers(path: &Path) -> usize {
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    if regular {
        rayon::current_num_threads().clamp(1, MAX_READERS)
    } else {
        1
    }
}

/// Beyond this, a thread's share of the flow table costs less than the
/// parsing and decoding every thread repeats.
const MAX_READERS: usize = 4;

/// Packets between two progress reports.
const PROGRESS_EVERY: u32 = 1 << 14;

fn read_into(path: &Path, table: FlowTable, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    let mut feeders = table.into_feeders();
    let shards = feeders.len();
    let first = feeders.remove(0);
    // Every thread reads the same bytes, however the file grows meanwhile
    // (a pipe, read by one thread, has no length to stop at).
    let meta = std::fs::metadata(path)?;
    let file_bytes = if meta.is_file() { meta.len() } else { u64::MAX };
    let (first, others) = std::thread::scope(|s| {
        let others: Vec<_> = feeders
            .into_iter()
            .enumerate()
            .map(|(i, feeder)| s.spawn(move || feed(path, file_bytes, feeder, (i + 1, shards), None)))
            .collect();
        let first = feed(path, file_bytes, first, (0, shards), Some(progress));
        let others: Vec<_> = others.into_iter().map(|t| t.join().expect("reader thread does not panic")).collect();
        (first, others)
    });
    let (read, skipped, first) = first?;
    let mut feeders = vec![first];
    for other in others {
        feeders.push(other?.2);
    }
    let set = FlowTable::from_feeders(feeders).finish();
    Ok(Capture {
        flows: set.flows,
        read,
        skipped: skipped.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect(),
        compacted: set.compacted,
        summary: set.summary,
    })
}

/// Read the first `file_bytes` of the capture and add the packets of shard
/// `shard.0` of `shard.1` to `feeder`. The thread with `progress` (shard 0)
/// also counts the frames that could not be decoded.
fn feed(
    path: &Path,
    file_bytes: u64,
    mut feeder: ShardFeeder,
    (shard, shards): (usize, usize),
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> std::io::Result<(ReadSummary, BTreeMap<Skip, u64>, ShardFeeder)> {
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let mut until_progress = PROGRESS_EVERY;
    let read = reader::read_capture_upto(path, file_bytes, |f| {
        match decode::decode(f.linktype, f.data, f.ts_us) {
            Ok(d) if d.shard(shards) == shard => feeder.add(&d),
            Ok(_) => {}
            Err(skip) if progress.is_some() => *skipped.entry(skip).or_default() += 1,
            Err(_) => {}
        }
        if let Some(progress) = progress {
            until_progress -= 1;
            if until_progress == 0 {
                until_progress = PROGRESS_EVERY;
                progress(f.end_offset);
            }
        }
    })?;
    if let Some(progress) = progress {
        progress(read.file_bytes);
    }
    Ok((read, skipped, feeder))
}

/// What the learner concluded from a set of flows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub flows: usize,
    /// Distinct originating addresses.
    pub sources: usize,
    /// Detector findings, one per flagged source, sorted by source.
    pub findings: Vec<Finding>,
    /// SYN floods from many sources against one service (a rate limit, not blocks).
    pub floods: Vec<detect::SpoofedFlood>,
    /// Services used by sources that were not flagged.
    pub services: Vec<services::Service>,
    /// Advisory ML ranking of all sources, most unusual first.
    pub ranking: Vec<score::Ranked>,
    /// The address at one end of (nearly) every flow: the capture's host.
    pub capture_host: Option<std::net::IpAddr>,
}

impl Report {
    /// Sources with at least one finding, sorted.
    pub fn flagged(&self) -> Vec<std::net::IpAddr> {
        let mut v: Vec<_> = self.findings.iter().map(|f| f.source).collect();
        v.dedup();
        v
    }
}

/// The pipeline after the flow table: detectors, ranking, services.
/// `hosts` are the addresses of the host whose inbound services are learned
/// (`--host`); when empty, the capture host is inferred from the flows, and
/// without one (a capture of a whole network) every server counts.
pub fn analyze(flows: Vec<Flow>, cfg: &Config, hosts: &[std::net::IpAddr]) -> Report {
    observe_and_analyze(flows, cfg, hosts).1
}

/// [`analyze`] and the baseline's [`baseline::observe`] of the same flows,
/// through the same summaries [`read_summarized`] builds while reading.
pub fn observe_and_analyze(
    flows: Vec<Flow>,
    cfg: &Config,
    hosts: &[std::net::IpAddr],
) -> (baseline::Observations, Report) {
    let (summary, kept) = summary::Summary::of(flows, cfg);
    summary.report(&kept, hosts)
}

/// `2009-04-30T19:36:38Z` from microseconds since the Unix epoch (UTC).
pub fn fmt_time(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
