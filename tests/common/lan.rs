//! A small LAN of namespaces behind one switch, with the services and the
//! traffic generators the learner tests need: an HTTP server and curl, a tiny
//! DNS responder and client, a tcpdump capture at the server. Attack tools
//! (nmap, hping3) only ever target LAN addresses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{link, Netns, Servers};

/// One switch namespace with a bridge; every host hangs off it by a veth.
pub struct Lan {
    /// Hosts in creation order, each with its address.
    pub hosts: Vec<(Netns, String)>,
    // Dropped last: the hosts' veths go with their namespaces first.
    _switch: Netns,
}

impl Lan {
    /// `hosts`: (tag, address) pairs in 10.77.0.0/24; IPv4 only, so the
    /// capture holds no IPv6 autoconfiguration chatter.
    pub fn new(hosts: &[(&str, &str)]) -> Lan {
        let switch = Netns::new("sw");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut made = Vec::new();
        for (i, (tag, addr)) in hosts.iter().enumerate() {
            let ns = Netns::new(tag);
            ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
            let port = format!("p{i}");
            link(&switch, &port, &ns, "eth0");
            switch.ip(&["link", "set", &port, "master", "br0"]);
            switch.ip(&["link", "set", &port, "up"]);
            ns.addr("eth0", &format!("{addr}/24"));
            made.push((ns, addr.to_string()));
        }
        Lan { hosts: made, _switch: switch }
    }

    pub fn host(&self, i: usize) -> &Netns {
        &self.hosts[i].0
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.hosts[i].1
    }
}

/// tcpdump writing every packet of `dev` in `ns` to a file, until stopped.
pub struct Capture {
    child: Child,
    pub path: PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, dev: &str, path: &Path) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "tcpdump", "-i", dev, "-n", "-U", "-s", "256", "-w"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        let mut first = String::new();
        BufReader::new(child.stderr.as_mut().expect("stderr")).read_line(&mut first).expect("tcpdump output");
        assert!(first.contains("listening on"), "tcpdump did not start: {first}");
        Capture { child, path: path.to_path_buf() }
    }

    /// Stops tcpdump (SIGINT flushes the file) and returns its packet count line.
    pub fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        self.child.stderr.take().expect("stderr").read_to_string(&mut rest).ok();
        self.child.wait().expect("tcpdump exits");
        rest
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 server answering every request with `hello`, one thread per
/// connection (a client that sends nothing never holds up the others), and
/// anything that is not an HTTP request with 400 at once, as real servers do.
pub fn http_server(ns: &Netns, port: u16) -> Servers {
    serve_tcp(ns, port, |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => return,
            }
            if !(req.starts_with(b"GET ") || req.starts_with(b"HEAD ")) && req.len() >= 4 {
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n");
                return;
            }
            s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    })
}

