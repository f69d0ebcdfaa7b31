//! pcap and pcapng reading with pcap-parser: both byte orders, several
//! sections and interfaces (each with its own link type and clock). A damaged
//! file yields every packet before the damage plus an error naming its byte
//! offset; nothing here panics on bad input.

use std::fmt;
use std::fs::File;
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
pub fn read_capture(path: &Path, mut sink: impl FnMut(Frame<'_>)) -> std::io::Result<ReadSummary> {
    let file = File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let mut summary = ReadSummary { file_bytes, ..Default::default() };
    // Small files get a small buffer; a larger block grows it (BufferTooSmall).
    let capacity = (file_bytes as usize).clamp(64 << 10, 1 << 20);
    let mut reader = match create_reader(capacity, file) {
        Ok(r) => r,
        Err(PcapError::Eof) => {
            summary.damage = Some(Damage { offset: 0, reason: "empty file: not a pcap or pcapng capture".into() });
            return Ok(summary);
        }
        Err(e) => {
            summary.damage = Some(Damage { offset: 0, reason: format!("not a pcap or pcapng capture ({})", describe(&e)) });
            return Ok(summary);
        }
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut last_ts = 0u64;
    loop {
        let offset = reader.consumed() as u64;
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        summary.format = if h.is_modified_format() { "pcap (modified)" } else { "pcap" };
                        let resolution = if h.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
                        interfaces = vec![Interface { linktype: h.network.0, resolution, offset_secs: 0 }];
                        summary.linktypes.push(h.network.0);
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let iface = interfaces[0];
                        let frac = u64::from(b.ts_usec) * 1_000_000 / iface.resolution;
                        last_ts = u64::from(b.ts_sec) * 1_000_000 + frac;
                        summary.packets += 1;
                        sink(Frame { linktype: iface.linktype, ts_us: last_ts, data: b.data, end_offset: offset + len as u64 });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        summary.format = "pcapng";
                        summary.sections += 1;
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let Some(resolution) = idb.ts_resolution() else {
                            summary.damage = Some(Damage { offset, reason: format!("interface {} has an invalid timestamp resolution {}", interfaces.len(), idb.if_tsresol) });
                            break;
                        };
                        interfaces.push(Interface { linktype: idb.linktype.0, resolution, offset_secs: idb.ts_offset() });
                        summary.linktypes.push(idb.linktype.0);
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let Some(iface) = interfaces.get(epb.if_id as usize).copied() else {
                            summary.damage = Some(Damage {
                                offset,
                                reason: format!("packet on interface {} but this section declares {} interface(s)", epb.if_id, interfaces.len()),
                            });
                            break;
                        };
                        let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let us = (u128::from(raw) * 1_000_000 / u128::from(iface.resolution)) as i128 + i128::from(iface.offset_secs) * 1_000_000;
                        last_ts = us.clamp(0, i128::from(u64::MAX)) as u64;
                        summary.packets += 1;
                        sink(Frame { linktype: iface.linktype, ts_us: last_ts, data: epb.data, end_offset: offset + len as u64 });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // No timestamp of its own: keep the clock where it was.
                        let Some(iface) = interfaces.first().copied() else {
                            summary.damage = Some(Damage { offset, reason: "simple packet block before any interface description".into() });
                            break;
                        };
                        summary.packets += 1;
                        sink(Frame { linktype: iface.linktype, ts_us: last_ts, data: spb.data, end_offset: offset + len as u64 });
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
                    summary.damage = Some(Damage { offset, reason: format!("block larger than {} MiB: length field damaged", MAX_BLOCK >> 20) });
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
