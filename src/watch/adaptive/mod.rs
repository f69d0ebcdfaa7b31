//! Adaptive mode: while `watch` runs, follow conntrack events, keep a
//! rolling window of flows, run the learner's detectors over the sources
//! that changed, keep the baseline learned online, and act on findings
//! (`block` mode) or only report them (`observe`).
//!
//! [`window`] holds the flows, [`baseline`] what benign clients do,
//! [`action`] what may be blocked and for how long, [`alerts`] the record.
//! The detectors are the learner's own ([`crate::learn::detect`]).

pub mod action;
pub mod alerts;
pub mod baseline;
pub mod dropped;
pub mod proposals;
pub mod window;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use self::action::{Blocker, Decision, Protected};
use self::alerts::{Alert, AlertLog};
use self::baseline::Baseline;
use self::dropped::Dropped;
use self::proposals::Store;
use self::window::FlowWindow;
pub(crate) use super::write_atomic;
use super::{unix_now, SharedHealth};
use crate::guard;
use crate::host;
use crate::host::conntrack::{self, Events, TcpState, Tracker};
use crate::ir::{Adaptive, Compiled};
use crate::learn::conntrack::{to_flow, StateTimeouts};
use crate::learn::{self, Detector, Finding, Flow};
use crate::nft::{block, Nft};

/// Flows kept at most; a busier window is shortened (and says so).
const MAX_FLOWS: usize = 200_000;
/// How often the detectors look at the sources that changed.
const DETECT_EVERY: Duration = Duration::from_millis(200);
/// How often the window is pruned and the status published.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
const SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often proposals are remade when their evidence or the policy changed,
/// and services used are looked for.
const PROPOSE_EVERY: Duration = Duration::from_secs(5);
/// A closed connection teaches the baseline only this long after it
/// closed, and only if no detector flagged its source meanwhile: an
/// attack's first connections must not become "normal".
const LEARN_DELAY: Duration = Duration::from_secs(10);
/// Closed connections waiting for [`LEARN_DELAY`]; beyond, they are not learned.
const MAX_PENDING: usize = 20_000;

/// What the engine works with; rebuilt by the service on every load.
pub struct Plan {
    pub table: String,
    /// The policy file: proposals are diffs against it.
    pub policy: PathBuf,
    pub adaptive: Adaptive,
    pub cfg: learn::Config,
    pub protected: Protected,
    /// This host's addresses: connections to them are its services.
    pub own: Vec<IpAddr>,
    /// NFLOG groups of the input rules and default policy that drop.
    pub nflog_groups: Vec<u16>,
}

impl Plan {
    /// The plan for a compiled policy; `None` without an `adaptive` block.
    /// The thresholds file is read here, relative to the policy's folder.
    pub fn new(compiled: &Compiled, policy: &Path) -> Result<Option<Plan>, String> {
        let rs = &compiled.ruleset;
        let Some(adaptive) = rs.adaptive.clone() else { return Ok(None) };
        let cfg = match &adaptive.thresholds {
            Some(file) => {
                let path = policy.parent().unwrap_or(Path::new(".")).join(file);
                learn::Config::load(&path)?
            }
            None => learn::Config::default(),
        };
        // The library's one protected set: policy, this host, gateways and the operator's sessions.
        let operator = guard::Operator::discover(None, guard::SSH_PORT)?;
        let protected = Protected::gather(Some(rs), &operator);
        let own = host::addresses().map(|a| a.into_iter().map(|a| a.addr).collect()).unwrap_or_default();
        let nflog_groups =
            rs.nflog_groups(|hook, action| hook == crate::ir::Hook::Input && action != crate::ir::Action::Pass);
        Ok(Some(Plan {
            table: rs.table.clone(),
            policy: policy.to_path_buf(),
            nflog_groups,
            adaptive,
            cfg,
            protected,
            own,
        }))
    }
}

