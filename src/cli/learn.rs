//! `learn`: replay a capture through the learner and propose a policy diff.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::{CmdResult, Failure};
use crate::learn::{self, propose, Config};

#[derive(clap::Args, Debug)]
pub struct LearnArgs {
    /// Capture file (pcap or pcapng).
    pub capture: PathBuf,
    /// The policy the proposal is a diff against.
    #[arg(long)]
    pub policy: PathBuf,
    /// Detector thresholds and proposal options (YAML; see learn/detectors.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Apply the diff to the policy file instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// Learn from the packets before the damage of a damaged capture.
    #[arg(long)]
    pub allow_damaged: bool,
}

pub fn run(args: &LearnArgs) -> CmdResult {
    let cfg = match &args.config {
        Some(p) => Config::load(p).map_err(Failure::System)?,
        None => Config::default(),
    };
    let started = Instant::now();
    let size = std::fs::metadata(&args.capture).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size);
    let mut capture = learn::read_flows(&args.capture, &cfg, &|pos| bar.set_position(pos))
        .map_err(|e| Failure::System(format!("{}: {e}", args.capture.display())))?;
    bar.finish_and_clear();
    if let Some(d) = &capture.read.damage {
        let msg = format!("{}: cannot read past byte {}: {} ({} packets before it were read)", args.capture.display(), d.offset, d.reason, capture.read.packets);
        if !args.allow_damaged {
            return Err(Failure::System(format!("{msg}; use --allow-damaged to learn from them")));
        }
        eprintln!("phantomc: warning: {msg}");
    }
    let flows = capture.flows.len();
    let report = learn::analyze(std::mem::take(&mut capture.flows), &cfg);
    let elapsed = started.elapsed().as_secs_f64();
    eprint!("{}", summary(&capture, flows, &report, elapsed));
    for f in &report.findings {
        eprintln!("flagged {} {}: {} ({})", f.source, f.detector.name(), f.counts, f.threshold);
    }
    if !report.ranking.is_empty() {
        eprintln!("ML ranking (advisory, never blocks on its own): most unusual sources");
        let flagged = report.flagged();
        for (i, r) in report.ranking.iter().take(cfg.score.top).enumerate() {
            let mark = if flagged.contains(&r.source) { "flagged" } else { "-" };
            eprintln!("  {:<40} {:<8} {}", r.source, mark, learn::score::explain(r, i, report.ranking.len()));
        }
    }
    let name = args.capture.file_name().map_or_else(|| args.capture.display().to_string(), |n| n.to_string_lossy().into_owned());
    let proposal = propose::propose(&args.policy, &report, &cfg, &name).map_err(|e| match e {
        propose::ProposeError::Load(l) => Failure::from(l),
        broken => Failure::System(broken.to_string()),
    })?;
    for w in &proposal.warnings {
        eprintln!("phantomc: warning: {w}");
    }
    if proposal.diff.is_empty() {
        eprintln!("nothing to propose: {} already covers this traffic", args.policy.display());
    } else if args.write {
        std::fs::write(&args.policy, &proposal.new_text).map_err(|e| Failure::System(format!("{}: {e}", args.policy.display())))?;
        eprintln!("wrote {}: {} source(s) blocked, {} pass rule(s) added", args.policy.display(), proposal.blocked.len(), proposal.passes.len());
    } else {
        print!("{}", proposal.diff);
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr, only when stderr is a terminal.
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::default_bar()
        .template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .expect("valid template");
    indicatif::ProgressBar::new(len).with_style(style)
}

/// The summary table: what was read, what was found, how fast.
fn summary(capture: &learn::Capture, flows: usize, report: &learn::Report, secs: f64) -> String {
    let read = &capture.read;
    let secs_or_tiny = secs.max(1e-6);
    let skipped: u64 = capture.skipped.values().sum();
    let mut packets = read.packets.to_string();
    if skipped > 0 {
        let why: Vec<String> = capture.skipped.iter().map(|(k, v)| format!("{v} {k}")).collect();
        packets += &format!(" ({skipped} not decoded: {})", why.join(", "));
    }
    let merged = if capture.compacted { " (identical closed flows merged to bound memory)" } else { "" };
    let rows = [
        ("packets", packets),
        ("flows", format!("{flows}{merged}")),
        ("sources", report.sources.to_string()),
        ("findings", format!("{} on {} source(s)", report.findings.len(), report.flagged().len())),
        ("time", format!("{secs:.3} s")),
        (
            "throughput",
            format!("{:.0} packets/s, {:.1} MB/s", read.packets as f64 / secs_or_tiny, read.file_bytes as f64 / 1e6 / secs_or_tiny),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<11} {v}\n")).collect()
}
