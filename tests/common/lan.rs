//! A small LAN of namespaces behind one switch, with the services and the
//! traffic generators the learner tests need: an HTTP server and curl, a tiny
//! DNS responder and client, a tcpdump capture at the server. Attack tools
//! (nmap, hping3) only ever target LAN addresses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
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

/// An HTTP/1.0 server answering every request with `hello`.
pub fn http_server(ns: &Netns, port: u16) -> Servers {
    serve(ns, move |stop| {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).ok();
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
            }
        }
    })
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
    let (server, query) = (format!("{server}:53"), dns_query_packet(0x4c4e, name));
    ns.run_in(move || {
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
    })
}

/// `curl http://ADDR:PORT/` from `ns`: did it get `hello`?
pub fn curl(ns: &Netns, addr: &str, port: u16) -> bool {
    let out = ns.exec(&["curl", "-s", "--max-time", "2", &format!("http://{addr}:{port}/")]);
    out.status.success() && out.stdout == b"hello"
}
