//! systemd's readiness protocol (`sd_notify`, `Type=notify`): READY once the
//! first policy load was tried, RELOADING around SIGHUP reloads, STOPPING,
//! and a STATUS line that `systemctl status` shows. A datagram to
//! `$NOTIFY_SOCKET`; without it (not under systemd) nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for, if any.
    pub fn from_env() -> Option<Notifier> {
        Notifier::new(&std::env::var("NOTIFY_SOCKET").ok()?)
    }

    /// `socket` is a path, or `@name` for an abstract socket.
    pub fn new(socket: &str) -> Option<Notifier> {
        let addr = match socket.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(socket).ok()?,
        };
        Some(Notifier { sock: UnixDatagram::unbound().ok()?, addr })
    }

    /// Sends `KEY=value` lines; a lost notification must not stop the
    /// firewall service, so errors are ignored.
    pub fn send(&self, lines: &[String]) {
        let _ = self.sock.send_to_addr(lines.join("\n").as_bytes(), &self.addr);
    }
}

/// `RELOADING=1` must carry the monotonic clock (systemd 253 and later).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap()).expect("notifier").send(&["READY=1".into(), "STATUS=loaded".into()]);
        assert_eq!(recv(&listener), "READY=1\nSTATUS=loaded");

        let name = format!("phantomc-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::new(&format!("@{name}")).expect("notifier").send(&["STOPPING=1".into()]);
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 2000);
    }
}
