//! Link and network decoding of captured frames into the few header fields
//! the flow table needs. Lax: a frame cut short by the snaplen still yields
//! its addresses and ports when those were captured.

use std::net::{IpAddr, SocketAddr};

use etherparse::LaxIpSlice;

use super::flows::{Endpoint, FlowKey, ICMP, ICMPV6, TCP, UDP};

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

/// What the flow table needs from one packet, addresses packed in its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub ts_us: u64,
    /// The flow this packet belongs to; for an ICMP error, the quoted packet's.
    pub key: FlowKey,
    /// The packet's source (an ICMP error's: the quoted packet's) is `key.lo`.
    pub from_lo: bool,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Length of the IP packet on the wire (from its header, not the snaplen).
    pub ip_len: u32,
    /// Transport payload length on the wire.
    pub payload_len: u32,
    /// Set for ICMP errors that quote a TCP/UDP/ICMP packet: who sent the error.
    pub error_from: Option<IpAddr>,
    /// [`FlowKey::hash_u64`] of `key`, computed once for the shard choice
    /// and the table lookup.
    pub key_hash: u64,
}

impl Decoded {
    /// Echo reply: its sender answered someone else's request.
    pub fn is_icmp_reply(&self) -> bool {
        let proto = self.key.proto;
        (proto == ICMP && self.icmp_type == 0) || (proto == ICMPV6 && self.icmp_type == 129)
    }

    /// The packet's source and destination (an ICMP error's: the quoted packet's).
    pub fn endpoints(&self) -> (SocketAddr, SocketAddr) {
        let (lo, hi) = self.key.socket_addrs();
        if self.from_lo {
            (lo, hi)
        } else {
            (hi, lo)
        }
    }

    /// Which of `shards` flow-table shards holds this packet's flow: bits
    /// 24..56 of the hash scaled to the count (a multiply: a 64-bit `%`
    /// was a tenth of the reading threads' time), apart from the low bits
    /// the table picks buckets with and the top ones it tags them with.
    pub fn shard(&self, shards: usize) -> usize {
        ((((self.key_hash >> 24) & 0xffff_ffff) * shards as u64) >> 32) as usize
    }
}

/// A packet's headers as read, before they are packed into [`Decoded`].
struct Headers {
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
    v6: bool,
    tcp_flags: u8,
    ip_len: u32,
    payload_len: u32,
    icmp_type: u8,
    icmp_code: u8,
    /// The packet an ICMP error quotes: protocol, source, destination, IPv6.
    quote: Option<(u8, Endpoint, Endpoint, bool)>,
}

impl Headers {
    fn new(proto: u8, src: Endpoint, dst: Endpoint, v6: bool, ip_len: u32, payload_len: u32) -> Headers {
        Headers { proto, src, dst, v6, tcp_flags: 0, ip_len, payload_len, icmp_type: 0, icmp_code: 0, quote: None }
    }