/// Turns on conntrack's byte counters and timestamps in this namespace:
/// the detectors tell a failed login from a working session by its size.
fn enable_accounting() {
    for name in ["nf_conntrack_acct", "nf_conntrack_timestamp"] {
        let path = format!("/proc/sys/net/netfilter/{name}");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            match std::fs::write(&path, "1") {
                Ok(()) => {
                    info!(sysctl = %format!("net.netfilter.{name}=1"), "conntrack counters turned on for adaptive mode")
                }
                Err(e) => {
                    warn!(sysctl = %format!("net.netfilter.{name}"), error = %e, "cannot turn on conntrack counters; brute force needs them")
                }
            }
        }
    }
}

/// A TCP connection that has closed (its entry lingers a while).
fn closed(e: &conntrack::CtEntry) -> bool {
    matches!(e.tcp_state, Some(TcpState::TimeWait | TcpState::Close))
}

/// What the adaptive mode is doing, for `status`, the API and the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// `observe` or `block`; `None` while the policy has no `adaptive` block.
    pub mode: Option<String>,
    pub set: Option<String>,
    /// Flows and sources in the window now.
    pub flows: usize,
    pub sources: usize,
    /// Seconds of flows kept (shorter than configured when the cap bites).
    pub window_secs: u64,
    pub configured_window_secs: u64,
    pub events: u64,
    pub lost_overruns: u64,
    pub findings: u64,
    pub blocks: u64,
    /// Findings since the engine started, by detector, then by what was
    /// done (`blocked`, `observed`, `protected`, ...): `findings` split up.
    pub findings_by_detector: BTreeMap<String, BTreeMap<String, u64>>,
    pub last_alert: Option<u64>,
    pub baseline_services: usize,
    pub baseline_connections: u64,
    pub offenders: usize,
    /// Proposals waiting for a review.
    pub proposals: usize,
    /// NFLOG groups followed, and the dropped packets read from them.
    pub nflog_groups: Vec<u16>,
    pub dropped_packets: u64,
    pub error: Option<String>,
    pub state_dir: PathBuf,
}

/// The file the engine writes its [`Status`] to, in its state directory.
pub const STATUS_FILE: &str = "status.json";

/// The running engine: its plan is replaced on every load, and it stops
/// (saving its state) when dropped or stopped.
pub struct Handle {
    plan: Arc<Mutex<Option<Arc<Plan>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: PathBuf,
}

