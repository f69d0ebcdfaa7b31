//! A classic pcap file read in parallel. The file is cut into chunks; each
//! reading thread parses and decodes every n-th chunk and hands each packet
//! to the thread of its flow-table shard, and every thread adds its shard's
//! packets chunk by chunk, in file order. So each thread reads a part of
//! the file, not all of it.
//!
//! Nothing guessed reaches the flow table. A chunk's first record is found
//! by a plausibility scan (a pcap file has no markers between records), and
//! its packets are used only if that start is exactly where the chunk
//! before really ended; otherwise each thread parses the chunk again from
//! there. Anything the chunk parser is not sure of (a record longer than
//! the snapshot length, a huge record, a cut end, a read error) ends the
//! parallel part: the sequential reader goes on from that record and
//! describes it exactly as it would have alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender};

use super::decode::{self, Decoded, Skip};
use super::flow_table::ShardFeeder;
use super::reader::{ClassicHeader, ReadSummary, CLASSIC_MAX_RECORD, PCAP_HEADER, RECORD_HEADER};

/// Bytes of the file per chunk: a few thousand packets. On the 1 GB
/// benchmark captures 1 MiB was the fastest (256 KiB: more waiting between
/// threads; 4 MiB: a chunk's packets no longer fit in the caches, and more
/// memory in flight).
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Bytes read past a chunk's end for its last record; a longer one is read
/// when it is met.
const MARGIN: u64 = 16 << 10;

/// Consecutive plausible record headers that make a chunk's guessed start.
const PLAUSIBLE_RUN: usize = 8;

/// The file as every thread reads it.
pub struct Chunks<'a> {
    pub file: &'a File,
    pub header: ClassicHeader,
    /// Bytes read: the file's length when reading began.
    pub limit: u64,
    pub chunk_bytes: u64,
    pub shards: usize,
}

/// Where a chunk's parse begins.
#[derive(Clone, Copy)]
enum Start {
    /// At a record known to start there.
    Known(u64),
    /// At the first offset of the chunk where a plausible run of records starts.
    Guess,
}

/// A chunk as parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// The offset of its first record (`None`: no plausible run found).
    start: Option<u64>,
    /// The offset of the first record at or past the chunk's end.
    end: u64,
    /// The parser stopped early at `end`: the rest is the sequential reader's.
    stopped: bool,
    /// Records parsed.
    records: u64,
}

/// What the parser of one chunk sends to one shard's thread.
pub struct Part {
    chunk: usize,
    span: Span,
    packets: Vec<Decoded>,
    /// Frames that could not be decoded (in shard 0's part only: it counts them).
    skipped: Vec<Skip>,
}

/// What one thread's parallel part came to.
pub struct Done {
    /// Records in the chunks read in parallel.
    pub records: u64,
    /// Frames of those chunks that could not be decoded (shard 0 only).
    pub skipped: Vec<Skip>,
    /// Where the sequential reader goes on, if the chunks did not reach the end.
    pub resume_at: Option<u64>,
}

