//! The operator's own connection: from `$SSH_CONNECTION`, `--keep`, or the
//! live SSH sessions to this host.

use std::net::{IpAddr, SocketAddr};

use crate::ir::Family;

/// A TCP connection seen from this host: the client is remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tcp {} -> {}", self.client, self.server)
    }
}

impl Session {
    /// `$SSH_CONNECTION`: "client_ip client_port server_ip server_port".
    pub fn from_ssh_connection(value: &str) -> Option<Session> {
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [cip, cport, sip, sport] = parts.as_slice() else { return None };
        let ip = |s: &str| s.parse::<IpAddr>().ok().map(canonical);
        Some(Session {
            client: SocketAddr::new(ip(cip)?, cport.parse().ok()?),
            server: SocketAddr::new(ip(sip)?, sport.parse().ok()?),
        })
    }

    /// `--keep "CLIENT:PORT -> SERVER:PORT"` (IPv6 in brackets).
    pub fn parse(s: &str) -> Result<Session, String> {
        let (c, sv) = s.split_once("->").ok_or_else(|| format!("`{s}` is not `CLIENT:PORT -> SERVER:PORT`"))?;
        let sock = |x: &str| x.trim().parse::<SocketAddr>().map_err(|_| format!("`{}` is not ADDRESS:PORT", x.trim()));
        let session = Session { client: sock(c)?, server: sock(sv)? };
        if session.client.is_ipv4() != session.server.is_ipv4() {
            return Err(format!("`{s}` mixes IPv4 and IPv6"));
        }
        Ok(session)
    }

    /// The session given explicitly, else the one this shell came in by.
    pub fn current(keep: Option<&str>) -> Result<Option<Session>, String> {
        match keep {
            Some(k) => Session::parse(k).map(Some),
            None => Ok(std::env::var("SSH_CONNECTION").ok().as_deref().and_then(Session::from_ssh_connection)),
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.client.ip())
    }
}

/// sshd reports IPv4 clients of a dual-stack socket as `::ffff:a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ssh_connection_and_keep() {
        let s = Session::from_ssh_connection("::ffff:198.51.100.7 50022 198.51.100.1 22").expect("session");
        assert_eq!(s.client, "198.51.100.7:50022".parse().expect("addr"));
        assert_eq!(s.server, "198.51.100.1:22".parse().expect("addr"));
        assert!(Session::from_ssh_connection("garbage").is_none());
        let k = Session::parse("[2001:db8::7]:40000 -> [2001:db8::1]:22").expect("keep");
        assert_eq!(k.family(), Family::V6);
        assert!(Session::parse("10.0.0.1:1 -> [2001:db8::1]:22").is_err());
        assert!(Session::parse("10.0.0.1 -> 10.0.0.2:22").is_err());
    }
}
