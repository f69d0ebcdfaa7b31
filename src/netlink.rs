//! The one netlink layer for the netfilter subsystems phantomc reads
//! (nf_tables objects in `nft`, conntrack in `host`): sockets and event
//! subscriptions, requests, the dump loop, message framing and attribute
//! walking, on netlink-packet-core's buffer types. Each subsystem decodes its
//! own attributes on top of it.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NlasIterator, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::Socket;

// include/uapi/linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_ACK: u16 = 4;
/// struct nfgenmsg: family, version, resource id.
pub const NFGENMSG_LEN: usize = 4;

/// A netfilter netlink socket of the calling thread's network namespace.
pub fn socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// A socket subscribed to the multicast `groups` of a netfilter subsystem
/// (conntrack events, later NFLOG), with a receive buffer of `buffer_bytes`.
pub fn subscribe(groups: &[u32], buffer_bytes: libc::c_int) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    for &group in groups {
        socket.add_membership(group)?;
    }
    force_buffer(&socket, libc::SO_RCVBUFFORCE, buffer_bytes);
    Ok(socket)
}

/// SO_RCVBUFFORCE or SO_SNDBUFFORCE (CAP_NET_ADMIN, which netfilter needs
/// anyway) go past net.core.rmem_max/wmem_max; a smaller receive buffer
/// only risks ENOBUFS, which the reader counts.
fn force_buffer(socket: &Socket, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits up to `timeout` for `socket` to have a datagram.
pub fn readable(socket: &Socket, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

/// One netfilter request: `kind` is `subsystem << 8 | message`, `family` the
/// nfgenmsg family, then the attributes (kind, value).
pub fn request(kind: u16, flags: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in attrs {
        push_attr(&mut body, *k, v);
    }
    request_with(kind, flags, family, &body)
}

/// A request whose attributes are already encoded (by a subsystem's own
/// netlink-packet types).
pub fn request_with(kind: u16, flags: u16, family: u8, attrs: &[u8]) -> Vec<u8> {
    request_for(kind, flags, family, 0, attrs)
}

/// A request whose nfgenmsg names a resource (an NFLOG group, a queue).
pub fn request_for(kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&res_id.to_be_bytes());
    body.extend_from_slice(attrs);
    let mut msg = vec![0; NLMSG_HDRLEN + body.len()];
    msg[NLMSG_HDRLEN..].copy_from_slice(&body);
    let mut buf = NetlinkBuffer::new(&mut msg[..]);
    buf.set_length(u32::try_from(NLMSG_HDRLEN + body.len()).unwrap_or(u32::MAX));
    buf.set_message_type(kind);
    buf.set_flags(flags | NLM_F_REQUEST);
    msg
}

/// A dump request (`NLM_F_DUMP`).
pub fn dump_request(kind: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    request(kind, NLM_F_DUMP, family, attrs)
}

// include/uapi/linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

/// Sends `messages` (built by [`request_with`]) as one nfnetlink batch of
/// `subsystem`: the kernel commits all of them or none. The kernel handles
/// a batch inside `sendmsg`, so its errors are queued when `send` returns;
/// the last message asks for an acknowledgement, which proves the commit.
pub fn batch(subsystem: u16, messages: &[Vec<u8>]) -> io::Result<()> {
    let unspec = libc::AF_UNSPEC as u8;
    let mut out = request_for(NFNL_MSG_BATCH_BEGIN, 0, unspec, subsystem, &[]);
    // One allocation for the whole batch (megabytes for a 10,000-rule policy).
    out.reserve(messages.iter().map(Vec::len).sum::<usize>() + out.len());
    let mut last_seq = 0;
    for (i, m) in messages.iter().enumerate() {
        let at = out.len();
        out.extend_from_slice(m);
        let mut buf = NetlinkBuffer::new(&mut out[at..]);
        last_seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
        buf.set_sequence_number(last_seq);
        if i + 1 == messages.len() {
            let flags = buf.flags();
            buf.set_flags(flags | NLM_F_ACK);
        }
    }
    out.extend(request_for(NFNL_MSG_BATCH_END, 0, unspec, subsystem, &[]));
    let socket = socket()?;
    let room = libc::c_int::try_from(out.len() + (1 << 20)).unwrap_or(libc::c_int::MAX);
    force_buffer(&socket, libc::SO_SNDBUFFORCE, room);
    force_buffer(&socket, libc::SO_RCVBUFFORCE, 4 << 20);
    socket.send(&out, 0)?;
    let mut acked = messages.is_empty();
    let mut buf = Vec::with_capacity(1 << 16);
    while readable(&socket, Duration::ZERO) {
        buf.clear();
        socket.recv(&mut buf, 0)?;
        let mut offset = 0;
        while offset + NLMSG_HDRLEN <= buf.len() {
            let msg = NetlinkBuffer::new_checked(&buf[offset..]).map_err(|e| malformed_at(offset, &e.to_string()))?;
            if msg.message_type() == NLMSG_ERROR {
                let payload = msg.payload();
                let errno = errno_of(payload).ok_or_else(|| malformed_at(offset, "error message"))?;
                if errno != 0 {
                    // The refused message's header follows the errno.
                    let what = match payload.get(4..4 + NLMSG_HDRLEN) {
                        Some(h) => {
                            let kind = u16::from_ne_bytes([h[4], h[5]]);
                            let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                            format!(" (message {seq} of {}, type {kind:#06x})", messages.len())
                        }
                        None => String::new(),
                    };
                    let e = io::Error::from_raw_os_error(-errno);
                    return Err(io::Error::new(e.kind(), format!("{e}{what}")));
                }
                acked |= msg.sequence_number() == last_seq;
            }
            offset += (msg.length() as usize).next_multiple_of(4);
        }
    }
    if acked {
        Ok(())
    } else {
        Err(io::Error::other("the kernel did not acknowledge the batch"))
    }
}

/// The errno of an NLMSG_ERROR payload (native byte order).
fn errno_of(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// Appends one attribute, padded to 4 bytes.
pub fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

/// Appends a nested attribute built by `inner`.
pub fn push_nested(out: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut value = Vec::new();
    inner(&mut value);
    push_attr(out, kind | NLA_F_NESTED, &value);
}

/// One reply message: its type (`subsystem << 8 | message`), flags, where it
/// starts in its datagram, and its attributes (after the nfgenmsg header).
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub kind: u16,
    /// The nfgenmsg family: a dump of `NFPROTO_UNSPEC` answers for every family.
    pub family: u8,
    pub flags: u16,
    pub offset: usize,
    pub body: &'a [u8],
}

/// Sends `request` and hands every reply message to `each`, until the dump
/// is done. A kernel error ends it as an `io::Error` with the kernel's errno.
pub fn dump(request: &[u8], each: &mut dyn FnMut(Message<'_>) -> io::Result<()>) -> io::Result<()> {
    let socket = socket()?;
    socket.send(request, 0)?;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        socket.recv(&mut buf, 0)?;
        if walk_datagram(&buf, each)? == Reply::Done {
            return Ok(());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    More,
    Done,
}

/// A reply that does not parse: where in its datagram and why. Carried
/// inside an `io::Error` of kind `InvalidData` (see [`Malformed::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Where the message starts in its datagram (unknown inside an attribute).
    pub offset: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(at) => write!(f, "malformed netfilter netlink reply at byte {at}: {}", self.reason),
            None => write!(f, "malformed netfilter netlink reply: {}", self.reason),
        }
    }
}

