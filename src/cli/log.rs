//! `log`: the kernel log lines and NFLOG packets of phantomc's `log` rules,
//! each mapped back to the policy line that logged it. Every log prefix is
//! `<table> <file:line> [policy-HOOK] <verdict> [text] ` (see ir::Log).

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc::{self, Sender};

use serde::Serialize;

use super::args::PolicyArg;
use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::ir::{self, names, Compiled};
use crate::learn::decode::{self, linktype};
use crate::netlink::{Nflog, NflogPacket};
use crate::serve::rules;

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub policy: PolicyArg,
    /// Keep reading new lines until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Where to read. `auto`: the NFLOG groups of `log group N` rules (with
    /// --follow) and the kernel log for the other `log` rules.
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    pub source: Source,
    /// Stop after N lines.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output format (JSON: one object per line).
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Auto,
    /// The kernel's ring buffer, /dev/kmsg.
    Kmsg,
    /// `journalctl -k`.
    Journal,
    /// The policy's NFLOG groups (`log group N`); needs --follow.
    Nflog,
}

/// One logged packet, mapped to its policy line (fields documented in
/// docs/guide/hits-log.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `file:line` of the rule or default policy that logged it.
    pub id: String,
    pub line: Option<usize>,
    /// The policy statement as written; `None` when this policy has no such line.
    pub rule: Option<String>,
    /// `accept`, `drop` or `reject`.
    pub verdict: String,
    /// The rule's log text.
    pub text: Option<String>,
    pub source: &'static str,
    pub proto: Option<String>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub iif: Option<String>,
    pub oif: Option<String>,
}

type Found = Result<Entry, String>;

