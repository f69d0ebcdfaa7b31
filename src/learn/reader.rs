//! pcap and pcapng reading with pcap-parser: both byte orders, several
//! sections and interfaces (each with its own link type and clock). A damaged
//! file yields every packet before the damage plus an error naming its byte
//! offset; nothing here panics on bad input.

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read};
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
    read_capture_upto(path, u64::MAX, sink)
}

/// [`read_capture`] of the file's first `limit` bytes: threads reading the
/// same growing file see the same packets.
pub fn read_capture_upto(path: &Path, limit: u64, mut sink: impl FnMut(Frame<'_>)) -> std::io::Result<ReadSummary> {
    let file = File::open(path)?;
    let file_bytes = file.metadata()?.len().min(limit);
    let mut file = file.take(limit);
    let mut summary = ReadSummary { file_bytes, ..Default::default() };
    let handover = read_classic(&mut file, &mut summary, &mut sink);
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
pub const CLASSIC_MAX_RECORD: usize = 1 << 18;
/// [`read_classic`]'s read size; a whole record always fits.
const CLASSIC_BUFFER: usize = 2 * CLASSIC_MAX_RECORD;
pub const PCAP_HEADER: usize = 24;
pub const RECORD_HEADER: usize = 16;

/// A classic pcap file's global header: what its record headers mean.
#[derive(Clone, Copy, Debug)]
pub struct ClassicHeader {
    big_endian: bool,
    nanosecond: bool,
    pub linktype: i32,
    /// The snapshot length (0: not given).
    pub snaplen: usize,
}

impl ClassicHeader {
    /// The header at the start of `file`; `None` for anything else (pcapng,
    /// the modified format, damage: all pcap-parser's).
    pub fn parse(file: &[u8]) -> Option<ClassicHeader> {
        let magic: [u8; 4] = file.get(..4).filter(|_| file.len() >= PCAP_HEADER)?.try_into().ok()?;
        let (big_endian, nanosecond) = match u32::from_le_bytes(magic) {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            _ => return None,
        };
        let h = ClassicHeader { big_endian, nanosecond, linktype: 0, snaplen: 0 };
        Some(ClassicHeader { linktype: h.u32_at(file, 20) as i32, snaplen: h.u32_at(file, 16) as usize, ..h })
    }

    #[inline]
    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    /// The captured length of the record whose header starts at `b[pos]`.
    #[inline]
    pub fn caplen(&self, b: &[u8], pos: usize) -> usize {
        self.u32_at(b, pos + 8) as usize
    }

    /// Its length on the wire.
    #[inline]
    pub fn orig_len(&self, b: &[u8], pos: usize) -> usize {
        self.u32_at(b, pos + 12) as usize
    }

    /// Its seconds and fraction (microseconds, or nanoseconds).
    #[inline]
    pub fn ts_parts(&self, b: &[u8], pos: usize) -> (u32, u32) {
        (self.u32_at(b, pos), self.u32_at(b, pos + 4))
    }

    /// Its timestamp in microseconds: nanoseconds are cut to microseconds
    /// (no division per packet otherwise).
    #[inline]
    pub fn ts_us(&self, b: &[u8], pos: usize) -> u64 {
        let (sec, frac) = self.ts_parts(b, pos);
        let frac = if self.nanosecond { u64::from(frac) / 1000 } else { u64::from(frac) };
        u64::from(sec) * 1_000_000 + frac
    }

    /// Fractions of a second per second: 10^6 or 10^9.
    pub fn resolution(&self) -> u32 {
        if self.nanosecond {
            1_000_000_000
        } else {
            1_000_000
        }
    }
}

/// Where [`read_classic`] stopped: pcap-parser goes on with `pending` (bytes
/// already read, to be parsed again) followed by the rest of the file, and
/// `pending` starts at file offset `offset`.
struct Handover {
    pending: Vec<u8>,
    offset: u64,
}

/// The common case read by hand: the records of a classic pcap file, over
/// large read() buffers. It stops at the first thing it is not sure of (not a
/// classic pcap, a huge record, the end of the file cut a record short, a
/// read error) and hands over to pcap-parser there, so damage is described
/// exactly as pcap-parser alone would. The hand-over re-reads the global
/// header: `pending` starts with it and `offset` is shifted to match.
fn read_classic(file: &mut impl Read, summary: &mut ReadSummary, sink: &mut impl FnMut(Frame<'_>)) -> Handover {
    let mut buf = vec![0u8; CLASSIC_BUFFER];
    let mut filled = fill(file, &mut buf, 0);
    // pcapng, the modified format, damage: all pcap-parser's.
    let Some(h) = ClassicHeader::parse(&buf[..filled]) else {
        buf.truncate(filled);
        return Handover { pending: buf, offset: 0 };
    };
    let header: [u8; PCAP_HEADER] = buf[..PCAP_HEADER].try_into().expect("24 bytes");
    let (linktype, snaplen) = (h.linktype, h.snaplen);
    summary.format = "pcap";
    summary.linktypes = vec![linktype];
    let mut pos = PCAP_HEADER;
    // File offset of buf[0].
    let mut base = 0u64;
    loop {
        while filled - pos >= RECORD_HEADER {
            let caplen = h.caplen(&buf, pos);
            // A record longer than the file's snapshot length is a lie, not a
            // cut: say so, where, and read no further.
            if snaplen > 0 && caplen > snaplen {
                summary.damage = Some(Damage {
                    offset: base + pos as u64,
                    reason: format!(
                        "record {} claims {caplen} captured bytes, more than the file's snapshot length {snaplen}: length field damaged",
                        summary.packets + 1
                    ),
                });
                return Handover { pending: Vec::new(), offset: 0 };
            }
            if caplen > CLASSIC_MAX_RECORD || filled - pos - RECORD_HEADER < caplen {
                break;
            }
            let end = pos + RECORD_HEADER + caplen;
            summary.packets += 1;
            sink(Frame {
                linktype,
                ts_us: h.ts_us(&buf, pos),
                data: &buf[pos + RECORD_HEADER..end],
                end_offset: base + end as u64,
            });
            pos = end;
        }
        if filled - pos >= RECORD_HEADER && h.caplen(&buf, pos) > CLASSIC_MAX_RECORD {
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
    let mut pending = header.to_vec();
    pending.extend_from_slice(&buf[pos..filled]);
    Handover { pending, offset: base + pos as u64 - PCAP_HEADER as u64 }
}

/// Read into `buf[filled..]` until it is full, the file ends or a read fails
/// (pcap-parser then meets the same failure and reports it); the new fill level.
fn fill(file: &mut impl Read, buf: &mut [u8], mut filled: usize) -> usize {
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