impl std::error::Error for Malformed {}

impl Malformed {
    /// The malformed-reply details of `e`, if that is what it is.
    pub fn of(e: &io::Error) -> Option<&Malformed> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Malformed>())
    }
}

/// A malformed-reply error at byte `offset` of its datagram.
pub fn malformed_at(offset: usize, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Malformed { offset: Some(offset), reason: what.to_string() })
}

/// A malformed-reply error inside an attribute.
pub fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Malformed { offset: None, reason: what.to_string() })
}

/// The messages of one datagram (several netlink messages, 4-byte aligned).
pub fn walk_datagram(buf: &[u8], each: &mut dyn FnMut(Message<'_>) -> io::Result<()>) -> io::Result<Reply> {
    let mut offset = 0;
    while offset + NLMSG_HDRLEN <= buf.len() {
        let msg = NetlinkBuffer::new_checked(&buf[offset..]).map_err(|e| malformed_at(offset, &e.to_string()))?;
        let len = msg.length() as usize;
        let payload = &buf[offset + NLMSG_HDRLEN..offset + len];
        match msg.message_type() {
            NLMSG_DONE => return Ok(Reply::Done),
            NLMSG_ERROR => {
                let errno = errno_of(payload).ok_or_else(|| malformed_at(offset, "error message"))?;
                // An acknowledgement (errno 0) ends nothing in a dump.
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            kind => {
                let body = payload.get(NFGENMSG_LEN..).ok_or_else(|| malformed_at(offset, "short message"))?;
                let family = payload.first().copied().unwrap_or(0);
                each(Message { kind, family, flags: msg.flags(), offset, body })?;
            }
        }
        offset += len.next_multiple_of(4);
    }
    Ok(Reply::More)
}

/// The attributes of `bytes` as (kind without flags, value).
pub fn attrs(bytes: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    NlasIterator::new(bytes).map(|a| {
        let a = a.map_err(|e| malformed(&e.to_string()))?;
        let (kind, len) = (a.kind() & NLA_TYPE_MASK, usize::from(a.length()));
        // The value borrows from `bytes`, not from the iterator's buffer.
        let whole: &[u8] = a.into_inner();
        Ok((kind, whole.get(4..len).ok_or_else(|| malformed("attribute length"))?))
    })
}

/// The value of the first attribute of kind `kind`.
pub fn attr(bytes: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    for a in attrs(bytes) {
        let (k, v) = a?;
        if k == kind {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// A NUL-terminated string attribute.
pub fn str_value(v: &[u8]) -> String {
    String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned()
}

pub fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn be_i32(v: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

// include/uapi/linux/netfilter/nfnetlink_log.h
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_MARK: u16 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// One packet an nft `log group N` rule sent to userspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NflogPacket {
    /// The rule's log prefix.
    pub prefix: String,
    /// Ethertype of the payload (0x0800 IPv4, 0x86dd IPv6).
    pub hw_protocol: u16,
    /// Netfilter hook number the packet was logged at.
    pub hook: u8,
    pub mark: Option<u32>,
    /// Interface indexes.
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// The packet from its network header on, cut at the copy range.
    pub payload: Vec<u8>,
}

/// A netlink socket bound to NFLOG groups of this network namespace: the
/// kernel sends it every packet logged with `log group N` there.
pub struct Nflog {
    socket: Socket,
    buf: Vec<u8>,
}

impl Nflog {
    /// Binds `groups`, asking for the first `copy` bytes of each packet. Only
    /// one listener may hold a group (another gets EBUSY).
    pub fn bind(groups: &[u16], copy: u32) -> io::Result<Nflog> {
        let socket = socket()?;
        force_buffer(&socket, libc::SO_RCVBUFFORCE, 4 << 20);
        let mut nflog = Nflog { socket, buf: Vec::with_capacity(1 << 16) };
        let config = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG;
        let mut mode = copy.to_be_bytes().to_vec();
        mode.extend([NFULNL_COPY_PACKET, 0]);
        let unspec = libc::AF_UNSPEC as u8;
        for &group in groups {
            for (kind, value) in [(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND][..]), (NFULA_CFG_MODE, &mode[..])] {
                let mut attr = Vec::new();
                push_attr(&mut attr, kind, value);
                nflog.ack(&request_for(config, NLM_F_ACK, unspec, group, &attr))?;
            }
        }
        Ok(nflog)
    }

    /// Sends a configuration request and waits for the kernel's answer.
    fn ack(&mut self, request: &[u8]) -> io::Result<()> {
        self.socket.send(request, 0)?;
        self.buf.clear();
        self.socket.recv(&mut self.buf, 0)?;
        walk_datagram(&self.buf, &mut |_| Ok(())).map(|_| ())
    }

    /// Waits up to `timeout` for the next datagram and returns the packets
    /// in it (none when the wait ran out).
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Vec<NflogPacket>> {
        if !readable(&self.socket, timeout) {
            return Ok(Vec::new());
        }
        self.buf.clear();
        self.socket.recv(&mut self.buf, 0)?;
        let mut out = Vec::new();
        walk_datagram(&self.buf, &mut |m| {
            if m.kind == NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET {
                out.push(nflog_packet(m.body)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The attributes of one NFULNL_MSG_PACKET (after its nfgenmsg).
pub fn nflog_packet(body: &[u8]) -> io::Result<NflogPacket> {
    let mut p = NflogPacket::default();
    for a in attrs(body) {
        let (kind, v) = a?;
        match kind {
            NFULA_PACKET_HDR => {
                p.hw_protocol = v.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                p.hook = v.get(2).copied().unwrap_or(0);
            }
            NFULA_MARK => p.mark = be_u32(v),
            NFULA_IFINDEX_INDEV => p.indev = be_u32(v),
            NFULA_IFINDEX_OUTDEV => p.outdev = be_u32(v),
            NFULA_PAYLOAD => p.payload = v.to_vec(),
            NFULA_PREFIX => p.prefix = str_value(v),
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// One netlink message of `kind` around `body` (which starts with its nfgenmsg).
    pub fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = request(kind, 0, 0, &[]);
        m.truncate(NLMSG_HDRLEN);
        m.extend_from_slice(body);
        let len = u32::try_from(m.len()).unwrap();
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn requests_round_trip_through_the_attribute_walk() {
        let req = dump_request(10 << 8 | 7, 1, &[(1, b"phantomc\0"), (2, b"in")]);
        assert_eq!(req.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(req[..4].try_into().unwrap()) as usize, req.len());
        let body = &req[NLMSG_HDRLEN + NFGENMSG_LEN..];
        let found: Vec<(u16, Vec<u8>)> =
            attrs(body).map(|a| a.map(|(k, v)| (k, v.to_vec()))).collect::<Result<_, _>>().unwrap();
        assert_eq!(found, vec![(1, b"phantomc\0".to_vec()), (2, b"in".to_vec())]);
        assert_eq!(attr(body, 2).unwrap(), Some(&b"in"[..]));
        assert_eq!(str_value(attr(body, 1).unwrap().unwrap()), "phantomc");
    }

    #[test]
    fn datagrams_end_at_done_and_report_kernel_errors() {
        let mut seen = Vec::new();
        let mut dgram = [message(0x0a06, &[1, 0, 0, 0, 9]), message(0x0a06, &[1, 0, 0, 0])].concat();
        let r = walk_datagram(&dgram, &mut |m| {
            seen.push((m.kind, m.body.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(r, Reply::More);
        assert_eq!(seen, vec![(0x0a06, 1), (0x0a06, 0)]);
        dgram.extend(message(NLMSG_DONE, &[0; 4]));
        dgram.extend(message(0x0a06, &[1, 0, 0, 0]));
        seen.clear();
        assert_eq!(
            walk_datagram(&dgram, &mut |m| {
                seen.push((m.kind, m.body.len()));
                Ok(())
            })
            .unwrap(),
            Reply::Done
        );
        assert_eq!(seen.len(), 2, "nothing after DONE belongs to the dump");
        let eperm = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        let err = walk_datagram(&eperm, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let mut cut = [message(0x0a06, &[1, 0, 0, 0]), message(0x0a06, &[1, 0, 0, 0])].concat();
        let second = cut.len() / 2;
        cut[second] = 200; // claims more bytes than the datagram holds
        let err = walk_datagram(&cut, &mut |_| Ok(())).unwrap_err();
        assert_eq!(Malformed::of(&err).and_then(|m| m.offset), Some(second), "{err}");
    }

    #[test]
    fn nflog_packets_carry_prefix_interfaces_and_payload() {
        let mut body = vec![libc::AF_INET as u8, 0, 0, 5];
        push_attr(&mut body, NFULA_PACKET_HDR, &[0x08, 0x00, 1, 0]);
        push_attr(&mut body, NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        push_attr(&mut body, NFULA_PREFIX, b"phantomc web.pf:3 drop \0");
        push_attr(&mut body, NFULA_PAYLOAD, &[0x45, 0, 0, 20]);
        let dgram = message(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET, &body);
        let mut got = Vec::new();
        walk_datagram(&dgram, &mut |m| {
            got.push(nflog_packet(m.body)?);
            Ok(())
        })
        .unwrap();
        let want = NflogPacket {
            prefix: "phantomc web.pf:3 drop ".into(),
            hw_protocol: 0x0800,
            hook: 1,
            mark: None,
            indev: Some(7),
            outdev: None,
            payload: vec![0x45, 0, 0, 20],
        };
        assert_eq!(got, vec![want]);
        let req = request_for(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG, NLM_F_ACK, 0, 513, &[]);
        assert_eq!(&req[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4], &[2, 1], "the group goes big-endian in res_id");
    }
}