    fn pack(self, ts_us: u64) -> Decoded {
        let (proto, src, dst, v6, error_from) = match self.quote {
            Some((proto, src, dst, v6)) => (proto, src, dst, v6, Some(self.src.ip(self.v6))),
            None => (self.proto, self.src, self.dst, self.v6, None),
        };
        let (key, from_lo) = FlowKey::new(proto, v6, src, dst);
        Decoded {
            ts_us,
            key_hash: key.hash_u64(),
            key,
            from_lo,
            tcp_flags: self.tcp_flags,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            ip_len: self.ip_len,
            payload_len: self.payload_len,
            error_from,
        }
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
const ETHERTYPE_8021Q: u16 = 0x8100;
const ETHERTYPE_8021AD: u16 = 0x88a8;
const ETHERTYPE_QINQ: u16 = 0x9100;

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
/// fields, read directly; plain TCP/UDP is read by hand, any other IP packet
/// through etherparse's lax slicer.
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
    match plain_tcp_udp(ip, ts_us) {
        Some(decoded) => decoded,
        None => careful_ip(ip).map(|h| h.pack(ts_us)),
    }
}

/// Any IP packet, through etherparse's lax slicer.
fn careful_ip(ip: &[u8]) -> Result<Headers, Skip> {
    let (ip, _) = LaxIpSlice::from_slice(ip).map_err(|_| Skip::NotIp)?;
    from_ip(&ip)
}

/// The common case read by hand, straight into the record: IPv4 or IPv6
/// carrying TCP or UDP with no extension headers and not a fragment. `None`
/// sends everything else through etherparse; where both apply they give the
/// same result (see the tests).
#[inline]
fn plain_tcp_udp(ip: &[u8], ts_us: u64) -> Option<Result<Decoded, Skip>> {
    let first = *ip.first()?;
    let (v6, src, dst, ip_len, header_len, end) = match first >> 4 {
        4 => {
            let header_len = usize::from(first & 0xf) * 4;
            let total_len = usize::from(be16(ip, 2)?);
            // A fragment (more-fragments flag or an offset) takes the careful path.
            if header_len < 20 || ip.len() < header_len || total_len < header_len || be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            // Cut short by the snaplen: the payload is what was captured.
            (
                false,
                Endpoint::v4(&ip[12..16]),
                Endpoint::v4(&ip[16..20]),
                total_len,
                header_len,
                total_len.min(ip.len()),
            )
        }
        6 => {
            let end = 40 + usize::from(be16(ip, 4)?);
            // Payload length 0 (jumbogram) and truncation take the careful path.
            if end == 40 || end > ip.len() {
                return None;
            }
            (true, Endpoint::v6(&ip[8..24]), Endpoint::v6(&ip[24..40]), end, 40, end)
        }
        _ => return None,
    };
    let proto = ip[if v6 { 6 } else { 9 }];
    let t = &ip[header_len..end];
    let payload_len = (ip_len - header_len) as u32;
    let (transport_header, tcp_flags) = match proto {
        TCP => match t.get(13) {
            Some(&flags) => (u32::from(t[12] >> 4) * 4, flags),
            None => return Some(Err(Skip::Truncated)),
        },
        UDP if t.len() >= 4 => (8, 0),
        UDP => return Some(Err(Skip::Truncated)),
        _ => return None,
    };
    let (key, from_lo) = FlowKey::new(
        proto,
        v6,
        Endpoint { port: u16::from_be_bytes([t[0], t[1]]), ..src },
        Endpoint { port: u16::from_be_bytes([t[2], t[3]]), ..dst },
    );
    Some(Ok(Decoded {
        ts_us,
        key_hash: key.hash_u64(),
        key,
        from_lo,
        tcp_flags,
        icmp_type: 0,
        icmp_code: 0,
        ip_len: ip_len as u32,
        payload_len: payload_len.saturating_sub(transport_header),
        error_from: None,
    }))
}

/// The IP packet after an EtherType, skipping VLAN tags.
fn after_ether_type(mut ether_type: u16, rest: Option<&[u8]>) -> Result<&[u8], Skip> {
    let mut rest = rest.ok_or(Skip::Truncated)?;
    while matches!(ether_type, ETHERTYPE_8021Q | ETHERTYPE_8021AD | ETHERTYPE_QINQ) {
        ether_type = be16(rest, 2).ok_or(Skip::Truncated)?;
        rest = &rest[4..];
    }
    match ether_type {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        _ => Err(Skip::NotIp),
    }
}

fn from_ip(ip: &LaxIpSlice<'_>) -> Result<Headers, Skip> {
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
    let (src, dst, v6) = endpoints(ip);
    let mut h = Headers::new(payload.ip_number.0, src, dst, v6, ip_len, ip_len.saturating_sub(ip_headers));
    transport(&mut h, payload.payload)?;
    Ok(h)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Source and destination addresses (ports still 0) and whether they are IPv6.
fn endpoints(ip: &LaxIpSlice<'_>) -> (Endpoint, Endpoint, bool) {
    match ip {
        LaxIpSlice::Ipv4(v4) => (Endpoint::v4(&v4.header().source()), Endpoint::v4(&v4.header().destination()), false),
        LaxIpSlice::Ipv6(v6) => (Endpoint::v6(&v6.header().source()), Endpoint::v6(&v6.header().destination()), true),
    }
}

/// Ports, flags and ICMP details from the (possibly truncated) transport bytes.
fn transport(h: &mut Headers, t: &[u8]) -> Result<(), Skip> {
    match h.proto {
        TCP => {
            h.src.port = be16(t, 0).ok_or(Skip::Truncated)?;
            h.dst.port = be16(t, 2).ok_or(Skip::Truncated)?;
            h.tcp_flags = *t.get(13).ok_or(Skip::Truncated)?;
            let header = u32::from(t[12] >> 4) * 4;
            h.payload_len = h.payload_len.saturating_sub(header);
        }
        UDP => {
            h.src.port = be16(t, 0).ok_or(Skip::Truncated)?;
            h.dst.port = be16(t, 2).ok_or(Skip::Truncated)?;
            h.payload_len = h.payload_len.saturating_sub(8);
        }
        ICMP | ICMPV6 => {
            h.icmp_type = *t.first().ok_or(Skip::Truncated)?;
            h.icmp_code = *t.get(1).ok_or(Skip::Truncated)?;
            h.payload_len = h.payload_len.saturating_sub(8);
            let v4 = h.proto == ICMP;
            let (echo_req, echo_rep) = if v4 { (8, 0) } else { (128, 129) };
            let is_error = if v4 { matches!(h.icmp_type, 3 | 4 | 5 | 11 | 12) } else { h.icmp_type < 128 };
            if h.icmp_type == echo_req {
                h.src.port = be16(t, 4).ok_or(Skip::Truncated)?;
            } else if h.icmp_type == echo_rep {
                h.dst.port = be16(t, 4).ok_or(Skip::Truncated)?;
            } else if is_error {
                h.quote = quote(t.get(8..).unwrap_or_default());
            }
        }
        _ => {}
    }
    Ok(())
}

/// The flow of the packet an ICMP error quotes (its IP header and first 8 bytes).
fn quote(inner: &[u8]) -> Option<(u8, Endpoint, Endpoint, bool)> {
    let (ip, _) = LaxIpSlice::from_slice(inner).ok()?;
    let (mut src, mut dst, v6) = endpoints(&ip);
    let payload = ip.payload();
    let proto = payload.ip_number.0;
    let t = payload.payload;
    (src.port, dst.port) = match proto {
        TCP | UDP => (be16(t, 0)?, be16(t, 2)?),
        ICMP | ICMPV6 => (be16(t, 4)?, 0),
        _ => (0, 0),
    };
    Some((proto, src, dst, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every packet's record is copied between threads: keep it small.
    #[test]
    fn decoded_record_stays_small() {
        assert_eq!(std::mem::size_of::<Decoded>(), 88);
    }

    /// Every TCP/UDP packet of the test captures, and every truncation of it:
    /// wherever the hand-written path answers, etherparse answers the same.
    #[test]
    fn plain_path_agrees_with_etherparse() {
        let mut compared = [0u64; 2];
        for name in [
            "formats/wireshark_samples-test.pcapng",
            "scans/port_scan.pcap",
            "scans/multiport_scan.pcap",
            "formats/ntp.pcap",
            "formats/test010-le.pcapng",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/learn").join(name);
            super::super::reader::read_capture(&path, |f| {
                let Some(ip) = (f.linktype == linktype::ETHERNET)
                    .then(|| be16(f.data, 12).and_then(|t| after_ether_type(t, f.data.get(14..)).ok()))
                    .flatten()
                else {
                    return;
                };
                for cut in 0..=ip.len() {
                    if let Some(fast) = plain_tcp_udp(&ip[..cut], f.ts_us) {
                        assert_eq!(
                            fast,
                            careful_ip(&ip[..cut]).map(|h| h.pack(f.ts_us)),
                            "{name}: packet at byte {} cut to {cut}",
                            f.end_offset
                        );
                        compared[usize::from(ip[0] >> 4 == 6)] += 1;
                    }
                }
            })
            .unwrap();
        }
        assert!(compared[0] > 1000 && compared[1] > 100, "too few packets compared: {compared:?}");
    }
}