pub fn run(args: &LogArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy.path())?;
    let table = compiled.ruleset.table.clone();
    let groups = nflog_groups(&compiled);
    let (kernel_log, nflog) = match args.source {
        Source::Auto => (Some(Source::Kmsg), !groups.is_empty() && args.follow),
        Source::Nflog if !args.follow => {
            return Err(Failure::System("NFLOG keeps no history: `--source nflog` needs --follow".into()))
        }
        Source::Nflog if groups.is_empty() => {
            return Err(Failure::System("the policy has no `log group N` rule: nothing goes to NFLOG".into()))
        }
        Source::Nflog => (None, true),
        other => (Some(other), false),
    };
    if args.source == Source::Auto && !groups.is_empty() && !args.follow {
        eprintln!("phantomc: NFLOG keeps no history; add --follow to read `log group` rules as they log");
    }
    let (tx, rx) = mpsc::channel::<Found>();
    if nflog {
        // Bound before anything is printed, so a caller that waits for the
        // notice misses no packet.
        let socket = Nflog::bind(&groups, NFLOG_COPY)
            .map_err(|e| Failure::System(format!("cannot read NFLOG groups {groups:?}: {e}")))?;
        eprintln!("phantomc: reading NFLOG group(s) {groups:?} of table {table}");
        let (tx, table) = (tx.clone(), table.clone());
        std::thread::spawn(move || read_nflog(socket, &table, &tx));
    }
    if let Some(source) = kernel_log {
        let (tx, table, follow) = (tx.clone(), table.clone(), args.follow);
        std::thread::spawn(move || match source {
            Source::Journal => read_journal(&table, follow, &tx),
            _ => read_kmsg(&table, follow, &tx),
        });
    }
    drop(tx);
    let lines = policy_lines(&compiled);
    for (printed, found) in (1..).zip(rx) {
        let mut entry = found.map_err(Failure::System)?;
        if let Some((line, text)) = lines.get(&entry.id) {
            entry.line = Some(*line);
            entry.rule = Some(text.clone());
        }
        match args.format {
            TextOrJson::Json => println!("{}", serde_json::to_string(&entry).expect("log entry serializes")),
            TextOrJson::Text => println!("{}", render(&entry)),
        }
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of each packet NFLOG copies: enough for the IP and transport headers.
const NFLOG_COPY: u32 = 128;

fn nflog_groups(c: &Compiled) -> Vec<u16> {
    c.ruleset.nflog_groups(|_, _| true)
}

/// Line number and text of every policy line by its id.
fn policy_lines(c: &Compiled) -> BTreeMap<String, (usize, String)> {
    rules::rows(c, None, &[], &[]).into_iter().map(|r| (r.id, (r.line, r.text))).collect()
}

fn render(e: &Entry) -> String {
    let endpoint = |addr: Option<IpAddr>, port: Option<u16>| match (addr, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    };
    let mut out = format!(
        "{} {} {} {} -> {}",
        e.id,
        e.verdict,
        e.proto.as_deref().unwrap_or("?"),
        endpoint(e.src, e.sport),
        endpoint(e.dst, e.dport)
    );
    for (key, iface) in [("in", &e.iif), ("out", &e.oif)] {
        if let Some(i) = iface {
            out += &format!(" {key}={i}");
        }
    }
    if let Some(t) = &e.text {
        out += &format!(" \"{t}\"");
    }
    match &e.rule {
        Some(rule) => out += &format!("  | {rule}"),
        None => out += "  | (not a line of this policy)",
    }
    out
}

/// The rule id, verdict and the rest of a message that starts with one of
/// phantomc's log prefixes for `table`.
fn split_prefix<'a>(table: &str, message: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = message.strip_prefix(table)?.strip_prefix(' ')?;
    let (id, rest) = rest.split_once(' ')?;
    let (mut verdict, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if verdict.starts_with("policy-") {
        (verdict, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    }
    matches!(verdict, "accept" | "drop" | "reject").then_some((id, verdict, rest))
}

fn entry(id: &str, verdict: &str, text: &str, source: &'static str) -> Entry {
    let text = text.trim();
    Entry {
        id: id.to_string(),
        verdict: verdict.to_string(),
        text: (!text.is_empty()).then(|| text.to_string()),
        source,
        ..Entry::default()
    }
}

/// A kernel log message (`PREFIX IN=eth0 OUT= SRC=... PROTO=TCP SPT=... DPT=...`).
pub fn parse_kernel_line(table: &str, message: &str, source: &'static str) -> Option<Entry> {
    let (id, verdict, rest) = split_prefix(table, message)?;
    // The packet's fields start at `IN=`; before it is the rule's log text.
    let fields_at = rest.match_indices("IN=").find(|(i, _)| *i == 0 || rest[..*i].ends_with(' ')).map(|(i, _)| i)?;
    let mut e = entry(id, verdict, &rest[..fields_at], source);
    for (key, value) in rest[fields_at..].split_whitespace().filter_map(|f| f.split_once('=')) {
        let nonempty = || (!value.is_empty()).then(|| value.to_string());
        match key {
            "IN" => e.iif = nonempty(),
            "OUT" => e.oif = nonempty(),
            "SRC" => e.src = value.parse().ok(),
            "DST" => e.dst = value.parse().ok(),
            "PROTO" => e.proto = Some(value.to_ascii_lowercase()),
            "SPT" => e.sport = value.parse().ok(),
            "DPT" => e.dport = value.parse().ok(),
            _ => {}
        }
    }
    Some(e)
}

/// An NFLOG packet: its prefix names the rule, its payload the packet.
pub fn parse_nflog(table: &str, p: &NflogPacket) -> Option<Entry> {
    let (id, verdict, rest) = split_prefix(table, &p.prefix)?;
    let mut e = entry(id, verdict, rest, "nflog");
    if let Ok(d) = decode::decode(linktype::RAW, &p.payload, 0) {
        let (src, dst) = d.endpoints();
        let proto = d.key.proto;
        e.proto = Some(names::proto_name(proto).to_string());
        e.src = Some(src.ip());
        e.dst = Some(dst.ip());
        if proto == names::TCP || proto == names::UDP || proto == names::SCTP {
            e.sport = Some(src.port());
            e.dport = Some(dst.port());
        }
    }
    e.iif = p.indev.and_then(if_name);
    e.oif = p.outdev.and_then(if_name);
    Some(e)
}

fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname writes at most.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if name.is_null() {
        return Some(format!("#{index}"));
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

fn read_nflog(mut socket: Nflog, table: &str, tx: &Sender<Found>) {
    loop {
        match socket.recv(std::time::Duration::from_secs(3600)) {
            Ok(packets) => {
                for e in packets.iter().filter_map(|p| parse_nflog(table, p)) {
                    if tx.send(Ok(e)).is_err() {
                        return;
                    }
                }
            }
            // The kernel dropped packets for a slow reader: keep reading.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => eprintln!("phantomc: NFLOG overrun, packets lost"),
            Err(e) => {
                let _ = tx.send(Err(format!("reading NFLOG: {e}")));
                return;
            }
        }
    }
}

/// /dev/kmsg: one record per read (`PRIO,SEQ,USEC,FLAGS;message`); without
/// `follow`, up to the end of the ring buffer.
fn read_kmsg(table: &str, follow: bool, tx: &Sender<Found>) {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg");
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(Err(format!("cannot read the kernel log /dev/kmsg: {e}")));
            return;
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                let message = record.split_once(';').map_or("", |(_, m)| m).lines().next().unwrap_or("");
                if let Some(e) = parse_kernel_line(table, message, "kmsg") {
                    if tx.send(Ok(e)).is_err() {
                        return;
                    }
                }
            }
            // Records overwritten while we read: continue with the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && follow => {
                let mut pfd =
                    libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&file), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, -1) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                let _ = tx.send(Err(format!("reading /dev/kmsg: {e}")));
                return;
            }
        }
    }
}

