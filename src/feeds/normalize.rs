//! Feed text -> aggregated IPv4 and IPv6 networks, ready for an nft
//! interval set (which refuses overlapping elements).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rayon::prelude::*;

use super::formats::{self, Format, FormatError};

/// Lines per parallel chunk: big enough that rayon's overhead is noise.
const CHUNK_BYTES: usize = 1 << 20;
/// Junk lines kept for the warning (all of them are counted).
const JUNK_SHOWN: usize = 5;

/// A feed, parsed and aggregated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
    /// Address entries read, before aggregation.
    pub entries: usize,
    pub junk: Junk,
    /// A CSV header line that was skipped.
    pub header: Option<usize>,
    /// The last line, when it has no newline and is junk or could be the
    /// start of a longer entry (`198.51.0.0/1` of `198.51.0.0/16`): a cut-off download.
    pub truncated: Option<(usize, String)>,
}

impl Parsed {
    pub fn total(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4.iter().map(|&n| IpNet::V4(n)).chain(self.v6.iter().map(|&n| IpNet::V6(n)))
    }
}

/// Lines that hold no usable address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Junk {
    pub count: usize,
    /// The first few, as (line number, text).
    pub examples: Vec<(usize, String)>,
}

impl Junk {
    fn add(&mut self, line: usize, text: &str) {
        self.count += 1;
        if self.examples.len() < JUNK_SHOWN {
            self.examples.push((line, text.chars().take(60).collect()));
        }
    }

    fn merge(&mut self, other: Junk) {
        self.count += other.count;
        let room = JUNK_SHOWN - self.examples.len();
        self.examples.extend(other.examples.into_iter().take(room));
    }

    /// `3 junk lines dropped (line 7: "foo", ...)`, or `None` when clean.
    pub fn warning(&self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let shown: Vec<String> = self.examples.iter().map(|(l, t)| format!("line {l}: {t:?}")).collect();
        let more = if self.count > self.examples.len() { ", ..." } else { "" };
        let s = if self.count == 1 { "" } else { "s" };
        Some(format!("{} junk line{s} dropped ({}{more})", self.count, shown.join(", ")))
    }
}

/// The exact network a token says, `None` when it is not one. Host bits
/// set (`198.51.0.1/16`) make a line junk: the feed does not say what it means.
fn entry(token: &str) -> Option<IpNet> {
    let net = if let Ok(n) = token.parse::<IpNet>() { n } else { IpNet::from(token.parse::<IpAddr>().ok()?) };
    // A /0 would block the whole address family: never a real feed entry.
    (net.trunc() == net && net.prefix_len() > 0).then_some(net)
}

/// What one chunk of lines produced (line numbers relative to the chunk).
#[derive(Default)]
struct ChunkOut {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
    entries: usize,
    junk: Junk,
    lines: usize,
}

impl ChunkOut {
    fn take(&mut self, line: usize, token: &str, raw: &str) {
        match entry(token) {
            Some(net) => {
                self.entries += 1;
                match net {
                    IpNet::V4(n) => self.v4.push(n),
                    IpNet::V6(n) => self.v6.push(n),
                }
            }
            None => self.junk.add(line, raw.trim()),
        }
    }
}

/// Parses and aggregates a feed. Refuses text that is not a feed at all;
/// junk lines inside a feed are dropped and counted.
pub fn parse(text: &str, format: Format, column: usize) -> Result<Parsed, FormatError> {
    // A byte order mark is an editor's, not part of the first entry.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    formats::sniff(text)?;
    let mut out = match format {
        Format::Otx => {
            let mut c = ChunkOut::default();
            for (line, token) in formats::otx_indicators(text)? {
                c.take(line, &token, &token);
            }
            finish(vec![c], None)
        }
        _ => parse_lines(text, format, column),
    };
    out.v4 = Ipv4Net::aggregate(&out.v4);
    out.v6 = Ipv6Net::aggregate(&out.v6);
    Ok(out)
}

fn parse_lines(text: &str, format: Format, column: usize) -> Parsed {
    let (header, body_start, first_line) = if format == Format::Csv { csv_header(text, column) } else { (None, 0, 1) };
    let chunks: Vec<&str> = chunks(&text[body_start..]);
    let outs: Vec<ChunkOut> = chunks
        .par_iter()
        .map(|chunk| {
            let mut c = ChunkOut::default();
            for (i, raw) in chunk.lines().enumerate() {
                c.lines += 1;
                if let Some(token) = formats::line_token(format, raw, column) {
                    c.take(i, token, raw);
                }
            }
            c
        })
        .collect();
    // Chunk-relative line numbers become file line numbers.
    let mut base = first_line;
    let outs = outs
        .into_iter()
        .map(|mut c| {
            c.junk.examples.iter_mut().for_each(|(l, _)| *l += base);
            base += c.lines;
            c
        })
        .collect();
    let mut p = finish(outs, header);
    p.truncated = cut_off_tail(text, format, column, base - 1);
    p
}

/// Characters that can continue an address or prefix length.
const ADDRESS_CHARS: &str = "0123456789abcdefABCDEF:./";

