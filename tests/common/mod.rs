//! Test hosts in network namespaces: each test builds its own small network,
//! sends real packets inside it, and tears it down even when it panics.
//! Nothing here touches the host's own interfaces or ruleset.

#![allow(dead_code)] // each test file uses a different part of this kit

pub mod lan;
pub mod pcapng;
pub mod stand_in;
pub mod tokens;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails (never skips) when the tools kernel tests need are missing.
pub fn require_tools() {
    for tool in ["nft", "ip", "ping"] {
        require_tool(tool);
    }
    assert!(std::path::Path::new("/proc/self/ns/net").exists(), "kernel tests need network namespaces");
}

/// Fails (never skips) when one more tool a test drives is missing.
pub fn require_tool(tool: &str) {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "this kernel test needs `{tool}` (see the apt list in .ci/run)");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A network namespace, deleted on drop. phantomc run inside it keeps its
/// confirmation records in a folder of its own, never in the machine's
/// shared /run/phantomc.
pub struct Netns {
    pub name: String,
    run_dir: std::path::PathBuf,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("pc{}-{}-{tag}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        run(Command::new("ip").args(["netns", "add", &name]));
        let run_dir = std::env::temp_dir().join(format!("phantomc-run-{name}"));
        let ns = Netns { name, run_dir };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip netns exec NS ARGS...`, with phantomc's run folder set to this namespace's own.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args).env("PHANTOMC_RUN_DIR", &self.run_dir);
        cmd
    }

    /// Runs a command inside the namespace; returns its output whatever the exit code.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Runs phantomc inside the namespace (so nft sees only its ruleset).
    pub fn phantomc(&self, args: &[&str]) -> Output {
        let mut full = vec![env!("CARGO_BIN_EXE_phantomc")];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    pub fn sysctl(&self, key_value: &str) {
        let out = self.exec(&["sysctl", "-qw", key_value]);
        assert!(out.status.success(), "sysctl {key_value}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Makes the kernel track connections here (conntrack only runs where a
    /// rule needs it) with counters and timestamps, and keeps closed and
    /// unanswered entries long enough to be read after the traffic.
    pub fn track_connections(&self) {
        for kv in [
            "net.netfilter.nf_conntrack_acct=1",
            "net.netfilter.nf_conntrack_timestamp=1",
            "net.netfilter.nf_conntrack_tcp_timeout_close=600",
            "net.netfilter.nf_conntrack_tcp_timeout_syn_recv=600",
            "net.netfilter.nf_conntrack_udp_timeout=600",
        ] {
            self.sysctl(kv);
        }
        for cmd in [
            "add table inet conntrack_on",
            "add chain inet conntrack_on input { type filter hook input priority 0; }",
            "add rule inet conntrack_on input ct state established counter",
        ] {
            let out = self.nft(&[cmd]);
            assert!(out.status.success(), "nft {cmd}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    pub fn addr(&self, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev]);
        }
        self.ip(&["link", "set", dev, "up"]);
    }

    pub fn route(&self, args: &[&str]) {
        let mut full = vec!["route", "add"];
        full.extend_from_slice(args);
        self.ip(&full);
    }

    pub fn nft(&self, args: &[&str]) -> Output {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it
    /// opens live in the namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b`.
pub fn link(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&["link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tcp {
    Connected,
    Refused,
    TimedOut,
}

/// One TCP connection attempt from inside `ns`.
pub fn tcp_connect(ns: &Netns, addr: &str, port: u16) -> Tcp {
    let sa = SocketAddr::new(addr.parse::<IpAddr>().expect("address"), port);
    ns.run_in(move || match TcpStream::connect_timeout(&sa, Duration::from_millis(800)) {
        Ok(mut s) => {
            // The server greets; reading it proves the path works both ways.
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 2];
            match s.read_exact(&mut buf) {
                Ok(()) => Tcp::Connected,
                Err(_) => Tcp::TimedOut,
            }
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Tcp::Refused,
        Err(_) => Tcp::TimedOut,
    })
}

/// Servers running in a namespace until dropped. TCP servers greet with
/// "ok" and record each peer's address; UDP servers echo.
pub struct Servers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Servers {
    pub fn start(ns: &Netns, tcp_ports: &[u16], udp_ports: &[u16]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for &port in tcp_ports {
            let (stop, peers) = (stop.clone(), peers.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            handles.push(ns.spawn(move || {
                let l = TcpListener::bind(("::", port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
                l.set_nonblocking(true).expect("nonblocking");
                tx.send(()).ok();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            peers.lock().expect("peers").push(canonical(peer.ip()));
                            let _ = s.write_all(b"ok");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            rx.recv_timeout(Duration::from_secs(5)).expect("tcp server started");
        }
        for &port in udp_ports {
            let stop = stop.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            handles.push(ns.spawn(move || {
                let s = UdpSocket::bind(("::", port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
                s.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
                tx.send(()).ok();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], peer);
                    }
                }
            }));
            rx.recv_timeout(Duration::from_secs(5)).expect("udp server started");
        }
        Servers { stop, handles, peers }
    }
}

/// A TCP echo server that keeps every connection open until the peer closes.
pub fn echo_server(ns: &Netns, port: u16) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let handle = ns.spawn(move || {
        let l = TcpListener::bind(("::", port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        tx.send(()).ok();
        while !flag.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("echo server started");
    Servers { stop, handles: vec![handle], peers: Arc::new(Mutex::new(Vec::new())) }
}

/// An open TCP connection made from inside a namespace.
pub struct Conn {
    pub stream: TcpStream,
}

impl Conn {
    pub fn open(ns: &Netns, addr: &str, port: u16) -> Conn {
        let sa = SocketAddr::new(addr.parse::<IpAddr>().expect("address"), port);
        let stream = ns.run_in(move || TcpStream::connect_timeout(&sa, Duration::from_secs(2))).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
        Conn { stream }
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local addr").port()
    }

    /// Sends a message and expects it echoed back intact.
    pub fn round_trip(&mut self, msg: &[u8]) -> bool {
        if self.stream.write_all(msg).is_err() {
            return false;
        }
        let mut buf = vec![0u8; msg.len()];
        self.stream.read_exact(&mut buf).is_ok() && buf == msg
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Sends one UDP datagram from `ns` and waits for the echo.
pub fn udp_echo(ns: &Netns, addr: &str, port: u16) -> bool {
    let ip: IpAddr = addr.parse().expect("address");
    ns.run_in(move || {
        let bind: SocketAddr =
            if ip.is_ipv4() { "0.0.0.0:0".parse().expect("v4") } else { "[::]:0".parse().expect("v6") };
        let s = UdpSocket::bind(bind).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        let mut buf = [0u8; 16];
        // A few tries: the first datagram may wait for neighbour discovery.
        (0..3).any(|_| {
            s.send_to(b"probe", (ip, port)).is_ok() && s.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"probe")
        })
    })
}

pub fn ping(ns: &Netns, addr: &str) -> bool {
    ns.exec(&["ping", "-c", "1", "-W", "1", addr]).status.success()
}

/// Waits (bounded) until `cond` holds.
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(5), what, cond);
}

pub fn eventually_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Waits (bounded) for a child process to exit.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(start.elapsed() < limit, "phantomc did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Applies a policy inside `ns`, asserting success.
pub fn apply(ns: &Netns, policy: &str) {
    let out = ns.phantomc(&["apply", policy]);
    assert!(out.status.success(), "apply {policy}: {}{}", stdout(&out), stderr(&out));
}

/// `nft -j list table inet phantomc` inside `ns`, parsed.
/// A feed set's networks in table inet phantomc (`198.51.100.2/32
/// 203.0.113.0/24`), joined from all of its kernel sets (see feed_layout).
pub fn feed_set(ns: &Netns, set: &str) -> String {
    let family = if set.ends_with("_v6") { phantomc::ir::Family::V6 } else { phantomc::ir::Family::V4 };
    let set = set.to_string();
    let nets = ns.run_in(move || phantomc::nft::live_feed_set("phantomc", &set, family).expect("feed set"));
    nets.iter().map(|e| e.net.to_string()).collect::<Vec<_>>().join(" ")
}

pub fn table_json(ns: &Netns) -> serde_json::Value {
    let out = ns.nft(&["-j", "list", "table", "inet", "phantomc"]);
    assert!(out.status.success(), "list table: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("nft json")
}

/// The handles of phantomc's table, chains and rules: a reload changes them all.
pub fn handles(ns: &Netns, kind: &str) -> Vec<u64> {
    table_json(ns)["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get(kind).and_then(|r| r.get("handle")).and_then(|h| h.as_u64()))
        .collect()
}

pub fn rule_handles(ns: &Netns) -> Vec<u64> {
    handles(ns, "rule")
}

/// srv has eth0 on the public side (pub) and eth1 on the admin LAN (adm).
pub struct WebLab {
    pub srv: Netns,
    pub publ: Netns,
    pub adm: Netns,
}

pub fn web_lab() -> WebLab {
    require_tools();
    let (srv, publ, adm) = (Netns::new("srv"), Netns::new("pub"), Netns::new("adm"));
    link(&srv, "eth0", &publ, "eth0");
    link(&srv, "eth1", &adm, "eth0");
    srv.addr("eth0", "198.51.100.1/24");
    srv.addr("eth0", "2001:db8:1::1/64");
    srv.addr("eth1", "10.10.0.1/24");
    srv.addr("eth1", "fd00:10::1/64");
    publ.addr("eth0", "198.51.100.2/24");
    publ.addr("eth0", "2001:db8:1::2/64");
    adm.addr("eth0", "10.10.0.2/24");
    adm.addr("eth0", "fd00:10::2/64");
    WebLab { srv, publ, adm }
}

pub const WEB: &str = "policies/webserver.pf";

/// `phantomc serve` running inside a namespace until dropped; it listens on
/// the namespace's own loopback.
pub struct Service {
    child: std::process::Child,
    pub port: u16,
    ns_path: String,
}

impl Service {
    pub fn start(ns: &Netns, port: u16, args: &[&str]) -> Service {
        Service::start_wrapped(ns, port, &[], args)
    }

    /// Runs `phantomc ARGS`, which must serve the API on 127.0.0.1:`port`
    /// (`serve`, `watch --listen`).
    pub fn launch(ns: &Netns, port: u16, args: &[&str]) -> Service {
        Service::launch_wrapped(ns, port, &[], args)
    }

    /// `phantomc serve` started through `wrapper` (a command that runs the
    /// rest of its arguments, such as `setpriv ... --`).
    pub fn start_wrapped(ns: &Netns, port: u16, wrapper: &[&str], args: &[&str]) -> Service {
        let listen = format!("127.0.0.1:{port}");
        let mut full = vec!["serve", "--listen", &listen];
        full.extend_from_slice(args);
        Service::launch_wrapped(ns, port, wrapper, &full)
    }

    /// `phantomc ARGS` started through `wrapper` (`prlimit ... --`), serving
    /// the API on 127.0.0.1:`port`.
    pub fn launch_wrapped(ns: &Netns, port: u16, wrapper: &[&str], args: &[&str]) -> Service {
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(wrapper)
            .arg(env!("CARGO_BIN_EXE_phantomc"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start phantomc serve");
        let svc = Service { child, port, ns_path: format!("/run/netns/{}", ns.name) };
        let path = svc.ns_path.clone();
        let up = std::thread::spawn(move || {
            enter(&path);
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
        })
        .join()
        .expect("probe thread");
        assert!(up, "phantomc serve did not start listening on {listen}");
        svc
    }

    /// One HTTP/1.1 request from inside the namespace: (status, body).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, String) {
        self.send(method, path, headers, body.map(|b| ("application/json", b)))
    }

    /// A request with a body of the given content type: (status, body).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> (u16, String) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: 127.0.0.1\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some((kind, b)) = body {
            req.push_str(&format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        req.push_str(body.map_or("", |(_, b)| b));
        let (path, port) = (self.ns_path.clone(), self.port);
        let raw = std::thread::spawn(move || {
            enter(&path);
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to phantomc serve");
            s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            s.write_all(req.as_bytes()).expect("send request");
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("read response");
            String::from_utf8(out).expect("utf-8 response")
        })
        .join()
        .expect("http thread");
        let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
        (status, body.to_string())
    }

    /// Stops the service with SIGTERM, as systemd does; its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
        self.child.wait().expect("wait for phantomc serve")
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], None)
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
        let (code, text) = self.request("POST", path, &headers, Some(body));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {text}"));
        (code, json)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