impl Handle {
    /// Starts the engine with its state in `dir`; it idles until a plan comes.
    pub fn start(dir: PathBuf, health: SharedHealth) -> Handle {
        let plan = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (plan, stop, dir) = (plan.clone(), stop.clone(), dir.clone());
            std::thread::Builder::new()
                .name("adaptive".into())
                .spawn(move || Engine::new(dir, health).run(&plan, &stop))
                .expect("spawn the adaptive thread")
        };
        Handle { plan, stop, thread: Some(thread), dir }
    }

    /// Takes the adaptive settings of a policy that loaded.
    pub fn update(&self, compiled: &Compiled, policy: &Path) -> Result<(), String> {
        let plan = Plan::new(compiled, policy)?;
        if let Some(p) = &plan {
            info!(mode = p.adaptive.mode.name(), set = %p.adaptive.set, window = p.adaptive.window, "adaptive mode on");
        }
        *self.plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = plan.map(Arc::new);
        Ok(())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Engine {
    dir: PathBuf,
    health: SharedHealth,
    baseline: Baseline,
    blocker: Blocker,
    alerts: AlertLog,
    tracker: Tracker,
    window: FlowWindow,
    timeouts: StateTimeouts,
    /// (source, detector) already reported, until (µs).
    reported: HashMap<(IpAddr, Detector), u64>,
    /// Sources with a finding, until (µs): their connections teach the baseline nothing.
    flagged: HashMap<IpAddr, u64>,
    /// Closed connections to learn from once [`LEARN_DELAY`] has passed (due µs).
    pending: VecDeque<(u64, Flow)>,
    /// For counters of single entries, opened when first needed.
    lookup: Option<conntrack::Lookup>,
    proposals: Store,
    /// The policy's dropped packets (NFLOG), when it logs them to a group.
    dropped: Option<Dropped>,
    /// When binding the NFLOG groups last failed.
    dropped_failed: Option<Instant>,
    status: Status,
}

impl Engine {
    fn new(dir: PathBuf, health: SharedHealth) -> Engine {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            error!(dir = %dir.display(), error = %e, "cannot create the adaptive state directory");
        }
        let mut status = Status { state_dir: dir.clone(), ..Status::default() };
        let baseline = Baseline::load(&dir).unwrap_or_else(|e| {
            let kept = set_aside(&dir.join(baseline::FILE));
            error!(error = %e, kept_as = %kept.display(), "baseline refused; learning a new one");
            status.error = Some(format!("baseline refused: {e}"));
            Baseline::fresh()
        });
        let blocker = Blocker::load(Some(&dir)).unwrap_or_else(|e| {
            let kept = set_aside(&dir.join("offenders.json"));
            error!(error = %e, kept_as = %kept.display(), "offenders file refused; starting a new one");
            status.error = Some(format!("offenders refused: {e}"));
            Blocker::load(None).expect("an empty record")
        });
        let proposals = Store::load(&dir).unwrap_or_else(|e| {
            let kept = set_aside(&dir.join(proposals::FILE));
            error!(error = %e, kept_as = %kept.display(), "proposals refused; starting afresh");
            status.error = Some(format!("proposals refused: {e}"));
            Store::empty(&dir)
        });
        info!(dir = %dir.display(), baseline_services = baseline.services.len(), learned = baseline.learned, "adaptive state loaded");
        Engine {
            alerts: AlertLog::new(&dir),
            dir,
            health,
            baseline,
            blocker,
            tracker: Tracker::default(),
            window: FlowWindow::default(),
            timeouts: StateTimeouts::read(),
            reported: HashMap::new(),
            flagged: HashMap::new(),
            pending: VecDeque::new(),
            lookup: None,
            proposals,
            dropped: None,
            dropped_failed: None,
            status,
        }
    }

    fn run(mut self, plan: &Mutex<Option<Arc<Plan>>>, stop: &AtomicBool) {
        let mut events: Option<Events> = None;
        let (mut last_detect, mut last_house, mut last_save) = (Instant::now(), Instant::now(), Instant::now());
        let mut last_propose = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let current = plan.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let Some(plan) = current else {
                events = None;
                self.publish(None);
                std::thread::sleep(Duration::from_millis(300));
                continue;
            };
            if events.is_none() {
                enable_accounting();
                match Events::subscribe() {
                    Ok(e) => events = Some(e),
                    Err(e) => {
                        error!(error = %e, "cannot follow conntrack events; retrying in 5s");
                        self.status.error = Some(e.to_string());
                        self.publish(Some(&plan));
                        std::thread::sleep(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let ev = events.as_mut().expect("subscribed");
            // With NFLOG to read too, conntrack is waited on for less.
            let wait = Duration::from_millis(if self.dropped.is_some() { 20 } else { 100 });
            if let Err(e) = ev.next(wait, &mut |event, entry, now_ns| self.absorb(&plan, event, entry, now_ns)) {
                warn!(error = %e, "conntrack event skipped");
            }
            self.status.lost_overruns = ev.lost_overruns;
            self.follow_drops(&plan);
            if self.window.has_dirty() && last_detect.elapsed() >= DETECT_EVERY {
                self.detect(&plan);
                last_detect = Instant::now();
            }
            if last_house.elapsed() >= HOUSEKEEPING_EVERY {
                self.housekeeping(&plan);
                last_house = Instant::now();
            }
            if last_propose.elapsed() >= PROPOSE_EVERY {
                self.propose(&plan);
                last_propose = Instant::now();
            }
            if last_save.elapsed() >= SAVE_EVERY {
                self.save();
                last_save = Instant::now();
            }
        }
        self.save();
    }

    fn absorb(&mut self, plan: &Plan, event: conntrack::Event, entry: conntrack::CtEntry, now_ns: u64) {
        self.status.events += 1;
        let key = entry.key();
        let now_us = now_ns / 1000;
        let was_closed = self.tracker.get_key(&key).is_some_and(closed);
        let (flow, ended) = match self.tracker.absorb(event, entry, now_ns) {
            Some(ended) => (to_flow(&ended, &self.timeouts, now_us), true),
            None => {
                self.fetch_counters(plan, &key, was_closed, now_ns);
                match self.tracker.get_key(&key) {
                    Some(open) => (to_flow(open, &self.timeouts, now_us), closed(open)),
                    None => return,
                }
            }
        };
        // A connection teaches the baseline once, when it closes (TCP
        // lingers in TIME_WAIT for minutes) or ends.
        if ended && !was_closed {
            let client = flow.client.ip();
            let inbound = plan.own.contains(&flow.server.ip()) && flow.server.port() < plan.cfg.propose.ephemeral_from;
            if inbound && plan.protected.protecting(client).is_none() && self.pending.len() < MAX_PENDING {
                self.pending.push_back((now_us + LEARN_DELAY.as_micros() as u64, flow.clone()));
            }
        }
        self.window.upsert(key, flow);
    }

    /// Reads the packets the policy dropped (NFLOG) into the window, as the
    /// unanswered attempts they are; (re)binds the groups when the policy's change.
    fn follow_drops(&mut self, plan: &Plan) {
        if self.dropped.as_ref().map_or(&[][..], Dropped::groups) != plan.nflog_groups.as_slice() {
            self.dropped = None;
            let retry = self.dropped_failed.is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
            if !plan.nflog_groups.is_empty() && retry {
                match Dropped::bind(&plan.nflog_groups) {
                    Ok(d) => {
                        info!(groups = ?plan.nflog_groups, "following the policy's dropped packets through NFLOG");
                        self.dropped = Some(d);
                        self.dropped_failed = None;
                    }
                    Err(e) => {
                        warn!(groups = ?plan.nflog_groups, error = %e, "cannot read the NFLOG groups (is `phantomc log --follow` holding them?); retrying in 30s");
                        self.status.error = Some(format!("NFLOG groups {:?}: {e}", plan.nflog_groups));
                        self.dropped_failed = Some(Instant::now());
                    }
                }
            }
            self.status.nflog_groups = self.dropped.as_ref().map(|d| d.groups().to_vec()).unwrap_or_default();
        }
        let Some(dropped) = self.dropped.as_mut() else { return };
        let now_ns = unix_now_ns();
        let mut attempts = Vec::new();
        match dropped.drain(64, now_ns, &mut |e| attempts.push(e)) {
            Ok(n) => self.status.dropped_packets += n,
            Err(e) => warn!(error = %e, "NFLOG read failed"),
        }
        for e in attempts {
            let flow = to_flow(&e, &self.timeouts, now_ns / 1000);
            self.window.upsert((None, e.proto, e.orig), flow);
        }
    }

    /// A connection to an authentication service that just closed: its
    /// counters now (events carry them only on destroy, seconds or minutes
    /// later), so a failed login is seen at once.
    fn fetch_counters(&mut self, plan: &Plan, key: &window::Key, was_closed: bool, now_ns: u64) {
        let Some(open) = self.tracker.get_key(key) else { return };
        let wanted = !was_closed
            && closed(open)
            && open.reply_counters.is_none()
            && plan.cfg.brute_force.services.contains_key(&open.orig.dport);
        if !wanted {
            return;
        }
        let (proto, orig) = (open.proto, open.orig);
        if self.lookup.is_none() {
            self.lookup = conntrack::Lookup::open().inspect_err(|e| warn!(error = %e, "conntrack lookup")).ok();
        }
        let Some(lookup) = self.lookup.as_mut() else { return };
        match lookup.get(proto, orig) {
            Ok(Some(now)) => {
                self.tracker.absorb(conntrack::Event::Exists, now, now_ns);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "conntrack lookup failed");
                self.lookup = None;
            }
        }
    }

    /// Runs the learner's detectors over the sources that changed and acts
    /// on what they find, strongest finding of a source first.
    fn detect(&mut self, plan: &Plan) {
        let flows = self.window.take_dirty();
        let mut findings = learn::detect::detect(&flows, &plan.cfg);
        findings.sort_by(|a, b| a.source.cmp(&b.source).then(b.confidence.total_cmp(&a.confidence)));
        let now_us = unix_now() * 1_000_000;
        let window_us = plan.adaptive.window * 1_000_000;
        self.reported.retain(|_, until| *until > now_us);
        self.flagged.retain(|_, until| *until > now_us);
        let mut blocked_now: HashSet<IpAddr> = HashSet::new();
        for f in findings {
            if self.reported.contains_key(&(f.source, f.detector)) {
                continue;
            }
            self.flagged.insert(f.source, now_us + window_us);
            let alert = if blocked_now.contains(&f.source) {
                let mut a = self.alert(plan, &f, "blocked");
                a.reason = Some("blocked for a stronger finding of the same source".into());
                a
            } else {
                let a = self.act(plan, &f);
                if a.action == "blocked" {
                    blocked_now.insert(f.source);
                }
                a
            };
            if alert.action != "blocked" {
                self.reported.insert((f.source, f.detector), now_us + window_us);
            }
            self.proposals.finding(&f, &alert.action, alert.offence, alert.baseline.clone(), alert.time);
            self.record(&alert);
        }
        for src in blocked_now {
            // The evidence was acted on; a return after the block is a new case.
            self.window.forget(src);
            self.reported.retain(|(s, _), _| *s != src);
        }
    }

    fn alert(&self, plan: &Plan, f: &Finding, action: &str) -> Alert {
        Alert {
            time: unix_now(),
            source: f.source.to_string(),
            detector: f.detector.name().to_string(),
            confidence: (f.confidence * 1000.0).round() / 1000.0,
            threshold: f.threshold.clone(),
            counts: f.counts.clone(),
            examples: f.examples.clone(),
            baseline: self.baseline.compare(&self.window.source_flows(f.source), plan.adaptive.window),
            action: action.to_string(),
            reason: None,
            set: None,
            timeout: None,
            expires: None,
            offence: None,
        }
    }

    fn act(&mut self, plan: &Plan, f: &Finding) -> Alert {
        let now = unix_now();
        let decision = self.blocker.decide(&plan.adaptive, &plan.protected, f.source, f.confidence, now);
        let mut alert = self.alert(plan, f, decision.action());
        match decision {
            Decision::Block { timeout, offence } => {
                let secs = u32::try_from(timeout).unwrap_or(u32::MAX);
                let set = &plan.adaptive.set;
                match block::change(&Nft::default(), &plan.table, set, f.source.into(), Some(secs), true) {
                    Ok(done) => {
                        self.blocker.blocked(f.source, now);
                        alert.set = Some(done.nft_set);
                        alert.timeout = Some(timeout);
                        alert.expires = Some(now + timeout);
                        alert.offence = Some(offence);
                    }
                    Err(e) => {
                        alert.action = "block-failed".into();
                        alert.reason = Some(e.to_string());
                    }
                }
            }
            Decision::Protected(why) => alert.reason = Some(why),
            Decision::RateCapped => {
                alert.reason = Some(format!("{} blocks in the last minute (max-blocks)", plan.adaptive.max_blocks))
            }
            Decision::LowConfidence => {
                alert.reason = Some(format!("confidence below min-confidence {}%", plan.adaptive.min_confidence))
            }
            Decision::Observe => {}
        }
        alert
    }

    /// Logs the alert and appends it to alerts.jsonl.
    fn record(&mut self, alert: &Alert) {
        let line = serde_json::to_string(alert).expect("alerts serialize");
        if alert.action == "blocked" {
            warn!(alert = %line, source = %alert.source, detector = %alert.detector, "adaptive block");
        } else {
            info!(alert = %line, source = %alert.source, detector = %alert.detector, action = %alert.action, "adaptive finding");
        }
        if let Err(e) = self.alerts.append(alert) {
            error!(error = %e, dir = %self.dir.display(), "cannot write alerts.jsonl");
        }
        self.status.findings += 1;
        let by_action = self.status.findings_by_detector.entry(alert.detector.clone()).or_default();
        *by_action.entry(alert.action.clone()).or_insert(0) += 1;
        self.status.blocks += u64::from(alert.action == "blocked");
        self.status.last_alert = Some(alert.time);
    }

    fn housekeeping(&mut self, plan: &Plan) {
        let now_us = unix_now() * 1_000_000;
        let window_us = plan.adaptive.window * 1_000_000;
        let kept_since = self.window.prune(now_us.saturating_sub(window_us), now_us, MAX_FLOWS);
        // Entries with no event for an hour (or the window) are gone unreaped.
        let stale_ns = now_us.saturating_sub(window_us.max(3_600_000_000)) * 1000;
        self.tracker.expire(stale_ns);
        while self.pending.front().is_some_and(|(due, _)| *due <= now_us) {
            let (_, flow) = self.pending.pop_front().expect("front");
            if !self.flagged.contains_key(&flow.client.ip()) {
                self.baseline.observe(&flow, flow.last_seen_us / 1_000_000);
            }
        }
        self.status.window_secs = (now_us - kept_since.min(now_us)) / 1_000_000;
        self.publish(Some(plan));
    }

    /// Services unflagged clients used lately, then the proposals remade
    /// where their evidence or the policy changed.
    fn propose(&mut self, plan: &Plan) {
        let flagged: std::collections::BTreeSet<IpAddr> = self.flagged.keys().copied().collect();
        let hosts = plan.own.iter().copied().filter(|a| !a.is_loopback()).collect();
        let used = learn::services::services(self.window.flows(), &flagged, &hosts, &plan.cfg.propose);
        let now = unix_now();
        self.proposals.services(used, now);
        self.proposals.refresh(&plan.policy, &plan.cfg, &plan.protected, now);
    }

    fn save(&mut self) {
        if let Err(e) = self.baseline.save(&self.dir) {
            error!(error = %e, dir = %self.dir.display(), "cannot save the baseline");
        }
        if let Err(e) = self.blocker.save() {
            error!(error = %e, dir = %self.dir.display(), "cannot save the offenders");
        }
    }

    /// Puts the status in the shared health and in `status.json`.
    fn publish(&mut self, plan: Option<&Plan>) {
        let s = &mut self.status;
        s.mode = plan.map(|p| p.adaptive.mode.name().to_string());
        s.set = plan.map(|p| p.adaptive.set.clone());
        s.configured_window_secs = plan.map_or(0, |p| p.adaptive.window);
        s.flows = self.window.len();
        s.sources = self.window.sources();
        s.baseline_services = self.baseline.services.len();
        s.baseline_connections = self.baseline.learned;
        s.offenders = self.blocker.offenders().len();
        s.proposals = self.proposals.pending();
        let snapshot = s.clone();
        if self.health.read().expect("health lock").adaptive.as_ref() != Some(&snapshot) {
            self.health.write().expect("health lock").adaptive = Some(snapshot.clone());
            let json = serde_json::to_vec_pretty(&snapshot).expect("status serializes");
            if let Err(e) = write_atomic(&self.dir.join(STATUS_FILE), &json) {
                warn!(error = %e, "cannot write the adaptive status");
            }
        }
    }
}

/// Renames a refused state file out of the way (`NAME.refused-UNIXTIME`),
/// so it is kept for a look and not overwritten.
fn set_aside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".refused-{}", unix_now()));
    let to = PathBuf::from(name);
    let _ = std::fs::rename(path, &to);
    to
}

/// The adaptive state directory under phantomc's state directory.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("adaptive")
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
