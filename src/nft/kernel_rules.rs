//! Counting the rules of a table straight from the kernel (an nf_tables
//! netlink dump of rules), without nft: nft 1.0.6 reads every set element
//! before it lists a single rule, which takes about a minute when the table
//! holds an 800k-entry feed set; this dump reads rules only.

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::Socket;

// include/uapi/linux/netlink.h, netfilter/nfnetlink.h, netfilter/nf_tables.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFTA_RULE_TABLE: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// The number of rules in table `inet NAME` of the calling thread's network
/// namespace (0 when the table does not exist).
pub fn count(table: &str) -> std::io::Result<usize> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    socket.send(&dump_request(table), 0)?;
    let mut rules = 0;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        socket.recv(&mut buf, 0)?;
        match count_datagram(&buf, table)? {
            Reply::More(n) => rules += n,
            Reply::Done(n) => return Ok(rules + n),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    More(usize),
    Done(usize),
}

/// `NFT_MSG_GETRULE` dump of family inet, filtered by the kernel to `table`.
fn dump_request(table: &str) -> Vec<u8> {
    let mut attr_value = table.as_bytes().to_vec();
    attr_value.push(0);
    let attr_len = 4 + attr_value.len();
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attr_len.next_multiple_of(4);
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    msg.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // sequence, port id
    msg.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]); // nfgenmsg: family, version, resource id
    msg.extend_from_slice(&u16::try_from(attr_len).unwrap_or(u16::MAX).to_ne_bytes());
    msg.extend_from_slice(&NFTA_RULE_TABLE.to_ne_bytes());
    msg.extend_from_slice(&attr_value);
    msg.resize(len, 0);
    msg
}

/// Counts the rule messages of `table` in one datagram of the reply.
fn count_datagram(buf: &[u8], table: &str) -> std::io::Result<Reply> {
    let malformed = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed nf_tables netlink reply: {what}"))
    };
    let mut rules = 0;
    let mut offset = 0;
    while offset + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[offset + 4..offset + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || offset + len > buf.len() {
            return Err(malformed("message length"));
        }
        let body = &buf[offset + NLMSG_HDRLEN..offset + len];
        match kind {
            NLMSG_DONE => return Ok(Reply::Done(rules)),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| malformed("error message"))?;
                // An acknowledgement (errno 0) ends nothing in a dump; a missing table is no rules.
                if errno == -libc::ENOENT {
                    return Ok(Reply::Done(0));
                }
                if errno != 0 {
                    return Err(std::io::Error::from_raw_os_error(-errno));
                }
            }
            k if k == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE
                && rule_table(body.get(NFGENMSG_LEN..).ok_or_else(|| malformed("rule message"))?)
                    == Some(table.as_bytes()) =>
            {
                rules += 1;
            }
            _ => {}
        }
        offset += len.next_multiple_of(4);
    }
    Ok(Reply::More(rules))
}

/// The `NFTA_RULE_TABLE` attribute of a rule message (without its NUL).
fn rule_table(mut attrs: &[u8]) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff; // without the nested/byte-order flags
        let value = attrs.get(4..len)?;
        if kind == NFTA_RULE_TABLE {
            return Some(value.strip_suffix(&[0]).unwrap_or(value));
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = u16::try_from(4 + value.len()).unwrap().to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize((4 + value.len()).next_multiple_of(4), 0);
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = u32::try_from(len).unwrap().to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    fn rule(table: &str) -> Vec<u8> {
        let mut body = vec![NFPROTO_INET, 0, 0, 0];
        body.extend(attr(NFTA_RULE_TABLE, format!("{table}\0").as_bytes()));
        body.extend(attr(2, b"input\0"));
        message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, &body)
    }

    #[test]
    fn counts_rules_of_the_table_until_done() {
        let mut more = [rule("phantomc"), rule("other"), rule("phantomc")].concat();
        assert_eq!(count_datagram(&more, "phantomc").unwrap(), Reply::More(2));
        more.extend(message(NLMSG_DONE, &[0; 4]));
        more.extend(rule("phantomc")); // after DONE: not part of the dump
        assert_eq!(count_datagram(&more, "phantomc").unwrap(), Reply::Done(2));
    }

    #[test]
    fn errors_and_truncation() {
        let enoent = message(NLMSG_ERROR, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(count_datagram(&enoent, "phantomc").unwrap(), Reply::Done(0));
        let eperm = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(count_datagram(&eperm, "phantomc").unwrap_err().raw_os_error(), Some(libc::EPERM));
        let mut cut = rule("phantomc");
        cut[0] = 200; // claims more bytes than the datagram holds
        assert!(count_datagram(&cut, "phantomc").is_err());
    }

    #[test]
    fn request_names_the_table() {
        let req = dump_request("phantomc");
        assert_eq!(req.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(req[..4].try_into().unwrap()) as usize, req.len());
        assert_eq!(rule_table(&req[NLMSG_HDRLEN + NFGENMSG_LEN..]), Some(&b"phantomc"[..]));
    }
}
