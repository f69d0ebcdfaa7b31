//! Link and network decoding of captured frames into the few header fields
//! the flow table needs. Lax: a frame cut short by the snaplen still yields
//! its addresses and ports when those were captured.

use std::net::{IpAddr, SocketAddr};

use etherparse::LaxIpSlice;

use super::flows::{FlowKey, ICMP, ICMPV6, TCP, UDP};

/// Link types (LINKTYPE_* numbers from the pcap registry) that we decode.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_BSD: i32 = 12;
    pub const RAW_OPENBSD: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// The packet quoted inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What the flow table needs from one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub ts_us: u64,
    pub proto: u8,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// For ICMP echo: the identifier on the requester's side, 0 on the other.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// Length of the IP packet on the wire (from its header, not the snaplen).
    pub ip_len: u32,
    /// Transport payload length on the wire.
    pub payload_len: u32,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Set for ICMP errors that quote a TCP/UDP/ICMP packet.
    pub quote: Option<Quote>,
    /// Hash of [`Decoded::table_key`] (shard selection and the flow table
    /// lookup), filled in by [`Decoded::fill_key_hash`] on the reader thread.
    pub key_hash: u64,
}

impl Decoded {
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.src_ip, self.sport)
    }

    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.dst_ip, self.dport)
    }

    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.proto, self.src(), self.dst())
    }

    /// The flow this packet belongs to: for an ICMP error, the quoted one.
    pub fn table_key(&self) -> FlowKey {
        match self.quote {
            Some(q) => FlowKey::new(q.proto, q.src, q.dst),
            None => self.key(),
        }
    }

    /// Fill in [`Decoded::key_hash`].
    pub fn fill_key_hash(&mut self) {
        self.key_hash = self.table_key().hash_u64();
    }

    /// Echo reply: its sender answered someone else's request.
    pub fn is_icmp_reply(&self) -> bool {
        (self.proto == ICMP && self.icmp_type == 0) || (self.proto == ICMPV6 && self.icmp_type == 129)
    }

    pub fn shard(&self, shards: usize) -> usize {
        (self.key_hash % shards as u64) as usize
    }
}

/// Why a frame was not decoded (counted, never fatal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// ARP, LLDP, ... : not IP.
    NotIp,
    /// A link type we do not decode.
    LinkType,
    /// Too short for the headers it claims.
    Truncated,
    /// A later IP fragment: it carries no ports.
    Fragment,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the old QinQ tag: 4 bytes each, then the real type.
const ETHERTYPE_VLANS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::NotIp => "not IP",
            Skip::LinkType => "unsupported link type",
            Skip::Truncated => "truncated",
            Skip::Fragment => "later IP fragment",
        }
    }
}

/// Decode one frame of the given link type. The link layer is a few fixed
/// fields, read directly; the IP layer goes through etherparse's lax slicer.
pub fn decode(linktype: i32, frame: &[u8], ts_us: u64) -> Result<Decoded, Skip> {
    use linktype::*;
    let ip = match linktype {
        ETHERNET => after_ether_type(be16(frame, 12).ok_or(Skip::Truncated)?, frame.get(14..))?,
        RAW | RAW_BSD | RAW_OPENBSD | IPV4 | IPV6 => frame,
        // Linux "cooked" captures: the protocol at byte 14 (SLL) or 0 (SLL2).
        LINUX_SLL => after_ether_type(be16(frame, 14).ok_or(Skip::Truncated)?, frame.get(16..))?,
        LINUX_SLL2 => after_ether_type(be16(frame, 0).ok_or(Skip::Truncated)?, frame.get(20..))?,
        // A 4-byte address family in the capturing host's byte order.
        NULL | LOOP => frame.get(4..).ok_or(Skip::Truncated)?,
        _ => return Err(Skip::LinkType),
    };
    plain_tcp_udp(ip, ts_us).unwrap_or_else(|| careful_ip(ip, ts_us))
}

/// Any IP packet, through etherparse's lax slicer.
fn careful_ip(ip: &[u8], ts_us: u64) -> Result<Decoded, Skip> {
    let (ip, _) = LaxIpSlice::from_slice(ip).map_err(|_| Skip::NotIp)?;
    from_ip(&ip, ts_us)
}

/// The common case read by hand: IPv4 or IPv6 carrying TCP or UDP with no
/// extension headers and not a fragment. `None` sends everything else through
/// etherparse; where both apply they give the same result (see the tests).
fn plain_tcp_udp(ip: &[u8], ts_us: u64) -> Option<Result<Decoded, Skip>> {
    let first = *ip.first()?;
    let (proto, src_ip, dst_ip, ip_len, header_len, end) = match first >> 4 {
        4 => {
            let header_len = usize::from(first & 0xf) * 4;
            let total_len = usize::from(be16(ip, 2)?);
            // A fragment (more-fragments flag or an offset) takes the careful path.
            if header_len < 20 || ip.len() < header_len || total_len < header_len || be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            let addr = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).expect("4 bytes"));
            // Cut short by the snaplen: the payload is what was captured.
            (ip[9], addr(12), addr(16), total_len as u32, header_len, total_len.min(ip.len()))
        }
        6 => {
            let end = 40 + usize::from(be16(ip, 4)?);
            // Payload length 0 (jumbogram) and truncation take the careful path.
            if end == 40 || end > ip.len() {
                return None;
            }
            let addr = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).expect("16 bytes"));
            (ip[6], addr(8), addr(24), end as u32, 40, end)
        }
        _ => return None,
    };
    if proto != TCP && proto != UDP {
        return None;
    }
    let mut d = Decoded {
        ts_us,
        proto,
        src_ip,
        dst_ip,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ip_len,
        payload_len: ip_len - header_len as u32,
        icmp_type: 0,
        icmp_code: 0,
        quote: None,
        key_hash: 0,
    };
    Some(transport(&mut d, &ip[header_len..end]).map(|()| d))
}