impl Chunks<'_> {
    /// What reading said when the chunks reached the end: what the
    /// sequential reader says of the same classic pcap file.
    pub fn summary(&self, records: u64) -> ReadSummary {
        ReadSummary {
            format: "pcap",
            packets: records,
            file_bytes: self.limit,
            linktypes: vec![self.header.linktype],
            ..ReadSummary::default()
        }
    }

    fn count(&self) -> usize {
        self.limit.saturating_sub(PCAP_HEADER as u64).div_ceil(self.chunk_bytes) as usize
    }

    /// Bytes `[lo, hi)` of the file in which chunk `k`'s records start.
    fn bounds(&self, k: usize) -> (u64, u64) {
        let lo = PCAP_HEADER as u64 + k as u64 * self.chunk_bytes;
        (lo, (lo + self.chunk_bytes).min(self.limit))
    }

    /// Parse chunk `k` from `start`, handing each decoded frame to `emit`.
    fn parse(&self, k: usize, start: Start, buf: &mut Vec<u8>, emit: &mut impl FnMut(Result<Decoded, Skip>)) -> Span {
        let (lo, hi) = self.bounds(k);
        let from = match start {
            Start::Known(at) => at,
            Start::Guess => lo,
        };
        // A little room for the last record, which starts before `hi` and
        // may end after it; more is read when it is longer.
        let to = (hi.max(from) + MARGIN).min(self.limit);
        buf.clear();
        read_at(self.file, buf, from, to.saturating_sub(from) as usize);
        let first = match start {
            Start::Known(at) => Some(at),
            Start::Guess => {
                let at_eof = from + buf.len() as u64 == self.limit;
                (0..(hi - lo) as usize).find(|&off| self.plausible_run(buf, off, at_eof)).map(|off| lo + off as u64)
            }
        };
        let Some(first) = first else {
            return Span { start: None, end: hi, stopped: true, records: 0 };
        };
        let h = &self.header;
        let mut pos = (first - from) as usize;
        let mut records = 0;
        let stopped = loop {
            if from + pos as u64 >= hi {
                break false;
            }
            if buf.len() - pos < RECORD_HEADER && !self.read_more(buf, from, pos + RECORD_HEADER) {
                break true;
            }
            let caplen = h.caplen(buf, pos);
            if caplen > self.max_caplen()
                || (buf.len() - pos - RECORD_HEADER < caplen
                    && !self.read_more(buf, from, pos + RECORD_HEADER + caplen))
            {
                break true;
            }
            let end = pos + RECORD_HEADER + caplen;
            emit(decode::decode(h.linktype, &buf[pos + RECORD_HEADER..end], h.ts_us(buf, pos)));
            records += 1;
            pos = end;
        };
        Span { start: Some(first), end: from + pos as u64, stopped, records }
    }

    /// Make `buf` (the file from `from` on) at least `len` bytes long, if
    /// the file has them.
    fn read_more(&self, buf: &mut Vec<u8>, from: u64, len: usize) -> bool {
        let end = from + buf.len() as u64;
        let to = (from + (len as u64).max(buf.len() as u64 + MARGIN)).min(self.limit);
        read_at(self.file, buf, end, to.saturating_sub(end) as usize);
        buf.len() >= len
    }

    /// The longest record the chunk parser is sure of: within the snapshot
    /// length, and short enough for the sequential reader's own loop.
    fn max_caplen(&self) -> usize {
        match self.header.snaplen {
            0 => CLASSIC_MAX_RECORD,
            snaplen => snaplen.min(CLASSIC_MAX_RECORD),
        }
    }

    /// Does a run of records that look real start at `buf[off]`? Each one
    /// short enough, no longer than on the wire, a fraction under a second,
    /// a time not zero and within a day of the one before. A run may end
    /// exactly at the end of the file.
    fn plausible_run(&self, buf: &[u8], off: usize, at_eof: bool) -> bool {
        let (h, max) = (&self.header, self.max_caplen());
        let mut pos = off;
        let mut last_sec = None;
        for _ in 0..PLAUSIBLE_RUN {
            if pos == buf.len() && at_eof {
                return true;
            }
            if buf.len() - pos < RECORD_HEADER {
                return false;
            }
            let (caplen, (sec, frac)) = (h.caplen(buf, pos), h.ts_parts(buf, pos));
            let near = last_sec.is_none_or(|last: u32| sec.abs_diff(last) <= 86_400);
            if caplen == 0
                || caplen > max
                || caplen > h.orig_len(buf, pos)
                || frac >= h.resolution()
                || sec == 0
                || !near
            {
                return false;
            }
            last_sec = Some(sec);
            pos += RECORD_HEADER + caplen;
            if pos > buf.len() {
                return false;
            }
        }
        true
    }

    /// Thread `shard`'s part: parse and decode chunks `shard`, `shard + n`,
    /// ... (one round ahead of adding them), send each shard its packets,
    /// and add this shard's packets of every chunk, in order, to `feeder`.
    /// `to` has a sender for every shard's thread, `inbox` is this one's.
    pub fn read(
        &self,
        shard: usize,
        feeder: &mut ShardFeeder,
        to: &[Sender<Part>],
        inbox: &Receiver<Part>,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Done {
        let (n, chunks) = (self.shards, self.count());
        let mut buf = Vec::new();
        let parse_round = |round: usize, buf: &mut Vec<u8>| {
            let k = round * n + shard;
            if k >= chunks {
                return;
            }
            // Not sized ahead: parts that large cost fresh pages each time.
            let mut packets: Vec<Vec<Decoded>> = (0..n).map(|_| Vec::new()).collect();
            let mut skipped = Vec::new();
            let start = if k == 0 { Start::Known(PCAP_HEADER as u64) } else { Start::Guess };
            let span = self.parse(k, start, buf, &mut |d| match d {
                Ok(d) => packets[d.shard(n)].push(d),
                Err(skip) => skipped.push(skip),
            });
            for (s, packets) in packets.into_iter().enumerate() {
                let skipped = if s == 0 { std::mem::take(&mut skipped) } else { Vec::new() };
                // A thread that stopped early reads no more parts.
                let _ = to[s].send(Part { chunk: k, span, packets, skipped });
            }
        };
        parse_round(0, &mut buf);
        let mut early: BTreeMap<usize, Part> = BTreeMap::new();
        let mut done = Done { records: 0, skipped: Vec::new(), resume_at: None };
        // The true offset of the next chunk's first record.
        let mut next = PCAP_HEADER as u64;
        for round in 0..chunks.div_ceil(n) {
            parse_round(round + 1, &mut buf);
            for k in round * n..((round + 1) * n).min(chunks) {
                let part = loop {
                    if let Some(part) = early.remove(&k) {
                        break part;
                    }
                    let part = inbox.recv().expect("every chunk's parser sends its parts");
                    early.insert(part.chunk, part);
                };
                let span = if part.span.start == Some(next) {
                    part.packets.iter().for_each(|p| feeder.add(p));
                    done.skipped.extend(part.skipped);
                    part.span
                } else {
                    // Guessed wrong: parse it again from where it really starts.
                    self.parse(k, Start::Known(next), &mut buf, &mut |d| match d {
                        Ok(d) if d.shard(n) == shard => feeder.add(&d),
                        Ok(_) => {}
                        Err(skip) if shard == 0 => done.skipped.push(skip),
                        Err(_) => {}
                    })
                };
                done.records += span.records;
                next = span.end;
                if let Some(progress) = progress {
                    progress(next);
                }
                if span.stopped {
                    done.resume_at = Some(next);
                    return done;
                }
            }
        }
        done
    }
}

