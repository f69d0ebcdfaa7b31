//! The learner: captured traffic (or conntrack entries) -> flows -> detectors
//! and an advisory ML ranking -> a reviewable policy diff.
//!
//! Stages, one module each: [`reader`] (pcap/pcapng) -> [`decode`] (link and
//! IP headers) -> [`flows`] (bidirectional flow table) -> [`detect`]
//! (explainable detectors; [`distributed`] scans across sources) and
//! [`score`] (linfa ranking) -> [`services`] and [`propose`] (the policy diff). Other flow sources (conntrack) enter at
//! [`analyze`] with the same [`Flow`] records.

pub mod baseline;
mod chunked;
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

/// Reading threads, one per shard of the flow table: one per rayon thread,
/// at most [`MAX_READERS`], and one for anything but a regular file (a pipe
/// can be read only once).
fn readers(path: &Path) -> usize {
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    if regular {
        rayon::current_num_threads().clamp(1, MAX_READERS)
    } else {
        1
    }
}

/// Beyond this, a thread's share of the flow table costs less than what
/// every thread repeats: waiting for the others' chunks, and for pcapng
/// (not cut into chunks) parsing and decoding the whole file.
const MAX_READERS: usize = 4;

/// Packets between two progress reports.
const PROGRESS_EVERY: u32 = 1 << 14;

fn read_into(path: &Path, table: FlowTable, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    read_in_chunks(path, table, progress, chunked::CHUNK_BYTES)
}

/// [`read_into`], with a classic pcap file cut into chunks of `chunk_bytes`
/// when there are several shards (see [`chunked`]); anything else is read
/// whole by every thread.
fn read_in_chunks(
    path: &Path,
    table: FlowTable,
    progress: &(dyn Fn(u64) + Sync),
    chunk_bytes: u64,
) -> std::io::Result<Capture> {
    let feeders = table.into_feeders();
    let shards = feeders.len();
    let meta = std::fs::metadata(path)?;
    // Every thread reads the same bytes, however the file grows meanwhile
    // (a pipe, read by one thread, has no length to stop at, and is opened
    // once: a second open of a FIFO waits for a writer that may be gone).
    let limit = if meta.is_file() { meta.len() } else { u64::MAX };
    let file = if shards > 1 && meta.is_file() { Some(std::fs::File::open(path)?) } else { None };
    let chunks = file.as_ref().and_then(|file| {
        let mut head = [0u8; reader::PCAP_HEADER];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut head, 0).ok()?;
        let header = reader::ClassicHeader::parse(&head)?;
        Some(chunked::Chunks { file, header, limit, chunk_bytes, shards })
    });
    let (to, inboxes): (Vec<_>, Vec<_>) = (0..shards).map(|_| std::sync::mpsc::channel()).unzip();
    let results = std::thread::scope(|s| {
        let mut threads = feeders.into_iter().zip(inboxes).enumerate();
        let (_, (first, first_inbox)) = threads.next().expect("at least one shard");
        let (to, chunks) = (&to, chunks.as_ref());
        let others: Vec<_> = threads
            .map(|(i, (feeder, inbox))| {
                s.spawn(move || read_shard(path, limit, chunks, feeder, (i, shards), (to, inbox), None))
            })
            .collect();
        let first = read_shard(path, limit, chunks, first, (0, shards), (to, first_inbox), Some(progress));
        let mut results = vec![first];
        results.extend(others.into_iter().map(|t| t.join().expect("reader thread does not panic")));
        results
    });
    let mut results = results.into_iter();
    let (read, skipped, first) = results.next().expect("shard 0")?;
    let mut feeders = vec![first];
    for other in results {
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

/// One thread's reading for shard `shard.0` of `shard.1`: its part of the
/// chunks, if the file is read in chunks, then (from where the chunks
/// stopped, or from the start) the whole file. Shard 0's thread, the one
/// with `progress`, also counts the frames that could not be decoded.
fn read_shard(
    path: &Path,
    limit: u64,
    chunks: Option<&chunked::Chunks<'_>>,
    mut feeder: ShardFeeder,
    (shard, shards): (usize, usize),
    (to, inbox): (&[std::sync::mpsc::Sender<chunked::Part>], std::sync::mpsc::Receiver<chunked::Part>),
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> std::io::Result<(ReadSummary, BTreeMap<Skip, u64>, ShardFeeder)> {
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let mut from = 0;
    if let Some(chunks) = chunks {
        let done = chunks.read(shard, &mut feeder, to, &inbox, progress);
        for skip in done.skipped {
            *skipped.entry(skip).or_default() += 1;
        }
        match done.resume_at {
            None => return Ok((chunks.summary(done.records), skipped, feeder)),
            Some(at) => from = at,
        }
    }
    drop(inbox);
    let read = feed(path, limit, &mut feeder, (shard, shards), progress, from, &mut skipped)?;
    Ok((read, skipped, feeder))
}

/// Read the first `limit` bytes of the capture and add the packets of shard
/// `shard.0` of `shard.1` that start at or after offset `from` (a classic
/// pcap record's) to `feeder`; with `progress`, count the frames that could
/// not be decoded in `skipped`.
fn feed(
    path: &Path,
    limit: u64,
    feeder: &mut ShardFeeder,
    (shard, shards): (usize, usize),
    progress: Option<&(dyn Fn(u64) + Sync)>,
    from: u64,
    skipped: &mut BTreeMap<Skip, u64>,
) -> std::io::Result<ReadSummary> {
    let mut until_progress = PROGRESS_EVERY;
    let read = reader::read_capture_upto(path, limit, |f| {
        if from > 0 && f.end_offset - ((reader::RECORD_HEADER + f.data.len()) as u64) < from {
            return;
        }
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
    Ok(read)
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
