//! Kernel tests of `phantomc watch`: 50 live reloads under an established
//! TCP stream (no reset, no lost or corrupted byte), a broken edit that keeps
//! the last good ruleset enforced, reload latency, include re-resolution,
//! missing and empty policy files, systemd notifications, `--listen`, and a
//! clean SIGTERM that leaves the table loaded; an edit no file event reported
//! (picked up by the periodic check) and reloads while the API is flooded by
//! idle half-sent requests (slowloris).

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use phantomc::watch::{read_health, Health};

const SRV: &str = "10.77.0.1";
const STREAM_PORT: u16 = 7000;
const RELOADS: usize = 50;
/// The reload that gets a broken edit first.
const BROKEN_AT: usize = 25;

/// Two variants that both allow the stream; they differ in an unrelated rule
/// (port 9001 or 9002) whose label names the generation, so the test sees
/// exactly when each reload is live.
fn policy(generation: usize) -> String {
    let port = 9001 + generation % 2;
    format!(
        "policy input block\n\
         set blocklist dynamic\n\
         pass in on lo\n\
         pass in state {{ established, related }}\n\
         block in from <blocklist>\n\
         pass in proto tcp to port {STREAM_PORT} state new\n\
         pass in proto tcp to port {port} label \"gen-{generation}\"\n"
    )
}

/// A two-host lab: the server runs the watcher, the client streams to it.
struct Lab {
    srv: Netns,
    cli: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        require_tools();
        let (srv, cli) = (Netns::new("wsrv"), Netns::new("wcli"));
        link(&srv, "eth0", &cli, "eth0");
        srv.addr("eth0", "10.77.0.1/24");
        cli.addr("eth0", "10.77.0.2/24");
        Lab { srv, cli, dir: tempfile::tempdir().expect("temp dir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn health(&self) -> Health {
        read_health(&self.path("health.json")).expect("health file")
    }

    fn wait_health(&self, what: &str, cond: impl Fn(&Health) -> bool) -> Health {
        eventually(what, || read_health(&self.path("health.json")).is_ok_and(|h| cond(&h)));
        self.health()
    }

    /// Starts `phantomc watch` in the server namespace, logging JSON to a
    /// file, with systemd's notification socket at `notify` if given.
    fn watch(&self, policy: &Path, notify: Option<&Path>) -> Child {
        self.watch_with(policy, notify, &[], &[])
    }

    fn watch_with(&self, policy: &Path, notify: Option<&Path>, extra: &[&str], env: &[(&str, &Path)]) -> Child {
        let log = File::create(self.path("watch.log")).expect("log file");
        let state = self.path("health.json");
        let mut cmd = Command::new("ip");
        cmd.envs(env.iter().copied());
        if let Some(socket) = notify {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        cmd.args(["netns", "exec", &self.srv.name, env!("CARGO_BIN_EXE_phantomc"), "watch"])
            .arg(policy)
            .arg("--state-file")
            .arg(&state)
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--debounce-ms", "50", "--log-format", "json", "-v"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn phantomc watch")
    }

    /// `phantomc status` with this lab's health file.
    fn status(&self, policy: &Path) -> std::process::Output {
        let state = self.path("health.json");
        self.srv.phantomc(&["status", "--state-file", state.to_str().expect("utf-8"), policy.to_str().expect("utf-8")])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("watch.log")).unwrap_or_default()
    }

    fn input_chain(&self) -> String {
        stdout(&self.srv.nft(&["list", "chain", "inet", "phantomc", "input"]))
    }
}

/// Byte `i` of the stream: the little-endian index of its 8-byte word, so a
/// lost, repeated or reordered stretch shows at once.
fn pattern(i: u64) -> u8 {
    (i / 8).to_le_bytes()[(i % 8) as usize]
}

/// A client writing the pattern to the echo server and checking every byte
/// that comes back.
struct Stream {
    stop: Arc<AtomicBool>,
    writer: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<u64, String>>,
}