/// Append up to `len` bytes read at `offset` to `buf` (fewer at the end of
/// the file or on a read error, which the sequential reader then meets and
/// reports).
fn read_at(file: &File, buf: &mut Vec<u8>, offset: u64, len: usize) {
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[start + got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(start + got);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::learn::flow_table::{FlowLimits, FlowTable};
    use crate::learn::{read_in_chunks, Flow};

    type Read = (Vec<Flow>, ReadSummary, BTreeMap<String, u64>);

    fn read(path: &Path, shards: usize, chunk_bytes: u64) -> Read {
        let table = FlowTable::new(shards, FlowLimits::default());
        let c = read_in_chunks(path, table, &|_| {}, chunk_bytes).expect("opens");
        (c.flows, c.read, c.skipped)
    }

    /// Reading in chunks of every size with two and three threads gives the
    /// flows, summary and skipped frames of one thread reading it whole.
    fn assert_same_as_one_thread(path: &Path, chunk_sizes: &[u64]) {
        let whole = read(path, 1, CHUNK_BYTES);
        for &chunk_bytes in chunk_sizes {
            for shards in [2, 3] {
                let chunked = read(path, shards, chunk_bytes);
                let what = format!("{} in chunks of {chunk_bytes} bytes, {shards} threads", path.display());
                assert_eq!(chunked.1, whole.1, "{what}");
                assert_eq!(chunked.2, whole.2, "{what}");
                assert!(chunked.0 == whole.0, "{what}: {} flows, not {}", chunked.0.len(), whole.0.len());
            }
        }
    }

    fn testdata(dir: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|p| p.extension().is_some_and(|e| ["pcap", "pcapng", "trace"].contains(&e.to_str().unwrap())));
        files.sort();
        files
    }

    #[test]
    fn every_test_capture_reads_the_same_in_chunks() {
        let files: Vec<PathBuf> = ["formats", "scans", "zeek"].iter().flat_map(|d| testdata(d)).collect();
        assert!(files.len() >= 25, "{files:?}");
        for file in &files {
            assert_same_as_one_thread(file, &[64, 1000, 4096, 1 << 16]);
        }
    }

    /// A little-endian Ethernet pcap of `frames` (time, frame bytes).
    fn pcap(snaplen: u32, records: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, snaplen, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (sec, frame) in records {
            for v in [*sec, 0, frame.len() as u32, frame.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(frame);
        }
        out
    }

    /// UDP from 10.0.(i%7).2:(1024+i) to 10.0.0.1:53 whose payload is a
    /// run of fake pcap records: a chunk that starts inside it guesses
    /// its first record wrong.
    fn decoy_frames(count: u32) -> Vec<(u32, Vec<u8>)> {
        (0..count)
            .map(|i| {
                let mut fake = Vec::new();
                for _ in 0..2 * PLAUSIBLE_RUN {
                    for v in [1_600_000_000u32 + i, 0, 10, 10] {
                        fake.extend_from_slice(&v.to_le_bytes());
                    }
                    fake.extend_from_slice(&[0x55; 10]);
                }
                let udp_len = 8 + fake.len() as u16;
                let mut f = vec![0u8; 12];
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0]);
                f[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, (i % 7) as u8, 2, 10, 0, 0, 1]);
                f.extend_from_slice(&(1024 + i as u16).to_be_bytes());
                f.extend_from_slice(&53u16.to_be_bytes());
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&fake);
                (1_600_000_000 + i, f)
            })
            .collect()
    }

    #[test]
    fn chunks_that_start_inside_decoy_records_are_parsed_again_from_the_true_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decoys.pcap");
        let bytes = pcap(65535, &decoy_frames(300));
        std::fs::write(&path, &bytes).unwrap();
        // The true record starts, and how many chunks guess another.
        let starts: Vec<u64> = {
            let mut at = PCAP_HEADER;
            let mut v = Vec::new();
            while at < bytes.len() {
                v.push(at as u64);
                at += RECORD_HEADER + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            }
            v
        };
        let file = File::open(&path).unwrap();
        let header = ClassicHeader::parse(&bytes).unwrap();
        let chunks = Chunks { file: &file, header, limit: bytes.len() as u64, chunk_bytes: 1000, shards: 2 };
        let mut buf = Vec::new();
        let wrong = (1..chunks.count())
            .filter(|&k| {
                let (lo, _) = chunks.bounds(k);
                let truth = starts.iter().find(|s| **s >= lo).copied();
                chunks.parse(k, Start::Guess, &mut buf, &mut |_| {}).start != truth
            })
            .count();
        assert!(wrong > chunks.count() / 2, "{wrong} of {} chunks guessed wrong", chunks.count());
        assert_same_as_one_thread(&path, &[64, 1000, 4096]);
        let (flows, read, _) = read(&path, 2, 1000);
        assert_eq!((flows.len(), read.packets, read.damage), (300, 300, None));
    }

    /// Records longer than what is read past a chunk's end ([`MARGIN`]):
    /// the rest of each is read when it is met.
    #[test]
    fn records_longer_than_the_margin_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jumbo.pcap");
        let jumbo = decoy_frames(30)
            .into_iter()
            .map(|(sec, mut f)| {
                f.resize(f.len() + 3 * MARGIN as usize, 0x55);
                (sec, f)
            })
            .collect::<Vec<_>>();
        let bytes = pcap(CLASSIC_MAX_RECORD as u32, &jumbo);
        std::fs::write(&path, &bytes).unwrap();
        // The first chunk's one record is read whole, not left to the sequential reader.
        let file = File::open(&path).unwrap();
        let header = ClassicHeader::parse(&bytes).unwrap();
        let chunks = Chunks { file: &file, header, limit: bytes.len() as u64, chunk_bytes: 1000, shards: 2 };
        let span = chunks.parse(0, Start::Known(PCAP_HEADER as u64), &mut Vec::new(), &mut |_| {});
        let first_end = (PCAP_HEADER + RECORD_HEADER + jumbo[0].1.len()) as u64;
        assert_eq!(span, Span { start: Some(PCAP_HEADER as u64), end: first_end, stopped: false, records: 1 });
        assert_same_as_one_thread(&path, &[1000, MARGIN, 5 * MARGIN]);
        let (flows, read, _) = read(&path, 2, 1000);
        assert_eq!((flows.len(), read.packets, read.damage), (30, 30, None));
    }

    /// Damage in the middle (a record longer than the snapshot length) and
    /// a file cut at every length: the chunks stop there and the
    /// sequential reader says exactly what it says alone.
    #[test]
    fn damage_and_cut_ends_are_described_as_the_sequential_reader_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.pcap");
        let mut bytes = pcap(1000, &decoy_frames(40));
        let tenth = (0..10).fold(PCAP_HEADER, |at, _| {
            at + RECORD_HEADER + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize
        });
        bytes[tenth + 8..tenth + 12].copy_from_slice(&5000u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (_, read, _) = read(&path, 2, 200);
        let damage = read.damage.expect("damage found");
        assert_eq!(damage.offset, tenth as u64);
        assert!(damage.reason.contains("record 11 claims 5000 captured bytes"), "{}", damage.reason);
        assert_same_as_one_thread(&path, &[64, 1000]);

        let whole = pcap(65535, &decoy_frames(12));
        for cut in (PCAP_HEADER..whole.len()).step_by(37) {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert_same_as_one_thread(&path, &[64, 300]);
        }
    }
}