fn read_journal(table: &str, follow: bool, tx: &Sender<Found>) {
    let mut cmd = std::process::Command::new("journalctl");
    cmd.args(["-k", "-o", "cat", "--no-pager"]);
    if follow {
        cmd.arg("-f");
    }
    let child = cmd.stdout(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(format!("cannot run journalctl: {e}")));
            return;
        }
    };
    let Some(out) = child.stdout.take() else { return };
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(e) = parse_kernel_line(table, &line, "journal") {
            if tx.send(Ok(e)).is_err() {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_name_the_rule_its_text_and_the_packet() {
        let line = "phantomc webserver.pf:12 policy-input drop in IN=eth0 OUT= MAC=00:11 SRC=198.51.100.2 \
                    DST=198.51.100.1 LEN=60 TOS=0x00 PROTO=TCP SPT=40000 DPT=23 WINDOW=64240 SYN URGP=0";
        let e = parse_kernel_line("phantomc", line, "kmsg").unwrap();
        assert_eq!((e.id.as_str(), e.verdict.as_str(), e.text.as_deref()), ("webserver.pf:12", "drop", Some("in")));
        assert_eq!((e.iif.as_deref(), e.oif.as_deref()), (Some("eth0"), None));
        assert_eq!(e.src, Some("198.51.100.2".parse().unwrap()));
        assert_eq!((e.proto.as_deref(), e.sport, e.dport), (Some("tcp"), Some(40000), Some(23)));
        let plain = parse_kernel_line("phantomc", "phantomc a.pf:3 accept IN=lo OUT= SRC=::1 DST=::1", "kmsg").unwrap();
        assert_eq!((plain.verdict.as_str(), plain.text), ("accept", None));
        assert!(parse_kernel_line("phantomc", "other a.pf:3 accept IN=lo", "kmsg").is_none(), "another table");
        assert!(parse_kernel_line("phantomc", "phantomc a.pf:3 accept", "kmsg").is_none(), "no packet");
    }

    #[test]
    fn nflog_packets_are_decoded_from_their_ip_header() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1];
        ip.extend([0x9c, 0x40, 0, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let p = NflogPacket { prefix: "phantomc a.pf:4 drop telnet ".into(), payload: ip, ..NflogPacket::default() };
        let e = parse_nflog("phantomc", &p).unwrap();
        assert_eq!((e.id.as_str(), e.verdict.as_str(), e.text.as_deref()), ("a.pf:4", "drop", Some("telnet")));
        assert_eq!(
            render(&e),
            "a.pf:4 drop tcp 10.0.0.2:40000 -> 10.0.0.1:23 \"telnet\"  | (not a line of this policy)"
        );
    }
}