impl Stream {
    fn start(conn: Conn) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let mut out = conn.stream;
        out.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut inp = out.try_clone().expect("clone");
        let flag = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let chunk: Vec<u8> = (sent..sent + 4096).map(pattern).collect();
                out.write_all(&chunk).map_err(|e| format!("write after {sent} bytes: {e}"))?;
                sent += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
            out.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
            Ok(sent)
        });
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = [0u8; 8192];
            loop {
                let n = match inp.read(&mut buf) {
                    Ok(0) => return Ok(got),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read after {got} bytes: {e} ({:?})", e.kind())),
                };
                if let Some(bad) = (0..n).find(|&k| buf[k] != pattern(got + k as u64)) {
                    return Err(format!("corrupted byte at offset {}", got + bad as u64));
                }
                got += n as u64;
            }
        });
        Stream { stop, writer, reader }
    }

    /// Stops writing, waits for every echo and the end of the stream.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.writer.join().expect("writer").unwrap_or_else(|e| panic!("stream writer: {e}"));
        let got = self.reader.join().expect("reader").unwrap_or_else(|e| panic!("stream reader: {e}"));
        (sent, got)
    }
}

/// `Tcp: EstabResets` of a namespace (/proc/net/snmp): established
/// connections that ended in a reset, either side.
fn estab_resets(ns: &Netns) -> u64 {
    let snmp = stdout(&ns.exec(&["cat", "/proc/net/snmp"]));
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
    let col = names.split_whitespace().position(|n| n == "EstabResets").expect("EstabResets column");
    values.split_whitespace().nth(col).and_then(|v| v.parse().ok()).expect("EstabResets value")
}

/// Writes a policy file the way editors do: in place, or as a new file
/// renamed over the old one.
fn save(path: &Path, text: &str, rename: bool) {
    if rename {
        let tmp = path.with_extension("pf.swp");
        std::fs::write(&tmp, text).expect("write temp");
        std::fs::rename(&tmp, path).expect("rename");
    } else {
        std::fs::write(path, text).expect("write policy");
    }
}

