//! Proposals kept up to date: what adaptive mode saw and did not block
//! (observe mode, low confidence, the rate cap, a failed block), sources it
//! blocked again and again, and services used that the policy does not
//! pass. Each is one reviewable policy diff with its evidence, made by the
//! learner's own proposer ([`crate::learn::propose`]) against the policy as
//! it is now, and remade when the policy or the evidence changes.
//!
//! The engine owns `proposals.json`; accepting or rejecting one (API, CLI)
//! is recorded in `decisions.json`, which the engine reads: a decided
//! proposal is never proposed again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::write_atomic;
use crate::guard::{self, Operator, Protected};
use crate::ir;
use crate::learn::propose::{self, Context};
use crate::learn::services::Service;
use crate::learn::{self, patch, Finding};

pub const FILE: &str = "proposals.json";
pub const DECISIONS_FILE: &str = "decisions.json";
/// A source blocked this many times is proposed for a permanent block.
pub const REPEAT_OFFENCES: u32 = 3;
/// Proposals kept at most; the least recently updated go first.
const MAX_ITEMS: usize = 200;
/// Clients remembered per service.
const MAX_CLIENTS: usize = 64;
/// Named in the comment the proposer writes above what it adds.
const ORIGIN: &str = "adaptive mode (phantomc watch)";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Put a source into the learned block set for good.
    Block,
    /// Pass a service that clients use.
    Pass,
}

/// One proposal with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Stable for its kind and subject: evidence updates keep it.
    pub id: String,
    pub kind: Kind,
    /// The source (`203.0.113.9`) or the service (`tcp/8080`).
    pub subject: String,
    /// One line for a list.
    pub summary: String,
    /// Findings of the source (the strongest per detector), for `block`.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The service and its clients, for `pass`.
    #[serde(default)]
    pub service: Option<Service>,
    /// Findings (or connections) seen, and the source's blocks.
    pub seen: u64,
    pub blocks: u32,
    /// How the source compares with the baseline.
    #[serde(default)]
    pub baseline: Option<String>,
    pub first_seen: u64,
    pub updated: u64,
    /// Unified diff against `policy`; empty when the policy already covers it.
    pub diff: String,
    #[serde(default)]
    pub warnings: Vec<String>,
    pub policy: PathBuf,
    /// sha256 of the policy text the diff was made against.
    pub policy_sha256: String,
}

impl Item {
    pub fn pending(&self) -> bool {
        !self.diff.is_empty()
    }
}

/// `proposals.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposals {
    pub updated: u64,
    /// Why the latest refresh could not remake the diffs (a policy that does not compile).
    #[serde(default)]
    pub error: Option<String>,
    pub items: Vec<Item>,
}

/// What was decided about a proposal, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `accepted` or `rejected`.
    pub decision: String,
    pub time: u64,
    pub kind: Kind,
    pub subject: String,
}

/// The id of a proposal: a digest of its kind and subject.
pub fn id(kind: Kind, subject: &str) -> String {
    let d = Sha256::digest(format!("{kind:?}/{subject}").as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The proposals in `dir`, decided ones included (see [`pending`]).
pub fn load(dir: &Path) -> Result<Proposals, String> {
    read_json(&dir.join(FILE))
}

pub fn decisions(dir: &Path) -> Result<BTreeMap<String, Decision>, String> {
    read_json(&dir.join(DECISIONS_FILE))
}

/// The proposals still waiting for a review, newest evidence first.
pub fn pending(dir: &Path) -> Result<Vec<Item>, String> {
    let decided = decisions(dir)?;
    let mut items: Vec<Item> =
        load(dir)?.items.into_iter().filter(|i| i.pending() && !decided.contains_key(&i.id)).collect();
    items.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.id.cmp(&b.id)));
    Ok(items)
}

