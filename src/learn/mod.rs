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
use flow_table::{ClosedFlows, FlowTable, OpenFlows};
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

/// Packets handed from the reader thread to the flow table at a time: 2,048
/// records (176 KB) stay in the writing core's L2 cache (1 MB here) until
/// the other core reads them; 8,192 (704 KB) did not, with the read buffer
/// beside them.
const BATCH: usize = 2048;

/// Decoded packets of one batch, and what could not be decoded.
struct DecodedBatch {
    packets: Vec<decode::Decoded>,
    skipped: Vec<Skip>,
    file_offset: u64,
}

impl Default for DecodedBatch {
    /// Room for a whole batch: a batch grown by doubling copies its records.
    fn default() -> DecodedBatch {
        DecodedBatch { packets: Vec::with_capacity(BATCH), skipped: Vec::new(), file_offset: 0 }
    }
}

/// Read a capture into flows, every one of them (`--dump-flows`, tests).
/// The reader thread parses and decodes; the open flows are kept beside it,
/// sharded by flow key over the remaining rayon threads, and the flows each
/// batch closed are taken after it (see [`Closing`]). `progress` gets the
/// file offset reached after each batch.
pub fn read_flows(path: &Path, cfg: &Config, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    read_into(path, FlowTable::new(flow_shards(), cfg.flows.clone()), progress)
}

/// [`read_flows`], but each flow is summarized as it closes and only the
/// flows the detectors read one by one are kept (see [`summary`]): memory
/// does not grow with the number of flows.
pub fn read_summarized(path: &Path, cfg: &Config, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    read_into(path, FlowTable::summarizing(flow_shards(), cfg), progress)
}

/// One core goes to the reader; sharding pays only with cores to spare.
fn flow_shards() -> usize {
    rayon::current_num_threads().saturating_sub(1).max(1)
}

/// Where the flows each batch closed are summarized.
enum Closing<'scope> {
    /// On the flow table's thread, after each batch: with two cores, two
    /// busy threads, one per core. With a third (the closer) the scheduler
    /// had to put two busy threads on one core, and runs on the same file
    /// took either 0.40 s or 0.75 s (docs/benchmarks.md).
    Inline { closed: ClosedFlows, closing: Vec<Vec<Flow>> },
    /// On a thread of its own, one batch behind, when there are more cores.
    Thread {
        to_closer: std::sync::mpsc::SyncSender<Vec<Vec<Flow>>>,
        back_from_closer: std::sync::mpsc::Receiver<Vec<Vec<Flow>>>,
        closer: std::thread::ScopedJoinHandle<'scope, ClosedFlows>,
    },
}

impl<'scope> Closing<'scope> {
    fn start<'env>(s: &'scope std::thread::Scope<'scope, 'env>, mut closed: ClosedFlows) -> Closing<'scope> {
        if rayon::current_num_threads() <= 2 {
            return Closing::Inline { closed, closing: Vec::new() };
        }
        let (to_closer, closer_rx) = std::sync::mpsc::sync_channel::<Vec<Vec<Flow>>>(2);
        let (closer_back, back_from_closer) = std::sync::mpsc::channel::<Vec<Vec<Flow>>>();
        let closer = s.spawn(move || {
            for mut closing in closer_rx {
                closed.take(&mut closing);
                let _ = closer_back.send(closing);
            }
            closed
        });
        Closing::Thread { to_closer, back_from_closer, closer }
    }

    /// Add a batch to the open flows and summarize the flows it closed.
    fn add_batch(&mut self, open: &mut OpenFlows, packets: &[decode::Decoded]) {
        match self {
            Closing::Inline { closed, closing } => {
                open.add_batch(packets, closing);
                closed.take(closing);
            }
            Closing::Thread { to_closer, back_from_closer, .. } => {
                let mut closing = back_from_closer.try_recv().unwrap_or_default();
                open.add_batch(packets, &mut closing);
                to_closer.send(closing).expect("closer alive");
            }
        }
    }

    fn finish(self) -> ClosedFlows {
        match self {
            Closing::Inline { closed, .. } => closed,
            Closing::Thread { to_closer, closer, .. } => {
                drop(to_closer);
                closer.join().expect("closer thread does not panic")
            }
        }
    }
}

fn read_into(path: &Path, table: FlowTable, progress: &(dyn Fn(u64) + Sync)) -> std::io::Result<Capture> {
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<DecodedBatch>(4);
    // Used batches go back to the reader, buffers and all.
    let (give_back, take_back) = std::sync::mpsc::channel::<DecodedBatch>();
    let FlowTable { mut open, closed, .. } = table;
    let (read, closed) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut out = DecodedBatch::default();
            let read = reader::read_capture(path, |f| {
                match decode::decode(f.linktype, f.data, f.ts_us) {
                    Ok(d) => out.packets.push(d),
                    Err(skip) => out.skipped.push(skip),
                }
                if out.packets.len() + out.skipped.len() >= BATCH {
                    out.file_offset = f.end_offset;
                    let next = take_back.try_recv().unwrap_or_default();
                    tx.send(std::mem::replace(&mut out, next)).expect("consumer alive");
                }
            });
            if let Ok(r) = &read {
                out.file_offset = r.file_bytes;
            }
            tx.send(out).expect("consumer alive");
            read
        });
        let mut closing = Closing::start(s, closed);
        for mut batch in rx {
            for skip in batch.skipped.drain(..) {
                *skipped.entry(skip).or_default() += 1;
            }
            closing.add_batch(&mut open, &batch.packets);
            progress(batch.file_offset);
            batch.packets.clear();
            // The reader may be done already; then the batch is simply dropped.
            let _ = give_back.send(batch);
        }
        let closed = closing.finish();
        reader.join().expect("reader thread does not panic").map(|read| (read, closed))
    })?;
    let set = closed.finish(open);
    Ok(Capture {
        flows: set.flows,
        read,
        skipped: skipped.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect(),
        compacted: set.compacted,
        summary: set.summary,
    })
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