/// The IP packet after an EtherType, skipping VLAN tags.
fn after_ether_type(mut ether_type: u16, rest: Option<&[u8]>) -> Result<&[u8], Skip> {
    let mut rest = rest.ok_or(Skip::Truncated)?;
    while ETHERTYPE_VLANS.contains(&ether_type) {
        ether_type = be16(rest, 2).ok_or(Skip::Truncated)?;
        rest = &rest[4..];
    }
    match ether_type {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        _ => Err(Skip::NotIp),
    }
}

fn from_ip(ip: &LaxIpSlice<'_>, ts_us: u64) -> Result<Decoded, Skip> {
    let (ip_len, header_start) = match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            if v4.payload().fragmented && h.fragments_offset().value() != 0 {
                return Err(Skip::Fragment);
            }
            (u32::from(h.total_len()), h.slice().as_ptr())
        }
        LaxIpSlice::Ipv6(v6) => {
            if v6.payload().fragmented {
                return Err(Skip::Fragment);
            }
            (40 + u32::from(v6.header().payload_length()), v6.header().slice().as_ptr())
        }
    };
    let payload = ip.payload();
    // Header bytes before the transport: IP header plus extensions.
    let ip_headers = (payload.payload.as_ptr() as usize - header_start as usize) as u32;
    let mut d = Decoded {
        ts_us,
        proto: payload.ip_number.0,
        src_ip: ip.source_addr(),
        dst_ip: ip.destination_addr(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ip_len,
        payload_len: ip_len.saturating_sub(ip_headers),
        icmp_type: 0,
        icmp_code: 0,
        quote: None,
        key_hash: 0,
    };
    transport(&mut d, payload.payload)?;
    Ok(d)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Ports, flags and ICMP details from the (possibly truncated) transport bytes.
fn transport(d: &mut Decoded, t: &[u8]) -> Result<(), Skip> {
    match d.proto {
        TCP => {
            d.sport = be16(t, 0).ok_or(Skip::Truncated)?;
            d.dport = be16(t, 2).ok_or(Skip::Truncated)?;
            d.tcp_flags = *t.get(13).ok_or(Skip::Truncated)?;
            let header = u32::from(t[12] >> 4) * 4;
            d.payload_len = d.payload_len.saturating_sub(header);
        }
        UDP => {
            d.sport = be16(t, 0).ok_or(Skip::Truncated)?;
            d.dport = be16(t, 2).ok_or(Skip::Truncated)?;
            d.payload_len = d.payload_len.saturating_sub(8);
        }
        ICMP | ICMPV6 => {
            d.icmp_type = *t.first().ok_or(Skip::Truncated)?;
            d.icmp_code = *t.get(1).ok_or(Skip::Truncated)?;
            d.payload_len = d.payload_len.saturating_sub(8);
            let v4 = d.proto == ICMP;
            let (echo_req, echo_rep) = if v4 { (8, 0) } else { (128, 129) };
            let is_error = if v4 { matches!(d.icmp_type, 3 | 4 | 5 | 11 | 12) } else { d.icmp_type < 128 };
            if d.icmp_type == echo_req {
                d.sport = be16(t, 4).ok_or(Skip::Truncated)?;
            } else if d.icmp_type == echo_rep {
                d.dport = be16(t, 4).ok_or(Skip::Truncated)?;
            } else if is_error {
                d.quote = quote(t.get(8..).unwrap_or_default());
            }
        }
        _ => {}
    }
    Ok(())
}

/// The flow of the packet an ICMP error quotes (its IP header and first 8 bytes).
fn quote(inner: &[u8]) -> Option<Quote> {
    let (ip, _) = LaxIpSlice::from_slice(inner).ok()?;
    let (src, dst, payload) = (ip.source_addr(), ip.destination_addr(), ip.payload());
    let proto = payload.ip_number.0;
    let t = payload.payload;
    let (sport, dport) = match proto {
        TCP | UDP => (be16(t, 0)?, be16(t, 2)?),
        ICMP | ICMPV6 => (be16(t, 4)?, 0),
        _ => (0, 0),
    };
    Some(Quote { proto, src: SocketAddr::new(src, sport), dst: SocketAddr::new(dst, dport) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TCP/UDP packet of the test captures, and every truncation of it:
    /// wherever the hand-written path answers, etherparse answers the same.
    #[test]
    fn plain_path_agrees_with_etherparse() {
        let mut compared = [0u64; 2];
        for name in ["formats/wireshark_samples-test.pcapng", "scans/port_scan.pcap", "scans/multiport_scan.pcap", "formats/ntp.pcap", "formats/test010-le.pcapng"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(name);
            super::super::reader::read_capture(&path, |f| {
                let Some(ip) = (f.linktype == linktype::ETHERNET).then(|| be16(f.data, 12).and_then(|t| after_ether_type(t, f.data.get(14..)).ok())).flatten() else {
                    return;
                };
                for cut in 0..=ip.len() {
                    if let Some(fast) = plain_tcp_udp(&ip[..cut], f.ts_us) {
                        assert_eq!(fast, careful_ip(&ip[..cut], f.ts_us), "{name}: packet at byte {} cut to {cut}", f.end_offset);
                        compared[usize::from(ip[0] >> 4 == 6)] += 1;
                    }
                }
            })
            .unwrap();
        }
        assert!(compared[0] > 1000 && compared[1] > 100, "too few packets compared: {compared:?}");
    }
}