/// Serializes decisions of this process (the API's handlers run in parallel).
static DECIDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn record(dir: &Path, id: &str, item: &Item, decision: &str, now: u64) -> Result<(), String> {
    let _one = DECIDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all = decisions(dir)?;
    let d = Decision { decision: decision.into(), time: now, kind: item.kind, subject: item.subject.clone() };
    all.insert(id.to_string(), d);
    let path = dir.join(DECISIONS_FILE);
    write_atomic(&path, &serde_json::to_vec_pretty(&all).expect("decisions serialize"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Why a proposal was not accepted (or rejected); nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no proposal {0}")]
    NotFound(String),
    #[error("proposal {id} was {} already", .decision.decision)]
    Decided { id: String, decision: Decision },
    #[error("proposal {id} was made for {made_for}, not {policy}")]
    OtherPolicy { id: String, made_for: String, policy: String },
    #[error(
        "proposal {id} no longer applies to {policy}: {why}; it is remade when adaptive mode next looks at the policy"
    )]
    Stale { id: String, policy: String, why: String },
    #[error("with proposal {id}, {policy} would not compile:\n{diagnostics}")]
    Broken { id: String, policy: String, diagnostics: String },
    #[error("refused by the lockout guard: {}", .0.join("; "))]
    Lockout(Vec<String>),
    #[error("{0}")]
    Io(String),
}

/// What accepting a proposal did.
#[derive(Clone, Debug, Serialize)]
pub struct Accepted {
    pub id: String,
    pub policy: PathBuf,
    /// The policy as it was before.
    pub backup: PathBuf,
    /// The commit made, with `git`.
    pub commit: Option<String>,
    pub diff: String,
}

fn find(dir: &Path, id: &str) -> Result<Item, ReviewError> {
    let item = load(dir).map_err(ReviewError::Io)?.items.into_iter().find(|i| i.id == id && i.pending());
    let item = item.ok_or_else(|| ReviewError::NotFound(id.to_string()))?;
    if let Some(decision) = decisions(dir).map_err(ReviewError::Io)?.remove(id) {
        return Err(ReviewError::Decided { id: id.to_string(), decision });
    }
    Ok(item)
}

/// Applies proposal `id` to `policy` atomically: its hunks must still apply,
/// the result must compile and pass the lockout guard. The old text is kept
/// as `POLICY.bak`; with `git` the change is committed with the evidence as
/// its message when the policy is in a git work tree. A running `watch`
/// then reloads the policy.
pub fn accept(
    dir: &Path,
    policy: &Path,
    id: &str,
    operator: &Operator,
    git: bool,
    now: u64,
) -> Result<Accepted, ReviewError> {
    let item = find(dir, id)?;
    let same = |a: &Path, b: &Path| a == b || a.canonicalize().ok().is_some_and(|a| Some(a) == b.canonicalize().ok());
    if !same(&item.policy, policy) {
        return Err(ReviewError::OtherPolicy {
            id: id.to_string(),
            made_for: item.policy.display().to_string(),
            policy: policy.display().to_string(),
        });
    }
    let shown = policy.display().to_string();
    let old = std::fs::read_to_string(policy).map_err(|e| ReviewError::Io(format!("{shown}: {e}")))?;
    let new = patch::apply(&old, &item.diff).map_err(|e| ReviewError::Stale {
        id: id.to_string(),
        policy: shown.clone(),
        why: e.to_string(),
    })?;
    let broken = |e: String| ReviewError::Broken { id: id.to_string(), policy: shown.clone(), diagnostics: e };
    let before = ir::compile_text_at(policy, old.clone()).map_err(|e| broken(e.to_string()))?.ruleset;
    let after = ir::compile_text_at(policy, new.clone()).map_err(|e| broken(e.to_string()))?.ruleset;
    let blocked: Vec<IpAddr> = item.findings.iter().map(|f| f.source).collect();
    guard::check_rewrite(&before, &after, &blocked, operator).map_err(ReviewError::Lockout)?;

    let backup = crate::watch::replace_policy(policy, &new).map_err(|e| ReviewError::Io(format!("{shown}: {e}")))?;
    record(dir, id, &item, "accepted", now).map_err(ReviewError::Io)?;
    let commit = if git { commit(policy, &item) } else { None };
    Ok(Accepted { id: id.to_string(), policy: policy.to_path_buf(), backup, commit, diff: item.diff })
}