/// A TCP server running `handle` on its own thread for each connection.
pub fn serve_tcp(ns: &Netns, port: u16, handle: fn(TcpStream)) -> Servers {
    serve(ns, move |stop| {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).ok();
                        std::thread::spawn(move || handle(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
    })
}

/// The password the fake SSH service accepts (for user `admin`).
pub const SSH_PASSWORD: &str = "admin:correct-horse";

/// A stand-in for sshd that fails logins the way sshd does at flow level:
/// banner exchange, a key-exchange-sized blob each way, then up to three
/// password tries, each refused after a short delay, then the server hangs
/// up. A right password gets a login banner (~6 KB, like the host keys and
/// motd sshd sends) and a shell that answers each command with 2 KB. It is
/// not SSH: no cryptography, only the same shape of packets.
pub fn fake_sshd(ns: &Netns, port: u16) -> Servers {
    serve_tcp(ns, port, |s| {
        // A shell session may sit idle for minutes.
        s.set_read_timeout(Some(Duration::from_secs(600))).ok();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if w.write_all(b"SSH-2.0-OpenSSH_9.2p1 lab\r\n").is_err() || r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut kex = vec![0u8; 1024];
        if r.read_exact(&mut kex).is_err() || w.write_all(&[7u8; 1200]).is_err() {
            return;
        }
        for _ in 0..3 {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim_end() == SSH_PASSWORD {
                if w.write_all(&[b'w'; 6000]).is_err() {
                    return;
                }
                line.clear();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if w.write_all(&[b'o'; 2048]).is_err() {
                        return;
                    }
                    line.clear();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
            if w.write_all(b"Permission denied, please try again.\n").is_err() {
                return;
            }
        }
        let _ = w.write_all(b"Too many authentication failures\n");
    })
}

/// An SSH-like session to [`fake_sshd`]: `Some` after a login that worked.
pub struct SshSession {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl SshSession {
    /// Tries each password (at most three per session, like ssh) and
    /// returns the session after the first that works.
    pub fn login(ns: &Netns, addr: &str, passwords: &[&str]) -> Option<SshSession> {
        let sa: std::net::SocketAddr = format!("{addr}:22").parse().expect("address");
        let passwords: Vec<String> = passwords.iter().map(|p| p.to_string()).collect();
        ns.run_in(move || {
            let s = TcpStream::connect_timeout(&sa, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            let mut w = s.try_clone().ok()?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            w.write_all(b"SSH-2.0-OpenSSH_9.2p1 client\r\n").ok()?;
            w.write_all(&[9u8; 1024]).ok()?;
            let mut kex = vec![0u8; 1200];
            r.read_exact(&mut kex).ok()?;
            for p in &passwords {
                w.write_all(format!("{p}\n").as_bytes()).ok()?;
                let mut first = [0u8; 1];
                r.read_exact(&mut first).ok()?;
                if first[0] == b'w' {
                    let mut banner = vec![0u8; 5999];
                    r.read_exact(&mut banner).ok()?;
                    return Some(SshSession { r, w });
                }
                line.clear();
                r.read_line(&mut line).ok()?;
            }
            None
        })
    }

    /// One command, its 2 KB of output.
    pub fn run(&mut self, cmd: &str) -> bool {
        let mut out = vec![0u8; 2048];
        self.w.write_all(format!("{cmd}\n").as_bytes()).is_ok() && self.r.read_exact(&mut out).is_ok()
    }
}

/// A stand-in for PostgreSQL: a startup message gets ~400 bytes of
/// parameters back, each query ~1.5 KB of rows.
pub fn fake_postgres(ns: &Netns, port: u16) -> Servers {
    serve_tcp(ns, port, |s| {
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || w.write_all(&[b'S'; 400]).is_err() {
            return;
        }
        line.clear();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if w.write_all(&[b'D'; 1500]).is_err() {
                return;
            }
            line.clear();
        }
    })
}

/// One connection, startup, one query, its rows: an application without a
/// connection pool.
pub fn pg_query(ns: &Netns, addr: &str, port: u16) -> bool {
    let addr = addr.to_string();
    ns.run_in(move || pg_query_here(&addr, port))
}

/// [`pg_query`] from a thread already in the client's namespace.
pub fn pg_query_here(addr: &str, port: u16) -> bool {
    let sa: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_secs(1)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let (mut params, mut rows) = (vec![0u8; 400], vec![0u8; 1500]);
    s.write_all(b"user=app database=shop\n").is_ok()
        && s.read_exact(&mut params).is_ok()
        && s.write_all(b"SELECT * FROM orders WHERE id = 7;\n").is_ok()
        && s.read_exact(&mut rows).is_ok()
}

/// `GET path` over a fresh connection (no keep-alive) from a thread that is
/// already in the client's namespace: did it get `hello`?
pub fn http_get_here(addr: &str, port: u16, path: &str) -> bool {
    let sa: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_secs(1)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut body = Vec::new();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n").as_bytes()).is_ok()
        && s.read_to_end(&mut body).is_ok()
        && body.ends_with(b"hello")
}

/// Does a TCP connection to `addr:port` from `ns` open at all?
pub fn connects(ns: &Netns, addr: &str, port: u16) -> bool {
    let sa: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("address");
    ns.run_in(move || TcpStream::connect_timeout(&sa, Duration::from_millis(800)).is_ok())
}

/// `count` SYNs to `dst:port` from made-up sources in 10.77.64.0/18, which
/// no namespace has a route to: the server's answers go nowhere. A raw
/// socket in `ns`; returns how many were sent.
pub fn spoofed_syns(ns: &Netns, dst: [u8; 4], port: u16, count: u16) -> usize {
    // Two SYNs from each made-up source.
    let made_up = |i: u16| {
        let n = i / 2;
        [10, 77, 64 + (n >> 8) as u8 % 64, (n & 0xff) as u8]
    };
    syns_from(ns, made_up, dst, port, count)
}

/// `count` SYNs to `dst:port`, the `i`th from `source(i)` (any address: a
/// raw socket in `ns` writes the header); returns how many were sent.
pub fn syns_from(
    ns: &Netns,
    source: impl Fn(u16) -> [u8; 4] + Send + 'static,
    dst: [u8; 4],
    port: u16,
    count: u16,
) -> usize {
    ns.run_in(move || {
        // SAFETY: a raw socket used only for sendto of buffers we own, then closed.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(dst);
            let mut sent = 0;
            for i in 0..count {
                let pkt = syn_packet(source(i), dst, 1024 + i, port, 0x5eed_0000 + u32::from(i));
                let n = libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                sent += usize::from(n > 0);
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            libc::close(fd);
            sent
        }
    })
}

/// An IPv4 TCP SYN with correct checksums.
fn syn_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A DNS responder: every A question gets `answer` back.
pub fn dns_server(ns: &Netns, port: u16, answer: [u8; 4]) -> Servers {
    serve(ns, move |stop| {
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    if let Some(reply) = dns_reply(&buf[..n], answer) {
                        let _ = s.send_to(&reply, peer);
                    }
                }
            }
        }
    })
}

