//! Facts about this host that the kernel knows: its addresses, default
//! gateways, routes, and the established TCP sessions to a local port.
//! Read in the network namespace of the calling process; used by the lockout
//! guard and the learner.

pub mod conntrack;
pub mod session;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

use serde_json::Value;

pub use session::Session;

/// One address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    pub addr: IpAddr,
    pub dev: String,
}

/// A default route's next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub addr: IpAddr,
    pub dev: Option<String>,
}

/// Runs `ip -j ARGS` and parses its JSON list; `Err` says why it could not.
fn ip_json(args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (is iproute2 installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!("`ip -j {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(&text) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(format!("`ip -j {}` printed something that is not a JSON list", args.join(" "))),
    }
}

/// Every address of every interface of this host (`ip -j addr show`).
pub fn addresses() -> Result<Vec<LocalAddr>, String> {
    let mut out = Vec::new();
    for link in ip_json(&["addr", "show"])? {
        let dev = link.get("ifname").and_then(Value::as_str).unwrap_or_default().to_string();
        for info in link.get("addr_info").and_then(Value::as_array).into_iter().flatten() {
            if let Some(addr) = info.get("local").and_then(Value::as_str).and_then(|s| s.parse().ok()) {
                out.push(LocalAddr { addr, dev: dev.clone() });
            }
        }
    }
    Ok(out)
}

/// The next hops of the IPv4 and IPv6 default routes.
pub fn gateways() -> Result<Vec<Gateway>, String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        for route in ip_json(&[family, "route", "show", "default"])? {
            if let Some(addr) = route.get("gateway").and_then(Value::as_str).and_then(|s| s.parse().ok()) {
                let dev = route.get("dev").and_then(Value::as_str).map(str::to_string);
                out.push(Gateway { addr, dev });
            }
        }
    }
    Ok(out)
}

/// The interface the kernel would use to reach `ip` (`ip route get`).
pub fn route_dev(ip: IpAddr) -> Option<String> {
    let routes = ip_json(&["route", "get", &ip.to_string()]).ok()?;
    routes.first()?.get("dev").and_then(Value::as_str).map(str::to_string)
}

/// Established TCP connections to `port` on this host (the kernel's socket
/// table, `/proc/net/tcp` and `tcp6`): the live sessions to a management
/// port (SSH), the same ones conntrack tracks as established, but readable
/// even where no rule has turned conntrack on.
pub fn sessions_to_port(port: u16) -> Result<Vec<Session>, String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(text) => out.extend(established_to(&text, port)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        }
    }
    out.sort_by_key(|s| (s.client, s.server));
    out.dedup();
    Ok(out)
}

/// `TCP_ESTABLISHED` in the `st` column.
const ESTABLISHED: &str = "01";

fn established_to(table: &str, port: u16) -> Vec<Session> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (cols.get(1)?, cols.get(2)?, cols.get(3)?);
            if *state != ESTABLISHED {
                return None;
            }
            let server = socket(local)?;
            (server.port() == port).then_some(())?;
            let client = socket(remote)?;
            Some(Session { client: SocketAddr::new(session::canonical(client.ip()), client.port()), server })
        })
        .collect()
}

/// `0100007F:0016` or a 32-digit IPv6 form: 32-bit words in host byte order.
fn socket(hex: &str) -> Option<SocketAddr> {
    let (addr, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::from_be))
        .collect::<Option<_>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.to_be_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_established_sessions_to_the_port_from_the_socket_table() {
        // 10.10.0.1:22 <- 10.10.0.2:50122 established; a listener; a session to port 80.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 01000A0A:0016 02000A0A:C3CA 01 00000000:00000000 00:00000000 00000000     0        0 2
   2: 01000A0A:0050 02000A0A:C3CB 01 00000000:00000000 00:00000000 00000000     0        0 3
";
        let s = established_to(v4, 22);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].client, "10.10.0.2:50122".parse().unwrap());
        assert_eq!(s[0].server, "10.10.0.1:22".parse().unwrap());
        // 2001:db8::1 port 22 <- 2001:db8::2 port 40000; and a v4-mapped client.
        let v6 = "  sl  local_address                         remote_address                        st
   0: B80D0120000000000000000001000000:0016 B80D0120000000000000000002000000:9C40 01
   1: 0000000000000000FFFF00000100000A:0016 0000000000000000FFFF00000200000A:9C41 01
";
        let s = established_to(v6, 22);
        assert_eq!(s[0].client, "[2001:db8::2]:40000".parse().unwrap());
        assert_eq!(s[0].server, "[2001:db8::1]:22".parse().unwrap());
        assert_eq!(s[1].client, "10.0.0.2:40001".parse().unwrap(), "sshd's ::ffff: clients are IPv4");
    }
}
