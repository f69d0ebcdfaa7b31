//! pcap and pcapng reading with pcap-parser: both byte orders, several
//! sections and interfaces (each with its own link type and clock). A damaged
//! file yields every packet before the damage plus an error naming its byte
//! offset; nothing here panics on bad input.

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

/// Blocks larger than this are treated as damage, not grown into.
const MAX_BLOCK: usize = 64 << 20;

/// One captured frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub linktype: i32,
    pub ts_us: u64,
    pub data: &'a [u8],
    /// File offset just past this frame's block.
    pub end_offset: u64,
}

/// Where and why reading stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the block that could not be read.
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

/// What reading found besides the frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub format: &'static str,
    pub packets: u64,
    pub file_bytes: u64,
    pub sections: u64,
    /// Link types of all interfaces, in order of declaration.
    pub linktypes: Vec<i32>,
    /// Set when the file is damaged: the frames before it were delivered.
    pub damage: Option<Damage>,
}

#[derive(Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second.
    resolution: u64,
    offset_secs: i64,
}

/// Read every frame of `path`, handing each to `sink` straight from the read
/// buffer. Errors only when the file cannot be opened; damage is in the summary.
pub fn read_capture(path: &Path, sink: impl FnMut(Frame<'_>)) -> std::io::Result<ReadSummary> {
    read_file(path, Some(MAPPED_WINDOW), sink)
}

/// [`read_capture`]; a classic pcap is read through a map in windows of
/// `mapped_window` bytes, or with read() when `None` (and when it cannot be mapped).
fn read_file(
    path: &Path,
    mapped_window: Option<usize>,
    mut sink: impl FnMut(Frame<'_>),
) -> std::io::Result<ReadSummary> {
    let mut file = File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let mut summary = ReadSummary { file_bytes, ..Default::default() };
    let mapped = mapped_window.and_then(|window| read_classic_mapped(&mut file, window, &mut summary, &mut sink));
    let handover = match mapped {
        Some(handover) => handover?,
        None => read_classic(&mut file, &mut summary, &mut sink),
    };
    if summary.damage.is_some() {
        return Ok(summary);
    }
    read_with_pcap_parser(
        Cursor::new(handover.pending).chain(file),
        handover.offset,
        summary,
        Blocks::PlainPacketsByHand,
        sink,
    )
}

/// Classic pcap records up to this size are read by [`read_classic`].
const CLASSIC_MAX_RECORD: usize = 1 << 18;
/// [`read_classic`]'s read size; a whole record always fits.
const CLASSIC_BUFFER: usize = 2 * CLASSIC_MAX_RECORD;
const PCAP_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// Where [`read_classic`] stopped: pcap-parser goes on with `pending` (bytes
/// already read, to be parsed again) followed by the rest of the file, and
/// `pending` starts at file offset `offset`.
struct Handover {
    pending: Vec<u8>,
    offset: u64,
}

/// A classic pcap file's global header: what reading its records needs.
#[derive(Clone, Copy)]
struct ClassicHeader {
    bytes: [u8; PCAP_HEADER],
    big_endian: bool,
    nanosecond: bool,
    linktype: i32,
    snaplen: usize,
}

impl ClassicHeader {
    /// `None` for anything but a classic pcap (pcapng, the modified format,
    /// damage: all pcap-parser's).
    fn parse(buf: &[u8]) -> Option<ClassicHeader> {
        let bytes: [u8; PCAP_HEADER] = buf.get(..PCAP_HEADER)?.try_into().ok()?;
        let (big_endian, nanosecond) = match u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            _ => return None,
        };
        let mut header = ClassicHeader { bytes, big_endian, nanosecond, linktype: 0, snaplen: 0 };
        header.linktype = header.u32_at(&bytes, 20) as i32;
        header.snaplen = header.u32_at(&bytes, 16) as usize;
        Some(header)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    /// Hand every complete record of `buf` from `pos` on to `sink` (`buf[0]`
    /// is at file offset `base`); stops before a record cut short by the end
    /// of `buf` or larger than [`CLASSIC_MAX_RECORD`], and returns where.
    /// `None` when a record is damaged (then said in `summary`).
    fn records(
        &self,
        buf: &[u8],
        mut pos: usize,
        base: u64,
        summary: &mut ReadSummary,
        sink: &mut impl FnMut(Frame<'_>),
    ) -> Option<usize> {
        while buf.len() - pos >= RECORD_HEADER {
            let caplen = self.u32_at(buf, pos + 8) as usize;
            // A record longer than the file's snapshot length is a lie, not a
            // cut: say so, where, and read no further.
            if self.snaplen > 0 && caplen > self.snaplen {
                summary.damage = Some(Damage {
                    offset: base + pos as u64,
                    reason: format!(
                        "record {} claims {caplen} captured bytes, more than the file's snapshot length {}: length field damaged",
                        summary.packets + 1,
                        self.snaplen
                    ),
                });
                return None;
            }
            if caplen > CLASSIC_MAX_RECORD || buf.len() - pos - RECORD_HEADER < caplen {
                break;
            }
            let ts_sec = u64::from(self.u32_at(buf, pos));
            // Microseconds, or nanoseconds to be cut to microseconds (no division per packet).
            let frac = u64::from(self.u32_at(buf, pos + 4));
            let frac = if self.nanosecond { frac / 1000 } else { frac };
            let end = pos + RECORD_HEADER + caplen;
            summary.packets += 1;
            sink(Frame {
                linktype: self.linktype,
                ts_us: ts_sec * 1_000_000 + frac,
                data: &buf[pos + RECORD_HEADER..end],
                end_offset: base + end as u64,
            });
            pos = end;
        }
        Some(pos)
    }

    /// A record too large for [`ClassicHeader::records`] starts at `pos`.
    fn huge_record_at(&self, buf: &[u8], pos: usize) -> bool {
        buf.len() - pos >= RECORD_HEADER && self.u32_at(buf, pos + 8) as usize > CLASSIC_MAX_RECORD
    }

    /// pcap-parser goes on at file offset `at` (a record): it reads this
    /// header again first.
    fn handover(&self, at: u64, rest: &[u8]) -> Handover {
        let mut pending = self.bytes.to_vec();
        pending.extend_from_slice(rest);
        Handover { pending, offset: at - PCAP_HEADER as u64 }
    }
}

/// The common case read by hand: the records of a classic pcap file, over
/// large read() buffers. It stops at the first thing it is not sure of (not a
/// classic pcap, a huge record, the end of the file cut a record short, a
/// read error) and hands over to pcap-parser there, so damage is described
/// exactly as pcap-parser alone would. The hand-over re-reads the global
/// header: `pending` starts with it and `offset` is shifted to match.
fn read_classic(file: &mut File, summary: &mut ReadSummary, sink: &mut impl FnMut(Frame<'_>)) -> Handover {
    let mut buf = vec![0u8; CLASSIC_BUFFER];
    let mut filled = fill(file, &mut buf, 0);
    let Some(header) = ClassicHeader::parse(&buf[..filled]) else {
        buf.truncate(filled);
        return Handover { pending: buf, offset: 0 };
    };
    summary.format = "pcap";
    summary.linktypes = vec![header.linktype];
    let mut pos = PCAP_HEADER;
    // File offset of buf[0].
    let mut base = 0u64;
    loop {
        let Some(reached) = header.records(&buf[..filled], pos, base, summary, sink) else {
            return Handover { pending: Vec::new(), offset: 0 };
        };
        pos = reached;
        if header.huge_record_at(&buf[..filled], pos) {
            break;
        }
        // Carry the partial record over and read on.
        buf.copy_within(pos..filled, 0);
        base += pos as u64;
        filled -= pos;
        pos = 0;
        let before = filled;
        filled = fill(file, &mut buf, filled);
        if filled == before {
            break;
        }
    }
    header.handover(base + pos as u64, &buf[pos..filled])
}

/// [`read_classic`] over a memory map of the whole file instead of read()
/// buffers: the records are read where the page cache holds them, with no
/// copy (a third of the reader thread's time on a 200 MB capture). The pages
/// read are dropped from the map behind the reader, so the resident memory
/// stays that of one window. `None` when the file cannot be mapped (not a
/// regular file, empty); the caller then reads it with [`read_classic`].
/// On hand-over, `file` is positioned where pcap-parser goes on.
fn read_classic_mapped(
    file: &mut File,
    window: usize,
    summary: &mut ReadSummary,
    sink: &mut impl FnMut(Frame<'_>),
) -> Option<std::io::Result<Handover>> {
    let mut map = Mapped::new(file, summary.file_bytes)?;
    // SAFETY: `buf` is not used after `map` is dropped at the end of this function.
    let buf = unsafe { std::slice::from_raw_parts(map.at as *const u8, map.len) };
    let Some(header) = ClassicHeader::parse(buf) else {
        return Some(Ok(Handover { pending: Vec::new(), offset: 0 }));
    };
    summary.format = "pcap";
    summary.linktypes = vec![header.linktype];
    let mut pos = PCAP_HEADER;
    loop {
        let window = &buf[..buf.len().min(pos + window)];
        let Some(reached) = header.records(window, pos, 0, summary, sink) else {
            return Some(Ok(Handover { pending: Vec::new(), offset: 0 }));
        };
        map.release_before(reached);
        // A partial record at the end of a window is read with the next one.
        if reached == pos || header.huge_record_at(buf, reached) || window.len() == buf.len() {
            pos = reached;
            break;
        }
        pos = reached;
    }
    Some(file.seek(SeekFrom::Start(pos as u64)).map(|_| header.handover(pos as u64, &[])))
}

/// The bytes [`read_classic_mapped`] reads before dropping them from its map.
const MAPPED_WINDOW: usize = 8 << 20;

/// madvise works on whole pages (4 KiB here; a larger page size only leaves
/// a little more resident).
const PAGE: usize = 4096;

/// A read-only private map of a whole file, unmapped on drop.
struct Mapped {
    at: *mut libc::c_void,
    len: usize,
    /// The pages before this offset are dropped already.
    released: usize,
}

impl Mapped {
    fn new(file: &File, file_bytes: u64) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(file_bytes).ok().filter(|&n| n > 0)?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        // SAFETY: a fresh read-only private map of `len` bytes of an open
        // file; nothing else aliases it and it lives as long as `Mapped`.
        let at =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if at == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on the map just made; read ahead far, in order.
        unsafe { libc::madvise(at, len, libc::MADV_SEQUENTIAL) };
        Some(Mapped { at, len, released: 0 })
    }

    /// Drop the whole pages before `offset` from this process's memory (they
    /// stay in the page cache; touching them again reads them back).
    fn release_before(&mut self, offset: usize) {
        let end = offset / PAGE * PAGE;
        if end > self.released {
            // SAFETY: whole pages inside the map; no frame borrowed from
            // them outlives the sink call that read it.
            unsafe {
                libc::madvise(self.at.cast::<u8>().add(self.released).cast(), end - self.released, libc::MADV_DONTNEED)
            };
            self.released = end;
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the map made in `new`, unmapped once.
        unsafe { libc::munmap(self.at, self.len) };
    }
}

/// Read into `buf[filled..]` until it is full, the file ends or a read fails
/// (pcap-parser then meets the same failure and reports it); the new fill level.
fn fill(file: &mut File, buf: &mut [u8], mut filled: usize) -> usize {
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    filled
}

/// Which pcapng blocks [`read_with_pcap_parser`] leaves to pcap-parser.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocks {
    /// Enhanced packet blocks without options are read by [`plain_epb`].
    PlainPacketsByHand,
    /// Every block goes through pcap-parser (the tests' reference).
    #[cfg(test)]
    AllByPcapParser,
}

/// The common pcapng block read by hand: a complete enhanced packet block
/// with no options, in the section's byte order. Its total length and frame
/// data (with padding, as pcap-parser gives it), interface and raw timestamp.
/// `None` for everything else, which pcap-parser then parses as usual.
fn plain_epb(buf: &[u8], big_endian: bool) -> Option<(usize, &[u8], u32, u64)> {
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    const EPB: u32 = 6;
    const HEADER: usize = 28;
    let len = u32_at(4)? as usize;
    if u32_at(0)? != EPB
        || len < HEADER + 4
        || !len.is_multiple_of(4)
        || buf.len() < len
        || u32_at(len - 4)? as usize != len
    {
        return None;
    }
    let padded = (u32_at(20)? as usize).checked_add(3)? & !3;
    if HEADER + padded + 4 != len {
        return None;
    }
    let ts = (u64::from(u32_at(12)?) << 32) | u64::from(u32_at(16)?);
    Some((len, &buf[HEADER..HEADER + padded], u32_at(8)?, ts))
}

/// A pcapng timestamp in microseconds since the epoch.
fn ng_time_us(raw: u64, iface: Interface) -> u64 {
    let us = (u128::from(raw) * 1_000_000 / u128::from(iface.resolution)) as i128
        + i128::from(iface.offset_secs) * 1_000_000;
    us.clamp(0, i128::from(u64::MAX)) as u64
}

/// Every block of `source` through pcap-parser (but see [`Blocks`]);
/// `source` starts at file offset `start` (plus its own header, for a
/// classic pcap handed over).
fn read_with_pcap_parser(
    source: impl Read,
    start: u64,
    mut summary: ReadSummary,
    blocks: Blocks,
    mut sink: impl FnMut(Frame<'_>),
) -> std::io::Result<ReadSummary> {
    let file_bytes = summary.file_bytes;
    // Small files get a small buffer; a larger block grows it (BufferTooSmall).
    let capacity = (file_bytes as usize).clamp(64 << 10, 1 << 20);
    let mut reader = match create_reader(capacity, source) {
        Ok(r) => r,
        Err(PcapError::Eof) => {
            summary.damage = Some(Damage { offset: 0, reason: "empty file: not a pcap or pcapng capture".into() });
            return Ok(summary);
        }
        Err(e) => {
            summary.damage =
                Some(Damage { offset: 0, reason: format!("not a pcap or pcapng capture ({})", describe(&e)) });
            return Ok(summary);
        }
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut last_ts = 0u64;
    // The byte order of the current pcapng section, once one has started.
    let mut section_big_endian: Option<bool> = None;
    loop {
        let offset = start + reader.consumed() as u64;
        if let Some(big_endian) = section_big_endian.filter(|_| blocks == Blocks::PlainPacketsByHand) {
            let plain = plain_epb(reader.data(), big_endian)
                .and_then(|(len, data, if_id, raw)| Some((len, data, *interfaces.get(if_id as usize)?, raw)));
            if let Some((len, data, iface, raw)) = plain {
                last_ts = ng_time_us(raw, iface);
                summary.packets += 1;
                sink(Frame { linktype: iface.linktype, ts_us: last_ts, data, end_offset: offset + len as u64 });
                reader.consume(len);
                continue;
            }
        }
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        summary.format = if h.is_modified_format() { "pcap (modified)" } else { "pcap" };
                        let resolution = if h.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
                        interfaces = vec![Interface { linktype: h.network.0, resolution, offset_secs: 0 }];
                        // Set, not pushed: a hand-over from read_classic parses it again.
                        summary.linktypes = vec![h.network.0];
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let iface = interfaces[0];
                        let frac = u64::from(b.ts_usec) * 1_000_000 / iface.resolution;
                        last_ts = u64::from(b.ts_sec) * 1_000_000 + frac;
                        summary.packets += 1;
                        sink(Frame {
                            linktype: iface.linktype,
                            ts_us: last_ts,
                            data: b.data,
                            end_offset: offset + len as u64,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                        section_big_endian = Some(shb.big_endian());
                        summary.format = "pcapng";
                        summary.sections += 1;
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let Some(resolution) = idb.ts_resolution() else {
                            summary.damage = Some(Damage {
                                offset,
                                reason: format!(
                                    "interface {} has an invalid timestamp resolution {}",
                                    interfaces.len(),
                                    idb.if_tsresol
                                ),
                            });
                            break;
                        };
                        interfaces.push(Interface {
                            linktype: idb.linktype.0,
                            resolution,
                            offset_secs: idb.ts_offset(),
                        });
                        summary.linktypes.push(idb.linktype.0);
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let Some(iface) = interfaces.get(epb.if_id as usize).copied() else {
                            summary.damage = Some(Damage {
                                offset,
                                reason: format!(
                                    "packet on interface {} but this section declares {} interface(s)",
                                    epb.if_id,
                                    interfaces.len()
                                ),
                            });
                            break;
                        };
                        last_ts = ng_time_us((u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low), iface);
                        summary.packets += 1;
                        sink(Frame {
                            linktype: iface.linktype,
                            ts_us: last_ts,
                            data: epb.data,
                            end_offset: offset + len as u64,
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // No timestamp of its own: keep the clock where it was.
                        let Some(iface) = interfaces.first().copied() else {
                            summary.damage = Some(Damage {
                                offset,
                                reason: "simple packet block before any interface description".into(),
                            });
                            break;
                        };
                        summary.packets += 1;
                        sink(Frame {
                            linktype: iface.linktype,
                            ts_us: last_ts,
                            data: spb.data,
                            end_offset: offset + len as u64,
                        });
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(len);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if let Err(e) = reader.refill() {
                    summary.damage = Some(Damage { offset, reason: describe(&e) });
                    break;
                }
            }
            Err(PcapError::BufferTooSmall) => {
                let wanted = reader.data().len().max(1 << 20) * 2;
                if wanted > MAX_BLOCK || !reader.grow(wanted) {
                    summary.damage = Some(Damage {
                        offset,
                        reason: format!("block larger than {} MiB: length field damaged", MAX_BLOCK >> 20),
                    });
                    break;
                }
                if let Err(e) = reader.refill() {
                    summary.damage = Some(Damage { offset, reason: describe(&e) });
                    break;
                }
            }
            Err(e) => {
                summary.damage = Some(Damage { offset, reason: describe(&e) });
                break;
            }
        }
    }
    Ok(summary)
}

fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::Eof => "end of file".into(),
        PcapError::UnexpectedEof | PcapError::Incomplete(_) => "file ends in the middle of a block (truncated)".into(),
        PcapError::BufferTooSmall => "block too large for the read buffer".into(),
        PcapError::ReadError => "read error".into(),
        PcapError::HeaderNotRecognized => "header not recognized".into(),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => format!("malformed block ({kind:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = Vec<(i32, u64, Vec<u8>, u64)>;

    fn through(read: impl FnOnce(&mut dyn FnMut(Frame<'_>)) -> ReadSummary) -> (Frames, ReadSummary) {
        let mut frames = Vec::new();
        let summary = read(&mut |f: Frame<'_>| frames.push((f.linktype, f.ts_us, f.data.to_vec(), f.end_offset)));
        (frames, summary)
    }

    /// The hand-written loop and pcap-parser alone see the same frames and the
    /// same damage at the same offset, for the file and every cut of it.
    fn same_as_pcap_parser(bytes: &[u8], cuts: impl Iterator<Item = usize>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        for cut in cuts {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let ours = through(|sink| read_capture(&path, sink).unwrap());
            let file_bytes = cut as u64;
            let summary = ReadSummary { file_bytes, ..Default::default() };
            let theirs = through(|sink| {
                read_with_pcap_parser(File::open(&path).unwrap(), 0, summary, Blocks::AllByPcapParser, sink).unwrap()
            });
            assert_eq!(ours, theirs, "cut at {cut}");
        }
    }

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(name)).unwrap()
    }

    /// Hand-read enhanced packet blocks: both byte orders, several sections
    /// and interfaces, blocks with options (left to pcap-parser), and a
    /// damaged file, each cut at every length (the large one at ~97 points).
    #[test]
    fn plain_pcapng_packets_agree_with_pcap_parser() {
        for name in [
            "test001-be.pcapng",
            "test001-le.pcapng",
            "test010-le.pcapng",
            "test016-be.pcapng",
            "test016-le.pcapng",
            "test017-be.pcapng",
            "test017-le.pcapng",
            "err-buffertoosmall.pcapng",
        ] {
            let bytes = data(&format!("formats/{name}"));
            same_as_pcap_parser(&bytes, 0..=bytes.len());
        }
        let bytes = data("formats/wireshark_samples-test.pcapng");
        same_as_pcap_parser(&bytes, (0..=bytes.len()).step_by(bytes.len() / 97).chain([bytes.len()]));
        // Most of its packets took the hand-written path.
        let (mut plain, mut all) = (0, 0);
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            plain += usize::from(plain_epb(&bytes[at..], false).is_some());
            all += usize::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 6);
            at += len;
        }
        assert!(all > 5000 && plain * 10 > all * 9, "{plain} of {all} enhanced packet blocks read by hand");
    }

    /// The mapped reader sees what the read() reader sees (frames, offsets,
    /// damage), for every cut of the classic captures and with windows
    /// smaller than a record, between records and inside them.
    #[test]
    fn mapped_classic_pcap_agrees_with_read_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        for name in ["formats/ntp.pcap", "scans/port_scan.pcap", "scans/backscatter.trace", "zeek/wikipedia.pcap"] {
            let bytes = data(name);
            let step = (bytes.len() / 61).max(1);
            for cut in (0..=bytes.len()).step_by(step).chain([bytes.len(), 23, 24, 25, 40, 41]) {
                std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
                let streamed = through(|sink| read_file(&path, None, sink).unwrap());
                for window in [70, 1500, 64 << 10, MAPPED_WINDOW] {
                    let mapped = through(|sink| read_file(&path, Some(window), sink).unwrap());
                    assert_eq!(mapped, streamed, "{name} cut at {cut}, window {window}");
                }
            }
        }
    }

    #[test]
    fn classic_pcap_loop_agrees_with_pcap_parser() {
        let ntp = data("formats/ntp.pcap");
        same_as_pcap_parser(&ntp, 0..=ntp.len());
        for name in ["scans/port_scan.pcap", "scans/backscatter.trace", "formats/modified-format.pcap"] {
            let bytes = data(name);
            same_as_pcap_parser(&bytes, (0..=bytes.len()).step_by(997).chain([bytes.len()]));
        }
        // Big-endian, nanosecond clock, and a record too large for the loop in the middle.
        let mut big = Vec::new();
        big.extend_from_slice(&0x4d3c_b2a1u32.to_le_bytes());
        big.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 1]);
        for caplen in [60u32, 3 << 20, 60] {
            big.extend_from_slice(&[0, 0, 0, 7, 0x3b, 0x9a, 0xc9, 0xff]);
            big.extend_from_slice(&caplen.to_be_bytes());
            big.extend_from_slice(&caplen.to_be_bytes());
            big.extend((0..caplen).map(|i| i as u8));
        }
        same_as_pcap_parser(&big, [big.len(), big.len() - 30, 24 + 16 + 60 + 16 + 1000].into_iter());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pcap");
        std::fs::write(&path, &big).unwrap();
        let (frames, summary) = through(|sink| read_capture(&path, sink).unwrap());
        let lengths: Vec<usize> = frames.iter().map(|f| f.2.len()).collect();
        assert_eq!((lengths, summary.damage), (vec![60, 3 << 20, 60], None));
        assert_eq!(frames[0].1, 7 * 1_000_000 + 999_999);
    }
}