/// Runs `setup` in the namespace (binding there), then its loop until dropped.
fn serve<F, L>(ns: &Netns, setup: F) -> Servers
where
    F: FnOnce(Arc<AtomicBool>) -> L + Send + 'static,
    L: FnOnce(),
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let handle = ns.spawn(move || {
        let run = setup(flag);
        tx.send(()).ok();
        run();
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server started");
    Servers { stop, handles: vec![handle], peers: Arc::new(Mutex::new(Vec::new())) }
}

/// A standard query for `name` (type A, class IN) with transaction `id`.
fn dns_query_packet(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The query turned into a response with one A record pointing at the name.
fn dns_reply(query: &[u8], answer: [u8; 4]) -> Option<Vec<u8>> {
    if query.len() < 17 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut r = query.to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&[0, 1]); // one answer
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&answer);
    Some(r)
}

/// Resolves `name` at `server`:53 from `ns`; the A record it got back.
pub fn dns_lookup(ns: &Netns, server: &str, name: &str) -> Option<[u8; 4]> {
    let (server, name) = (server.to_string(), name.to_string());
    ns.run_in(move || dns_lookup_here(&server, &name))
}

/// [`dns_lookup`] from a thread already in the client's namespace.
pub fn dns_lookup_here(server: &str, name: &str) -> Option<[u8; 4]> {
    let (server, query) = (format!("{server}:53"), dns_query_packet(0x4c4e, name));
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
    let mut buf = [0u8; 512];
    // Like a resolver, try again: the first query may wait for ARP.
    (0..3).find_map(|_| {
        s.send_to(&query, &server).ok()?;
        let n = s.recv(&mut buf).ok()?;
        let r = &buf[..n];
        (n >= query.len() + 16 && r[..2] == query[..2] && r[2] & 0x80 != 0)
            .then(|| r[n - 4..].try_into().expect("4 bytes"))
    })
}

/// `curl http://ADDR:PORT/` from `ns`: did it get `hello`?
pub fn curl(ns: &Netns, addr: &str, port: u16) -> bool {
    let out = ns.exec(&["curl", "-s", "--max-time", "2", &format!("http://{addr}:{port}/")]);
    out.status.success() && out.stdout == b"hello"
}
