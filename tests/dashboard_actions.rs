//! The dashboard acts: headless Chromium, driven over the DevTools protocol
//! (`--remote-debugging-pipe`), runs in a server namespace where `phantomc
//! watch --listen` keeps an adaptive policy in observe mode. A scanner's
//! finding shows in the alerts panel and becomes a proposal; mouse clicks on
//! Unblock and Accept change the live ruleset and the policy file.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::lan::Lan;
use common::*;
use serde_json::{json, Value};

const PORT: u16 = 9182;
const TOKEN: &str = "dashboard-token-71be";
const SRV: &str = "10.78.0.1";
const SCANNER: &str = "10.78.0.66";
const BLOCKED: &str = "10.78.0.99";

const POLICY: &str = "table phantomc\n\
    set attackers dynamic\n\
    policy input block\n\
    policy output pass\n\
    pass in on lo\n\
    block in from <attackers>\n\
    pass in state { established, related }\n\
    pass in proto tcp to port 1-2000 state new\n\
    adaptive { mode observe; set attackers; }\n";

/// Headless Chromium on a DevTools pipe: commands go to its fd 3, answers
/// and events come from its fd 4, one JSON message per NUL.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next: u64,
    session: String,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe");
    // SAFETY: both descriptors were just created and are owned here only.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start(ns: &Netns, profile: &Path, url: &str) -> Browser {
        let found = Command::new("sh").args(["-c", "command -v chromium"]).output().is_ok_and(|o| o.status.success());
        assert!(found, "the dashboard test needs Debian's chromium (apt-get install chromium)");
        let (their_in, our_out) = pipe();
        let (our_in, their_out) = pipe();
        let (r, w) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, "chromium", "--headless", "--no-sandbox", "--disable-gpu"])
            .args(["--disable-quic", "--no-first-run", "--disable-background-networking"])
            .args(["--disable-component-update", "--disable-sync", "--remote-debugging-pipe"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--window-size=1280,900", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 is async-signal-safe; it gives the child the pipe ends as fds 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop((their_in, their_out));
        let (tx, from) = std::sync::mpsc::channel();
        let mut reader = std::fs::File::from(our_in);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser { child, to: std::fs::File::from(our_out), from, next: 0, session: String::new() };
        let target = b.call(None, "Target.createTarget", json!({ "url": url }));
        let id = target["targetId"].as_str().expect("target id").to_string();
        let attached = b.call(None, "Target.attachToTarget", json!({ "targetId": id, "flatten": true }));
        b.session = attached["sessionId"].as_str().expect("session id").to_string();
        b
    }

    /// Sends a command (to the page's session, or the browser) and waits for its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut msg = json!({ "id": self.next, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == self.next => {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
                Ok(_) => {} // an event, or an answer to another command
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium closed the pipe during {method}"),
            }
        }
    }

    /// Evaluates JavaScript in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let r = self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true (the page may still be loading: an exception is false).
    fn wait_for(&mut self, what: &str, expression: &str) {
        let guarded = format!("(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()");
        eventually_within(Duration::from_secs(20), what, || self.eval(&guarded) == json!(true));
    }

    /// A real mouse click in the middle of the element `selector` shows.
    fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) =
            (at[0].as_f64().unwrap_or_else(|| panic!("no {selector} on the page")), at[1].as_f64().expect("y"));
        let session = self.session.clone();
        for kind in ["mousePressed", "mouseReleased"] {
            let p = json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 });
            self.call(Some(&session), "Input.dispatchMouseEvent", p);
        }
    }

    /// Types text into the focused element, as a keyboard would.
    fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        let session = self.session.clone();
        self.call(Some(&session), "Input.insertText", json!({ "text": text }));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_members(ns: &Netns, set: &str) -> String {
    let out = ns.nft(&["list", "set", "inet", "phantomc", set]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn dashboard_unblocks_and_accepts_a_proposal_with_real_clicks() {
    require_tools();
    let lan = Lan::new(&[("srv", SRV), ("scan", SCANNER)]);
    let srv = lan.host(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.pf");
    std::fs::write(&policy, POLICY).expect("policy");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let listen = format!("127.0.0.1:{PORT}");
    let (state_file, state_dir) = (path(&dir.path().join("health.json")), path(&dir.path().join("state")));
    let args = [
        "watch",
        &path(&policy),
        "--listen",
        &listen,
        "--token-file",
        &path(&token),
        "--state-file",
        &state_file,
        "--state-dir",
        &state_dir,
        "--debounce-ms",
        "50",
    ];
    let _watch = Service::launch(srv, PORT, &args);
    let status = dir.path().join("state/adaptive/status.json");
    eventually("the policy is loaded and adaptive mode follows conntrack", || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"mode\": \"observe\""))
    });
    let _servers = Servers::start(srv, &[80], &[]);

    // A scan of closed ports: observed (not blocked) and proposed.
    let scan = lan.host(1);
    scan.run_in(|| {
        for port in 1000..1012 {
            let sa: std::net::SocketAddr = format!("{SRV}:{port}").parse().unwrap();
            let _ = std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(300));
        }
    });
    let out = srv.phantomc(&["block", BLOCKED, "--set", "attackers", "--timeout", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(set_members(srv, "attackers_v4").contains(BLOCKED));

    let profile = dir.path().join("profile");
    let mut browser = Browser::start(srv, &profile, &format!("http://{listen}/"));
    browser.wait_for("the dashboard loaded", "document.body.dataset.loaded === 'yes'");
    let alert = format!("tr.alert[data-source='{SCANNER}']");
    let alerts = dir.path().join("state/adaptive/alerts.jsonl");
    eventually_within(Duration::from_secs(10), "the scan is reported", || {
        std::fs::read_to_string(&alerts).is_ok_and(|a| a.contains(SCANNER))
    });
    browser.wait_for("the scanner's alert is shown", &format!("!!document.querySelector(\"{alert}\")"));
    assert_eq!(browser.eval(&format!("document.querySelector(\"{alert}\").className")), json!("alert observed"));
    assert!(browser
        .eval("document.getElementById('adaptive').textContent")
        .as_str()
        .is_some_and(|t| t.starts_with("observe mode")));
    let proposal = format!("div.proposal[data-subject='{SCANNER}']");
    browser.wait_for("the scanner is proposed", &format!("!!document.querySelector(\"{proposal}\")"));

    // Without the token the dashboard asks for it and writes nothing.
    browser.click(&format!("button.unblock[data-address='{BLOCKED}/32']"));
    browser.wait_for("asked for the token", "document.getElementById('write-status').dataset.result === 'error'");
    assert!(set_members(srv, "attackers_v4").contains(BLOCKED));

    browser.type_into("#token", TOKEN);
    browser.click("#token-save");
    browser.click(&format!("button.unblock[data-address='{BLOCKED}/32']"));
    browser.wait_for("unblocked", "document.getElementById('write-status').textContent.startsWith('unblocked')");
    assert!(!set_members(srv, "attackers_v4").contains(BLOCKED), "the live set changed");
    browser.wait_for(
        "the row is gone",
        &format!("!document.querySelector(\"button.unblock[data-address='{BLOCKED}/32']\")"),
    );

    let before = std::fs::read_to_string(&policy).expect("policy");
    browser.click(&format!("{proposal} button.accept"));
    browser.wait_for("accepted", "document.getElementById('write-status').textContent.startsWith('accepted')");
    let after = std::fs::read_to_string(&policy).expect("policy");
    assert_ne!(before, after);
    assert!(after.contains(&format!("    {SCANNER} expires ")) && after.contains("vertical-scan"), "{after}");
    eventually_within(Duration::from_secs(10), "watch reloads the accepted policy", || {
        let out = srv.nft(&["list", "set", "inet", "phantomc", "learned_block_v4"]);
        out.status.success() && stdout(&out).contains(SCANNER)
    });
    assert_eq!(tcp_connect(scan, SRV, 80), Tcp::TimedOut, "the scanner is dropped by the accepted rule");
    browser.wait_for("the proposal is gone", &format!("!document.querySelector(\"{proposal}\")"));
}