/// Remembers that proposal `id` was rejected: it is not proposed again.
pub fn reject(dir: &Path, id: &str, now: u64) -> Result<Item, ReviewError> {
    let item = find(dir, id)?;
    record(dir, id, &item, "rejected", now).map_err(ReviewError::Io)?;
    Ok(item)
}

/// `git commit` of the policy file with the proposal's evidence, when it is
/// in a work tree; the commit's hash. A failure is logged, the file stays.
fn commit(policy: &Path, item: &Item) -> Option<String> {
    let dir = policy.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output();
    let inside = git(&["rev-parse", "--is-inside-work-tree"]).ok()?;
    if !inside.status.success() {
        tracing::info!(policy = %policy.display(), "not in a git work tree: nothing committed");
        return None;
    }
    let file = policy.file_name()?.to_str()?;
    let message = format!("phantomc: accept proposal {}: {}\n\n{}", item.id, item.summary, evidence(item).join("\n"));
    let done = git(&["add", "--", file]).and_then(|_| git(&["commit", "-q", "-m", &message, "--", file]));
    match done {
        Ok(o) if o.status.success() => {
            let head = git(&["rev-parse", "HEAD"]).ok()?;
            Some(String::from_utf8_lossy(&head.stdout).trim().to_string())
        }
        Ok(o) => {
            tracing::warn!(policy = %policy.display(), error = %String::from_utf8_lossy(&o.stderr).trim(), "git commit failed");
            None
        }
        Err(e) => {
            tracing::warn!(policy = %policy.display(), error = %e, "cannot run git");
            None
        }
    }
}

/// The evidence of a proposal, one line each.
pub fn evidence(item: &Item) -> Vec<String> {
    let mut out = Vec::new();
    for f in &item.findings {
        out.push(format!("{} {}: {}; {}", f.source, f.detector.name(), f.threshold, f.counts));
        out.extend(f.examples.iter().map(|e| format!("  e.g. {e}")));
    }
    if let Some(s) = &item.service {
        let clients: Vec<String> = s.clients.iter().map(ToString::to_string).collect();
        out.push(format!("{} connections from {} clients: {}", s.connections, s.clients.len(), clients.join(", ")));
    }
    out.extend(item.baseline.iter().map(|b| format!("compared: {b}")));
    out
}

/// The engine's side: evidence comes in, diffs are remade when it or the
/// policy changed, and the file is written.
pub struct Store {
    dir: PathBuf,
    items: BTreeMap<String, Item>,
    /// Items whose evidence changed since their diff was made.
    changed: BTreeSet<String>,
}

impl Store {
    /// Reads `DIR/proposals.json`; a damaged file is an error naming it.
    pub fn load(dir: &Path) -> Result<Store, String> {
        let items = load(dir)?.items.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(Store { dir: dir.to_path_buf(), items, changed: BTreeSet::new() })
    }