/// The last line when the text stops mid-line on something that is not an
/// address, or on an address the line ends with that one more character
/// would make into another (`198.51.0.0/1` is `198.51.0.0/16` cut short).
fn cut_off_tail(text: &str, format: Format, column: usize, lines: usize) -> Option<(usize, String)> {
    if text.is_empty() || text.ends_with('\n') {
        return None;
    }
    let last = text.rsplit('\n').next()?;
    let token = formats::line_token(format, last, column)?;
    let ends_line = last.trim_end().ends_with(token);
    let cut = match entry(token) {
        None => true,
        Some(_) => ends_line && ADDRESS_CHARS.chars().any(|c| entry(&format!("{token}{c}")).is_some()),
    };
    cut.then(|| (lines, last.trim().to_string()))
}

fn finish(outs: Vec<ChunkOut>, header: Option<usize>) -> Parsed {
    let mut p = Parsed { header, ..Parsed::default() };
    for c in outs {
        p.v4.extend(c.v4);
        p.v6.extend(c.v6);
        p.entries += c.entries;
        p.junk.merge(c.junk);
    }
    p
}

/// Splits text into pieces of about [`CHUNK_BYTES`], each ending at a newline.
fn chunks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = if rest.len() <= CHUNK_BYTES {
            rest.len()
        } else {
            rest[CHUNK_BYTES..].find('\n').map_or(rest.len(), |n| CHUNK_BYTES + n + 1)
        };
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out
}

/// A CSV's first data line is a header when its address column holds no
/// address. Returns (header line number, byte where data starts, its line number).
fn csv_header(text: &str, column: usize) -> (Option<usize>, usize, usize) {
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        offset += raw.len();
        if let Some(token) = formats::line_token(Format::Csv, raw, column) {
            return match entry(token) {
                None => (Some(i + 1), offset, i + 2),
                Some(_) => (None, 0, 1),
            };
        }
    }
    (None, 0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_adjacent_and_overlapping() {
        let p = parse("10.0.0.0/25\n10.0.0.128/25\n10.0.0.7\n2001:db8::/33\n2001:db8:8000::/33\n", Format::Plain, 1)
            .unwrap();
        assert_eq!(p.v4, vec!["10.0.0.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(p.v6, vec!["2001:db8::/32".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(p.entries, 5);
    }

    #[test]
    fn host_bits_make_the_line_junk_with_its_number() {
        let p = parse("192.0.2.0/24\n198.51.0.1/16\n2001:db8::1/32\n", Format::Plain, 1).unwrap();
        assert_eq!(p.v4, vec!["192.0.2.0/24".parse::<Ipv4Net>().unwrap()]);
        assert!(p.v6.is_empty());
        assert_eq!(p.entries, 1);
        let lines: Vec<usize> = p.junk.examples.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3]);
    }

    #[test]
    fn a_last_line_cut_short_is_flagged() {
        // `198.51.0.0/16` cut to `198.51.0.0/1`: host bits, and no newline.
        let cut = parse("192.0.2.0/24\n198.51.0.0/1", Format::Plain, 1).unwrap();
        assert_eq!(cut.truncated, Some((2, "198.51.0.0/1".to_string())));
        // A valid network that one more digit would change is as suspect.
        let cut = parse("192.0.2.0/24\n0.0.0.0/1", Format::Plain, 1).unwrap();
        assert_eq!(cut.truncated, Some((2, "0.0.0.0/1".to_string())));
        let cut = parse("192.0.2.0/24\n2001:db8::/3", Format::Plain, 1).unwrap();
        assert!(cut.truncated.is_some());
        // Complete: a newline, a trailing comment, or nothing could follow.
        for whole in ["198.51.0.0/16\n", "198.51.0.0/16 ; SBL1", "192.0.2.255/32", "2001:db8::/128"] {
            assert_eq!(parse(whole, Format::Spamhaus, 1).unwrap().truncated, None, "{whole}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_not_junk() {
        let p = parse("\u{feff}192.0.2.0/24\n198.51.100.7\n", Format::Plain, 1).unwrap();
        assert_eq!((p.entries, p.junk.count), (2, 0));
        let csv = parse("\u{feff}ip,reason\n192.0.2.1,scan\n", Format::Csv, 1).unwrap();
        assert_eq!((csv.entries, csv.header), (1, Some(1)));
    }

    #[test]
    fn junk_line_numbers_survive_chunking() {
        // Three chunks' worth of lines, junk at known places.
        let mut text = String::new();
        let mut junk_lines = Vec::new();
        for i in 1..=200_000u32 {
            if i % 70_001 == 0 {
                text.push_str("not-an-address\n");
                junk_lines.push(i as usize);
            } else {
                text.push_str(&format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255));
            }
        }
        assert!(chunks(&text).len() >= 3);
        let p = parse(&text, Format::Plain, 1).unwrap();
        assert_eq!(p.junk.count, 2);
        assert_eq!(p.junk.examples.iter().map(|(l, _)| *l).collect::<Vec<_>>(), junk_lines);
    }

    #[test]
    fn slash_zero_is_junk() {
        let p = parse("0.0.0.0/0\n::/0\n", Format::Plain, 1).unwrap();
        assert_eq!((p.total(), p.junk.count), (0, 2));
    }
}
