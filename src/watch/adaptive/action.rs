//! What a finding leads to in `block` mode: which sources may never be
//! blocked, how long a block lasts (doubling for repeat offenders), and a
//! cap on new blocks per minute so a detector gone wrong cannot block the world.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::guard::Protected;
use crate::ir::Adaptive;

/// A source's record of blocks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Offender {
    pub blocks: u32,
    /// Unix time (seconds) of the last block.
    pub last: u64,
}

/// What was decided for one finding.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Observe,
    Protected(String),
    LowConfidence,
    RateCapped,
    Block { timeout: u64, offence: u32 },
}

impl Decision {
    pub fn action(&self) -> &'static str {
        match self {
            Decision::Observe => "observed",
            Decision::Protected(_) => "protected",
            Decision::LowConfidence => "low-confidence",
            Decision::RateCapped => "rate-capped",
            Decision::Block { .. } => "blocked",
        }
    }
}

/// Escalating timeouts and the per-minute cap. Offenders are kept in a
/// file so a restart does not forgive them.
pub struct Blocker {
    offenders: HashMap<IpAddr, Offender>,
    recent: VecDeque<u64>,
    file: Option<PathBuf>,
    changed: bool,
}

const OFFENDERS_FILE: &str = "offenders.json";

impl Blocker {
    /// Reads `DIR/offenders.json`; a damaged file is an error naming it.
    pub fn load(dir: Option<&Path>) -> Result<Blocker, String> {
        let file = dir.map(|d| d.join(OFFENDERS_FILE));
        let offenders = match &file {
            Some(f) => match std::fs::read_to_string(f) {
                Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
                Err(e) => return Err(format!("{}: {e}", f.display())),
            },
            None => HashMap::new(),
        };
        Ok(Blocker { offenders, recent: VecDeque::new(), file, changed: false })
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(f) = &self.file else { return Ok(()) };
        if !self.changed {
            return Ok(());
        }
        super::write_atomic(f, &serde_json::to_vec_pretty(&self.offenders).expect("offenders serialize"))?;
        self.changed = false;
        Ok(())
    }

    /// Decides for a finding of `confidence` about `source` at `now` (Unix seconds).
    pub fn decide(
        &mut self,
        plan: &Adaptive,
        protected: &Protected,
        source: IpAddr,
        confidence: f64,
        now: u64,
    ) -> Decision {
        if let Some(e) = protected.protecting(source) {
            return Decision::Protected(e.why.clone());
        }
        if plan.mode == crate::ir::AdaptiveMode::Observe {
            return Decision::Observe;
        }
        if confidence * 100.0 + 1e-9 < f64::from(plan.min_confidence) {
            return Decision::LowConfidence;
        }
        while self.recent.front().is_some_and(|&t| t + 60 <= now) {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= plan.max_blocks {
            return Decision::RateCapped;
        }
        let offence = self.offenders.get(&source).map_or(0, |o| o.blocks) + 1;
        let timeout = plan.timeout.saturating_mul(1 << (offence - 1).min(20)).min(plan.max_timeout);
        Decision::Block { timeout, offence }
    }

    /// Records a block that was made.
    pub fn blocked(&mut self, source: IpAddr, now: u64) {
        self.recent.push_back(now);
        let o = self.offenders.entry(source).or_default();
        o.blocks += 1;
        o.last = now;
        self.changed = true;
    }

    pub fn offenders(&self) -> &HashMap<IpAddr, Offender> {
        &self.offenders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::AdaptiveMode;

    fn plan(mode: AdaptiveMode) -> Adaptive {
        let text = format!(
            "set a dynamic\nallow-always {{ 192.0.2.0/24 }}\nblock in from <a>\npass in proto tcp from 198.51.100.7 to port 22\nadaptive {{ mode {}; set a; timeout 1m; max-timeout 5m; max-blocks 2; min-confidence 60; }}\n",
            mode.name()
        );
        crate::ir::compile("p.pf", &text).expect("compiles").ruleset.adaptive.expect("adaptive")
    }

    #[test]
    fn protected_sources_are_never_blocked_and_say_why() {
        let rs = crate::ir::compile(
            "p.pf",
            "allow-always { 192.0.2.0/24 }\npass in proto tcp from 198.51.100.7 to port 22\n",
        )
        .expect("compiles")
        .ruleset;
        // Host addresses and operator sessions are added by guard::Protected::gather (tested there).
        let p = Protected::of_policy(&rs);
        let why = |a: &str| p.protecting(a.parse().unwrap()).map(|e| e.why.clone());
        assert_eq!(why("127.0.0.9").as_deref(), Some("loopback"));
        assert_eq!(why("::1").as_deref(), Some("loopback"));
        assert_eq!(why("fe80::1").as_deref(), Some("link-local"));
        assert_eq!(why("192.0.2.77").as_deref(), Some("allow-always"));
        assert_eq!(why("198.51.100.7").as_deref(), Some("pass rule p.pf:2"));
        assert_eq!(why("203.0.113.6"), None);
    }

    #[test]
    fn blocks_escalate_and_are_capped_per_minute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = plan(AdaptiveMode::Block);
        let none = Protected::default();
        let mut b = Blocker::load(Some(dir.path())).expect("load");
        let (x, y, z): (IpAddr, IpAddr, IpAddr) =
            ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap(), "203.0.113.3".parse().unwrap());
        assert_eq!(b.decide(&block, &none, x, 0.55, 1000), Decision::LowConfidence);
        assert_eq!(b.decide(&block, &none, x, 0.6, 1000), Decision::Block { timeout: 60, offence: 1 });
        b.blocked(x, 1000);
        assert_eq!(b.decide(&block, &none, y, 0.9, 1001), Decision::Block { timeout: 60, offence: 1 });
        b.blocked(y, 1001);
        assert_eq!(b.decide(&block, &none, z, 0.9, 1002), Decision::RateCapped, "two blocks in a minute");
        // A minute later the cap has room again; x is a repeat offender.
        assert_eq!(b.decide(&block, &none, x, 0.9, 1061), Decision::Block { timeout: 120, offence: 2 });
        b.blocked(x, 1061);
        b.blocked(x, 1200);
        b.blocked(x, 1300);
        assert_eq!(b.decide(&block, &none, x, 0.9, 1400), Decision::Block { timeout: 300, offence: 5 }, "capped");
        // A restart remembers the offenders.
        b.save().expect("save");
        let mut again = Blocker::load(Some(dir.path())).expect("load");
        assert_eq!(again.offenders()[&x].blocks, 4);
        assert_eq!(again.decide(&plan(AdaptiveMode::Observe), &none, x, 0.99, 1500), Decision::Observe);
        std::fs::write(dir.path().join(OFFENDERS_FILE), "{broken").unwrap();
        let err = Blocker::load(Some(dir.path())).err().expect("refused");
        assert!(err.contains("offenders.json"), "{err}");
    }
}