    pub fn empty(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf(), items: BTreeMap::new(), changed: BTreeSet::new() }
    }

    pub fn pending(&self) -> usize {
        self.items.values().filter(|i| i.pending()).count()
    }

    /// The item of `kind` and `subject` (new if need be), marked changed.
    fn entry(&mut self, kind: Kind, subject: String, now: u64) -> &mut Item {
        let id = id(kind, &subject);
        self.changed.insert(id.clone());
        self.items.entry(id.clone()).or_insert_with(|| Item {
            id,
            kind,
            subject,
            summary: String::new(),
            findings: Vec::new(),
            service: None,
            seen: 0,
            blocks: 0,
            baseline: None,
            first_seen: now,
            updated: now,
            diff: String::new(),
            warnings: Vec::new(),
            policy: PathBuf::new(),
            policy_sha256: String::new(),
        })
    }

    /// A finding and what was done about it. Blocked sources become a
    /// proposal on their [`REPEAT_OFFENCES`]th block; protected ones never.
    pub fn finding(&mut self, f: &Finding, action: &str, offence: Option<u32>, baseline: Option<String>, now: u64) {
        let wanted = match action {
            "blocked" => offence.is_some_and(|o| o >= REPEAT_OFFENCES),
            "observed" | "low-confidence" | "rate-capped" | "block-failed" => true,
            _ => false,
        };
        if !wanted {
            return;
        }
        let item = self.entry(Kind::Block, f.source.to_string(), now);
        item.seen += 1;
        item.updated = now;
        item.blocks = item.blocks.max(offence.unwrap_or(0));
        item.baseline = baseline.or(item.baseline.take());
        match item.findings.iter_mut().find(|old| old.detector == f.detector) {
            Some(old) if old.confidence <= f.confidence => *old = f.clone(),
            Some(_) => {}
            None => item.findings.push(f.clone()),
        }
        let detectors: Vec<&str> = item.findings.iter().map(|f| f.detector.name()).collect();
        let strongest = item.findings.iter().map(|f| f.confidence).fold(0.0, f64::max);
        item.summary = if item.blocks >= REPEAT_OFFENCES {
            format!("block {} for good: blocked {} times ({})", item.subject, item.blocks, detectors.join(", "))
        } else {
            format!(
                "block {}: {} finding(s), not blocked ({action}; confidence up to {strongest:.2}; {})",
                item.subject,
                item.seen,
                detectors.join(", ")
            )
        };
    }

    /// Services clients used lately (unflagged clients, this host's ports).
    pub fn services(&mut self, services: Vec<Service>, now: u64) {
        for s in services {
            let subject = format!("{}/{}", crate::ir::names::proto_name(s.proto), s.port);
            let known = self.items.get(&id(Kind::Pass, &subject)).and_then(|i| i.service.as_ref());
            if known.is_some_and(|k| s.clients.is_subset(&k.clients) && s.servers.is_subset(&k.servers)) {
                continue;
            }
            let item = self.entry(Kind::Pass, subject, now);
            let merged = match item.service.take() {
                Some(mut old) => {
                    old.clients.extend(s.clients.iter().copied());
                    while old.clients.len() > MAX_CLIENTS {
                        old.clients.pop_first();
                    }
                    old.servers.extend(s.servers.iter().copied());
                    old.connections = old.connections.max(s.connections);
                    item.updated = now;
                    old
                }
                None => s,
            };
            item.seen = merged.connections;
            item.summary = format!(
                "pass {}: used by {} client(s), {} connection(s)",
                item.subject,
                merged.clients.len(),
                merged.connections
            );
            item.service = Some(merged);
        }
    }

    /// Remakes the diffs of changed items (of every item when the policy
    /// changed) against `policy`, drops decided ones, and writes the file
    /// when anything changed. `protected` and `cfg` are the engine's plan's.
    pub fn refresh(&mut self, policy: &Path, cfg: &learn::Config, protected: &Protected, now: u64) {
        let decided = decisions(&self.dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the proposal decisions");
            BTreeMap::new()
        });
        let before = self.items.len();
        self.items.retain(|id, _| !decided.contains_key(id));
        let text = match std::fs::read(policy) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(policy = %policy.display(), error = %e, "cannot read the policy for proposals");
                return;
            }
        };
        let sha = Sha256::digest(&text).iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut error = None;
        let redo: Vec<String> = self
            .items
            .values()
            .filter(|i| i.policy_sha256 != sha || i.policy != policy || self.changed.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        for id in &redo {
            let item = self.items.get_mut(id).expect("listed");
            match remake(item, policy, cfg, protected, now) {
                Ok(()) => item.policy_sha256.clone_from(&sha),
                Err(e) => error = Some(e),
            }
        }
        self.changed.clear();
        while self.items.len() > MAX_ITEMS {
            let oldest = self.items.values().min_by_key(|i| (i.updated, i.id.clone())).map(|i| i.id.clone());
            self.items.remove(&oldest.expect("not empty"));
        }
        if redo.is_empty() && before == self.items.len() {
            return;
        }
        let file = Proposals { updated: now, error, items: self.items.values().cloned().collect() };
        let path = self.dir.join(FILE);
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| write_atomic(&path, &serde_json::to_vec_pretty(&file).expect("proposals serialize")));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "cannot write the proposals");
        }
    }
}