/// Polls the live table from inside the namespace until `marker` shows;
/// returns how long that took.
fn time_until_live(ns: &Netns, marker: String, since: Instant) -> Duration {
    ns.run_in(move || {
        while since.elapsed() < Duration::from_secs(10) {
            let out = Command::new("nft").args(["list", "chain", "inet", "phantomc", "input"]).output().expect("nft");
            if String::from_utf8_lossy(&out.stdout).contains(&marker) {
                return since.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{marker} never went live");
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The next sd_notify datagram that is not just a STATUS update.
fn notification(systemd: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    loop {
        let n = systemd.recv(&mut buf).expect("a systemd notification in time");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !msg.starts_with("STATUS=") {
            return msg;
        }
    }
}

fn marker(generation: usize) -> String {
    format!("gen-{generation}\"")
}

#[test]
fn fifty_reloads_under_a_live_stream_lose_nothing() {
    let lab = Lab::new();
    let _echo = echo_server(&lab.srv, STREAM_PORT);
    let _probes = Servers::start(&lab.srv, &[9001, 9002, 9003], &[]);
    let policy_path = lab.path("watch.pf");
    save(&policy_path, &policy(0), false);
    let mut watcher = lab.watch(&policy_path, None);
    lab.wait_health("first load", |h| h.reloads == 1);
    assert!(lab.input_chain().contains(&marker(0)), "{}", lab.input_chain());

    let block = lab.srv.phantomc(&["block", "203.0.113.9"]);
    assert!(block.status.success(), "{}", stderr(&block));
    let resets_before = (estab_resets(&lab.srv), estab_resets(&lab.cli));
    let stream = Stream::start(Conn::open(&lab.cli, SRV, STREAM_PORT));

    let mut latencies = Vec::new();
    for generation in 1..=RELOADS {
        if generation == BROKEN_AT {
            // Port 99999 does not exist: the watcher must refuse the edit and
            // keep generation BROKEN_AT - 1 loaded and enforced.
            save(&policy_path, &policy(generation).replace("port 9002", "port 99999"), false);
            let h = lab.wait_health("the broken edit recorded", |h| h.failures == 1);
            let err = h.last_error.expect("last_error");
            assert!(err.contains("watch.pf:7"), "the error names the line: {err}");
            assert!(err.contains("99999"), "{err}");
            let status = lab.status(&policy_path);
            assert_eq!(status.status.code(), Some(1), "the policy on disk is broken");
            let said = stdout(&status);
            assert!(
                said.contains("watch: LAST RELOAD FAILED") && said.contains("99999"),
                "status shows the error: {said}"
            );
            let chain = lab.input_chain();
            assert!(chain.contains(&marker(generation - 1)) && !chain.contains(&marker(generation)), "{chain}");
            assert_eq!(
                tcp_connect(&lab.cli, SRV, 9001 + ((generation - 1) % 2) as u16),
                Tcp::Connected,
                "the old rule still passes"
            );
            assert_eq!(tcp_connect(&lab.cli, SRV, 9003), Tcp::TimedOut, "the old default policy still drops");
            assert!(Conn::open(&lab.cli, SRV, STREAM_PORT).round_trip(b"new connections still work"));
        }
        let since = Instant::now();
        save(&policy_path, &policy(generation), generation % 2 == 0);
        latencies.push(time_until_live(&lab.srv, marker(generation), since));
    }
    let h = lab.wait_health("all reloads counted", |h| h.reloads == 1 + RELOADS as u64);
    assert_eq!((h.failures, h.last_error.as_deref()), (1, None), "a good edit clears the error; log:\n{}", lab.log());

    // The same text again compiles to the loaded ruleset: nothing reloads.
    save(&policy_path, &policy(RELOADS), false);
    let h = lab.wait_health("an unchanged save skipped", |h| h.unchanged == 1);
    assert_eq!(h.reloads, 1 + RELOADS as u64);

    let (sent, got) = stream.finish();
    assert!(sent > 1 << 20, "the stream carried real traffic: {sent} bytes");
    assert_eq!(got, sent, "every byte came back");
    let resets_after = (estab_resets(&lab.srv), estab_resets(&lab.cli));
    assert_eq!(resets_after, resets_before, "no established connection was reset (server, client)");
    let set = stdout(&lab.srv.nft(&["list", "set", "inet", "phantomc", "blocklist_v4"]));
    assert!(set.contains("203.0.113.9"), "the run-time block survived {RELOADS} reloads: {set}");

    latencies.sort();
    println!(
        "reload latency (file write -> new ruleset live, {} reloads, debounce 50ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; stream {sent} bytes echoed intact",
        latencies.len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        latencies.last().expect("latencies").as_secs_f64() * 1000.0,
    );

    // SIGTERM: exit 0, the table stays loaded.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(watcher.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut watcher, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "log:\n{}", lab.log());
    assert!(lab.input_chain().contains(&marker(RELOADS)), "the table stays loaded after SIGTERM");
    assert!(lab.health().stopped_at.is_some());
    let status = lab.status(&policy_path);
    let said = stdout(&status);
    assert!(status.status.success(), "{said}{}", stderr(&status));
    assert!(said.contains("watch: stopped at") && said.contains("loaded, in sync with"), "{said}");
    let log: Vec<serde_json::Value> = lab
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let said =
        |level: &str, message: &str| log.iter().filter(|e| e["level"] == level && e["message"] == message).count();
    assert_eq!(said("INFO", "ruleset reloaded atomically"), 1 + RELOADS, "one log line per reload");
    assert_eq!(said("ERROR", "reload failed; the last good ruleset stays loaded"), 1);
    let error = log.iter().find(|e| e["level"] == "ERROR").expect("the error line");
    assert!(error["diagnostic"].as_str().is_some_and(|d| d.contains("watch.pf:7")), "{error}");
    assert_eq!(said("INFO", "stopping; the loaded ruleset stays loaded"), 1);
}

#[test]
fn includes_and_local_feeds_are_watched_as_they_change() {
    let lab = Lab::new();
    let main = lab.path("main.pf");
    std::fs::write(lab.path("a.pf"), "pass in proto tcp to port 1001 label \"from-a\"\n").unwrap();
    std::fs::write(lab.path("b.pf"), "pass in proto tcp to port 1002 label \"from-b\"\n").unwrap();
    std::fs::create_dir(lab.path("feeds")).unwrap();
    std::fs::write(lab.path("feeds/drop.txt"), "192.0.2.0/24\n").unwrap();
    let with = |inc: &str| {
        format!("pass in on lo\ninclude \"{inc}\"\nfeed drop {{ source \"feeds/drop.txt\"; format plain }}\nblock in from <drop>\n")
    };
    std::fs::write(&main, with("a.pf")).unwrap();
    // The feed's cached copy (from `feeds update`) fills its set on load.
    let state_dir = lab.path("state");
    let update =
        lab.srv.phantomc(&["feeds", "update", "--state-dir", state_dir.to_str().unwrap(), main.to_str().unwrap()]);
    assert!(update.status.success(), "{}{}", stdout(&update), stderr(&update));
    let systemd = UnixDatagram::bind(lab.path("notify.sock")).expect("notify socket");
    systemd.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut watcher = lab.watch(&main, Some(&lab.path("notify.sock")));
    let ready = notification(&systemd);
    assert!(ready.starts_with("READY=1\nSTATUS=table inet phantomc loaded ("), "{ready}");
    let h = lab.health();
    assert_eq!(h.reloads, 1);
    let second =
        lab.srv.phantomc(&["watch", main.to_str().unwrap(), "--state-file", lab.path("health.json").to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(2), "a second watcher for the same table is refused");
    assert!(
        stderr(&second).contains(&format!("another phantomc watch (pid {}) already keeps this table", watcher.id())),
        "{}",
        stderr(&second)
    );
    assert!(h.watched.iter().any(|p| p.ends_with("feeds/drop.txt")), "{:?}", h.watched);
    assert!(!h.watched.iter().any(|p| p.ends_with("b.pf")), "{:?}", h.watched);
    let loaded_feed = feed_set(&lab.srv, "drop_v4");
    assert!(loaded_feed.contains("192.0.2.0/24"), "the cached feed copy is loaded: {loaded_feed}");

    // The included file is watched.
    std::fs::write(lab.path("a.pf"), "pass in proto tcp to port 1001 label \"from-a2\"\n").unwrap();
    eventually("a.pf's edit live", || lab.input_chain().contains("from-a2"));

    // Switch the include: b.pf is watched from now on, a.pf no longer.
    std::fs::write(&main, with("b.pf")).unwrap();
    let h = lab.wait_health("include switched", |h| h.reloads == 3);
    assert!(
        h.watched.iter().any(|p| p.ends_with("b.pf")) && !h.watched.iter().any(|p| p.ends_with("a.pf")),
        "{:?}",
        h.watched
    );
    std::fs::write(lab.path("b.pf"), "pass in proto tcp to port 1002 label \"from-b2\"\n").unwrap();
    eventually("b.pf's edit live", || lab.input_chain().contains("from-b2"));
    std::fs::write(lab.path("a.pf"), "this is no longer read\n").unwrap();

    // A local feed file change is seen: the policy compiles to the same
    // ruleset, and the feed's set is swapped in place.
    std::fs::write(lab.path("feeds/drop.txt"), "198.51.100.0/24\n").unwrap();
    let h = lab.wait_health("feed change seen", |h| h.unchanged == 1);
    assert_eq!((h.reloads, h.failures), (4, 0), "a.pf's edit after it left the policy changed nothing: {h:?}");
    eventually("the feed set holds the new file's contents", || {
        let set = feed_set(&lab.srv, "drop_v4");
        set.contains("198.51.100.0/24") && !set.contains("192.0.2.0/24")
    });

    // A poisoned copy (the two halves of IPv4) is refused by the refresh
    // too, and never becomes the last good copy: the set keeps the old one.
    std::fs::write(lab.path("feeds/drop.txt"), "0.0.0.0/1\n128.0.0.0/1\n").unwrap();
    lab.wait_health("poisoned feed change seen", |h| h.unchanged == 2);
    let meta = state_dir.join("feeds/drop.meta.json");
    eventually("the refresh refused the poisoned copy", || {
        std::fs::read_to_string(&meta).is_ok_and(|m| m.contains("kept-last-good") && m.contains("too broad: covers"))
    });
    let set = feed_set(&lab.srv, "drop_v4");
    assert!(set.contains("198.51.100.0/24") && !set.contains("0.0.0.0/1"), "{set}");
    let cached = std::fs::read_to_string(state_dir.join("feeds/drop.nets")).unwrap();
    assert_eq!(cached, "198.51.100.0/24\n", "the last good copy is still cached");

    // `git checkout` style: the policy disappears for a moment, then comes back.
    std::fs::remove_file(&main).unwrap();
    let h = lab.wait_health("missing policy recorded", |h| h.failures == 1);
    assert!(h.last_error.as_deref().is_some_and(|e| e.contains("cannot read")), "{h:?}");
    assert!(lab.input_chain().contains("from-b2"), "the last good ruleset stays loaded");
    // A truncated policy would compile to "drop everything": refused.
    std::fs::write(&main, "").unwrap();
    let h = lab.wait_health("empty policy refused", |h| h.failures == 2);
    assert!(h.last_error.as_deref().is_some_and(|e| e.contains("is empty")), "{h:?}");
    assert!(lab.input_chain().contains("from-b2"), "the last good ruleset stays loaded");
    // A single newline compiles, to a ruleset that passes nothing: refused too.
    std::fs::write(&main, "\n").unwrap();
    let h = lab.wait_health("blank policy refused", |h| h.failures == 3);
    assert!(h.last_error.as_deref().is_some_and(|e| e.contains("the policy passes nothing")), "{h:?}");
    assert!(lab.input_chain().contains("from-b2"), "the last good ruleset stays loaded");
    std::fs::write(&main, with("b.pf")).unwrap();
    let h = lab.wait_health("policy back", |h| h.unchanged == 3);
    assert_eq!((h.reloads, h.last_error), (4, None), "the same ruleset again: nothing to reload");

    // SIGHUP reloads even an unchanged policy.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(watcher.id() as i32, libc::SIGHUP) }, 0);
    let messages = [notification(&systemd), notification(&systemd)];
    assert!(messages[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{messages:?}");
    assert!(messages[1].starts_with("READY=1\nSTATUS=") && messages[1].contains("5 reloads"), "{messages:?}");
    assert_eq!(lab.health().reloads, 5);
    assert_eq!(unsafe { libc::kill(watcher.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(wait_exit(&mut watcher, Duration::from_secs(10)).code(), Some(0), "log:\n{}", lab.log());
    assert!(notification(&systemd).starts_with("STOPPING=1"));
}

#[test]
fn watch_listen_serves_the_live_health() {
    let lab = Lab::new();
    let policy_path = lab.path("watch.pf");
    save(&policy_path, &policy(0), false);
    let (path, state) = (policy_path.to_str().expect("utf-8"), lab.path("health.json"));
    let api = Service::launch(
        &lab.srv,
        9181,
        &[
            "watch",
            path,
            "--listen",
            "127.0.0.1:9181",
            "--state-file",
            state.to_str().expect("utf-8"),
            "--debounce-ms",
            "50",
        ],
    );
    let h = lab.wait_health("first load", |h| h.reloads == 1);
    let status = api.get_json("/api/v1/status");
    assert_eq!(status["health_source"], "watch", "{status}");
    assert_eq!(status["ruleset_hash"].as_str(), h.ruleset_hash.as_deref(), "{status}");
    assert_eq!((status["reloads"].as_u64(), status["state"].as_str()), (Some(1), Some("in-sync")), "{status}");

    save(&policy_path, &policy(1).replace("port 9002", "port 99999"), true);
    lab.wait_health("broken edit recorded", |h| h.failures == 1);
    let status = api.get_json("/api/v1/status");
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("watch.pf:7") && e.contains("99999")), "{status}");
    assert_eq!(
        status["ruleset_hash"].as_str(),
        h.ruleset_hash.as_deref(),
        "the old ruleset is still the loaded one: {status}"
    );

    save(&policy_path, &policy(1), true);
    let h = lab.wait_health("fixed", |h| h.reloads == 2);
    let status = api.get_json("/api/v1/status");
    assert_eq!((status["reloads"].as_u64(), status["last_error"].is_null()), (Some(2), true), "{status}");
    assert_eq!(status["ruleset_hash"].as_str(), h.ruleset_hash.as_deref(), "{status}");
    let (code, page) = api.get("/");
    assert_eq!(code, 200);
    assert!(page.to_lowercase().starts_with("<!doctype html>"), "the dashboard is served too: {page}");
}

#[test]
fn an_edit_no_event_reported_is_picked_up_by_the_periodic_check() {
    let lab = Lab::new();
    let policy_path = lab.path("watch.pf");
    save(&policy_path, &policy(0), false);
    // A second name for the same file in a folder the service does not
    // watch: a write through it raises no event on the policy's folder.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let alias = elsewhere.path().join("alias.pf");
    std::fs::hard_link(&policy_path, &alias).expect("hard link");
    // An nft that fails while `nft-broken` exists, as when out of descriptors.
    let (nft, broken) = (lab.path("nft"), lab.path("nft-broken"));
    std::fs::write(
        &nft,
        format!(
            "#!/bin/sh\n[ -e {} ] && {{ echo 'Too many open files' >&2; exit 1; }}\nexec nft \"$@\"\n",
            broken.display()
        ),
    )
    .expect("nft wrapper");
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::write(&broken, "").expect("flag");
    // The load goes through nft (PHANTOMC_LOAD=nft): the netlink load would not run it.
    let env = [("PHANTOMC_NFT", nft.as_path()), ("PHANTOMC_LOAD", std::path::Path::new("nft"))];
    let mut watcher = lab.watch_with(&policy_path, None, &["--recheck-secs", "1"], &env);
    let h = lab.wait_health("first load failed", |h| h.failures == 1);
    assert!(h.last_error.as_deref().is_some_and(|e| e.contains("Too many open files")), "{h:?}");
    // Not the policy's fault: the periodic check retries without an edit.
    std::fs::remove_file(&broken).expect("unflag");
    lab.wait_health("the retry loads it", |h| h.reloads == 1 && h.last_error.is_none());
    assert!(lab.log().contains("retrying the reload that failed"), "{}", lab.log());
    std::fs::write(&alias, policy(1)).expect("write through the alias");
    let h = lab.wait_health("the periodic check reloads", |h| h.reloads == 2);
    assert_eq!(h.failures, 1, "{h:?}");
    assert!(lab.input_chain().contains(&marker(1)), "{}", lab.input_chain());
    assert!(lab.log().contains("change found by the periodic check"), "{}", lab.log());
    // Nothing changed since: the check stays quiet and reloads nothing.
    std::thread::sleep(Duration::from_millis(2500));
    let h = lab.health();
    assert_eq!((h.reloads, h.unchanged, h.failures), (2, 0, 1), "{h:?}");
    assert_eq!(unsafe { libc::kill(watcher.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(wait_exit(&mut watcher, Duration::from_secs(10)).code(), Some(0), "log:\n{}", lab.log());
}

/// Opens `count` connections to the API that each send half a request and
/// then nothing, as a slowloris attacker does.
fn half_sent_requests(ns: &Netns, port: u16, count: usize) -> Vec<std::net::TcpStream> {
    ns.run_in(move || {
        (0..count)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
                s
            })
            .collect()
    })
}

/// What the server said before it closed the connection (empty when it
/// closed without a word); panics when it is still open after `limit`.
fn closed_by_server(mut s: std::net::TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut said = Vec::new();
    match s.read_to_end(&mut said) {
        Ok(_) => String::from_utf8_lossy(&said).into_owned(),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => String::from_utf8_lossy(&said).into_owned(),
        Err(e) => {
            panic!("the connection is still open ({e}) after {limit:?}; it said {:?}", String::from_utf8_lossy(&said))
        }
    }
}

#[test]
fn a_slowloris_flood_on_the_api_does_not_stop_reloads() {
    require_tool("prlimit");
    let lab = Lab::new();
    let policy_path = lab.path("watch.pf");
    save(&policy_path, &policy(0), false);
    let (path, state) = (policy_path.to_str().expect("utf-8"), lab.path("health.json"));
    // 512 descriptors, as a small LimitNOFILE: 1,100 idle connections
    // would take them all without the connection cap.
    let api = Service::launch_wrapped(
        &lab.srv,
        9182,
        &["prlimit", "--nofile=512:512", "--"],
        &[
            "watch",
            path,
            "--listen",
            "127.0.0.1:9182",
            "--max-connections",
            "100",
            "--request-timeout",
            "5",
            "--state-file",
            state.to_str().expect("utf-8"),
            "--debounce-ms",
            "50",
        ],
    );
    lab.wait_health("first load", |h| h.reloads == 1);
    let flood = half_sent_requests(&lab.srv, 9182, 1100);
    // A whole request now: answered 503 and closed (the close may reset the
    // connection, as the server did not read the request).
    let mut late = half_sent_requests(&lab.srv, 9182, 1).pop().expect("one");
    let _ = late.write_all(b"\r\n");
    let answer = closed_by_server(late, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503 "), "over the connection cap: {answer}");
    assert!(answer.contains("too many open API connections"), "{answer}");

    save(&policy_path, &policy(1), true);
    let h = lab.wait_health("the reload during the flood", |h| h.reloads == 2);
    assert_eq!((h.failures, h.last_error), (0, None));
    assert!(lab.input_chain().contains(&marker(1)), "{}", lab.input_chain());

    // Every flood connection is closed by the server: at once when over
    // the cap (with a 503, unless the close reset it first), after the
    // header timeout otherwise; none was ever served.
    let answers: Vec<String> = flood.into_iter().map(|s| closed_by_server(s, Duration::from_secs(15))).collect();
    let busy = answers.iter().filter(|a| a.starts_with("HTTP/1.1 503 ")).count();
    assert!(busy > 0 && answers.iter().all(|a| a.is_empty() || a.starts_with("HTTP/1.1 503 ")), "{answers:?}");
    assert_eq!(api.get_json("/api/v1/status")["reloads"], 2, "the API answers again");
}