/// One item's diff, made by the learner's proposer from its evidence alone.
fn remake(item: &mut Item, policy: &Path, cfg: &learn::Config, protected: &Protected, now: u64) -> Result<(), String> {
    let report = learn::Report {
        flows: 0,
        sources: item.findings.len(),
        findings: item.findings.clone(),
        floods: Vec::new(),
        services: item.service.iter().cloned().collect(),
        ranking: Vec::new(),
        capture_host: None,
    };
    let mut notes = BTreeMap::new();
    if let (Some(note), Some(f)) = (&item.baseline, item.findings.first()) {
        notes.insert(f.source, note.clone());
    }
    let ctx = Context { protected: protected.clone(), now_us: now * 1_000_000, notes };
    match propose::propose(policy, &report, cfg, ORIGIN, &ctx) {
        Ok(p) => {
            item.diff = p.diff;
            item.warnings = p.warnings;
            item.warnings
                .extend(p.spared.iter().map(|s| format!("{} is not proposed: protected ({})", s.source, s.why)));
            item.policy = policy.to_path_buf();
            Ok(())
        }
        Err(e) => {
            tracing::warn!(policy = %policy.display(), error = %e, "proposals not remade");
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::Detector;

    const POLICY: &str = "table t\nset attackers dynamic\npolicy input block\npass in on lo\nblock in from <attackers>\npass in state established\npass in proto tcp to port 80 state new\n";

    fn finding(source: &str, confidence: f64) -> Finding {
        Finding {
            source: source.parse().unwrap(),
            detector: Detector::VerticalScan,
            threshold: "10 failed ports on one host >= 10 within 300s".into(),
            counts: "12 distinct ports of 10.0.0.1 failed".into(),
            first_seen_us: 1_796_000_000_000_000,
            last_seen_us: 1_796_000_010_000_000,
            examples: vec!["tcp 203.0.113.9:40000 -> 10.0.0.1:1000 REJ".into()],
            confidence,
            also: Vec::new(),
        }
    }

    fn service(port: u16, clients: &[&str]) -> Service {
        Service {
            proto: crate::learn::flows::TCP,
            port,
            servers: ["10.0.0.1".parse().unwrap()].into(),
            clients: clients.iter().map(|c| c.parse().unwrap()).collect(),
            connections: clients.len() as u64 * 3,
        }
    }

    #[test]
    fn findings_and_services_become_diffs_that_accept_and_reject() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("p.pf");
        std::fs::write(&policy, POLICY).unwrap();
        let state = dir.path().join("adaptive");
        std::fs::create_dir_all(&state).unwrap();
        let cfg = learn::Config::default();
        let none = Protected::default();
        let mut store = Store::empty(&state);
        store.finding(&finding("203.0.113.9", 0.45), "low-confidence", None, Some("tcp/1000: never used".into()), 100);
        store.finding(&finding("203.0.113.10", 0.9), "blocked", Some(1), None, 100);
        store.finding(&finding("127.0.0.5", 0.9), "observed", None, None, 100);
        store.services(vec![service(8080, &["10.0.0.7", "10.0.0.8"]), service(80, &["10.0.0.7"])], 100);
        store.refresh(&policy, &cfg, &none, 100);

        let items = pending(&state).expect("read back");
        let subjects: BTreeSet<&str> = items.iter().map(|i| i.subject.as_str()).collect();
        // Blocked once: not yet a proposal; loopback is protected; port 80 passes already.
        assert_eq!(subjects, ["203.0.113.9", "tcp/8080"].into());
        let block = items.iter().find(|i| i.kind == Kind::Block).unwrap();
        assert!(block.diff.contains("+    203.0.113.9 expires 1970-01-31,"), "{}", block.diff);
        assert!(block.diff.contains("vertical-scan"), "evidence in the diff: {}", block.diff);
        assert!(block.diff.contains("compared: tcp/1000: never used"), "{}", block.diff);
        let pass = items.iter().find(|i| i.kind == Kind::Pass).unwrap();
        assert!(pass.diff.contains("+pass in proto tcp from 10.0.0.0/24 to port 8080"), "{}", pass.diff);

        // More evidence updates the same proposal.
        store.finding(&finding("203.0.113.9", 0.48), "low-confidence", None, None, 160);
        store.refresh(&policy, &cfg, &none, 160);
        let again = pending(&state).unwrap().into_iter().find(|i| i.id == block.id).unwrap();
        assert_eq!((again.seen, again.first_seen, again.updated), (2, 100, 160));
        assert_eq!(again.findings[0].confidence, 0.48);

        // Accept: the policy gets the hunk, the old text is kept, the decision is remembered.
        let who = Operator::nobody();
        let done = accept(&state, &policy, &block.id, &who, false, 200).expect("accepted");
        let text = std::fs::read_to_string(&policy).unwrap();
        assert!(
            text.contains("    203.0.113.9 expires 1970-01-31,") && text.contains("block in from <learned_block>"),
            "{text}"
        );
        assert_eq!(std::fs::read_to_string(&done.backup).unwrap(), POLICY);
        assert!(matches!(accept(&state, &policy, &block.id, &who, false, 201), Err(ReviewError::Decided { .. })));

        // The pass proposal was made against the old text: its hunk is at the
        // end and still applies; a hand edit over its context makes it stale.
        std::fs::write(&policy, text.replace("pass in state established", "pass in state { established, related }"))
            .unwrap();
        let stale = accept(&state, &policy, &pass.id, &who, false, 202).unwrap_err();
        assert!(matches!(stale, ReviewError::Stale { .. }), "{stale}");
        assert!(!std::fs::read_to_string(&policy).unwrap().contains("8080"), "nothing changed");

        // Reject: remembered, gone from the list, never proposed again.
        reject(&state, &pass.id, 203).expect("rejected");
        store.services(vec![service(8080, &["10.0.0.9"])], 300);
        store.refresh(&policy, &cfg, &none, 300);
        assert!(pending(&state).unwrap().is_empty(), "{:?}", pending(&state));
        assert_eq!(decisions(&state).unwrap()[&pass.id].decision, "rejected");
        assert!(
            matches!(reject(&state, &pass.id, 301), Err(ReviewError::NotFound(_))),
            "decided and dropped from the file"
        );
    }

    #[test]
    fn repeat_offenders_are_proposed_and_a_lockout_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("p.pf");
        std::fs::write(&policy, POLICY).unwrap();
        let cfg = learn::Config::default();
        let mut store = Store::empty(dir.path());
        for offence in 1..=REPEAT_OFFENCES {
            store.finding(&finding("198.51.100.4", 0.9), "blocked", Some(offence), None, 100);
        }
        store.refresh(&policy, &cfg, &Protected::default(), 100);
        let items = pending(dir.path()).unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0].summary.contains("blocked 3 times"), "{}", items[0].summary);
        // The operator's session comes from that address: accepting would cut it off.
        let mut who = Operator::nobody();
        who.add(
            crate::host::Session {
                client: "198.51.100.4:50000".parse().unwrap(),
                server: "10.0.0.1:22".parse().unwrap(),
            },
            guard::Source::Keep,
            None,
        );
        let refused = accept(dir.path(), &policy, &items[0].id, &who, false, 101).unwrap_err();
        assert!(matches!(refused, ReviewError::Lockout(_)), "{refused}");
        assert_eq!(std::fs::read_to_string(&policy).unwrap(), POLICY, "nothing written");
    }
}
