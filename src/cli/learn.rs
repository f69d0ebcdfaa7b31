//! `learn`: replay a capture through the learner and propose a policy diff.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::guard::{self, Kind, Operator, Protected, SSH_PORT};
use crate::host;
use crate::host::conntrack::{self, Watched};
use crate::ir;
use crate::learn::conntrack::{to_flows, StateTimeouts};
use crate::learn::{self, propose, Config};

#[derive(clap::Args, Debug)]
pub struct LearnArgs {
    /// Capture file (pcap or pcapng).
    #[arg(required_unless_present = "conntrack", conflicts_with = "conntrack")]
    pub capture: Option<PathBuf>,
    /// Learn from this network namespace's live conntrack table (netlink)
    /// instead of a capture.
    #[arg(long)]
    pub conntrack: bool,
    /// With --conntrack: first follow conntrack events this long (30s, 10m;
    /// Ctrl-C ends early) to also learn from connections that end meanwhile;
    /// a refused connection leaves the table at once.
    #[arg(long, requires = "conntrack", value_parser = super::block::parse_duration)]
    pub watch: Option<u32>,
    /// The policy the proposal is a diff against
    /// [default: $PHANTOMC_POLICY, else /etc/phantomc/policy.pf].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Detector thresholds and proposal options (YAML; see learn/detectors.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Apply the diff to the policy file instead of printing it.
    #[arg(long)]
    pub write: bool,
    /// Learn from the packets before the damage of a damaged capture.
    #[arg(long)]
    pub allow_damaged: bool,
    /// An address of the host the policy is for (repeatable): only its
    /// inbound services get pass rules, and it is never proposed for
    /// blocking. Default: this machine's addresses, and for a capture the
    /// address at one end of nearly every flow.
    #[arg(long = "host", value_name = "ADDR")]
    pub hosts: Vec<std::net::IpAddr>,
    /// Also write every flow record as a line of JSON to this file (to check
    /// what the detectors saw, or to score the flows with another model).
    #[arg(long, value_name = "PATH")]
    pub dump_flows: Option<PathBuf>,
    /// Behaviour baseline to compare flagged sources with
    /// [default: <state-dir>/learn/baseline.json, when it exists].
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Add this run's unflagged clients to the baseline and save it.
    #[arg(long)]
    pub update_baseline: bool,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// Output format: `json` prints the summary, findings and proposal as one
    /// JSON document on stdout (fields in docs/guide/learn.md) instead of
    /// the text summary on stderr and the diff on stdout.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

/// What was read: the first fields of `learn --format json`.
#[derive(Serialize)]
struct Read {
    /// `capture` or `conntrack`.
    input: &'static str,
    name: String,
    packets: Option<u64>,
    not_decoded: Option<u64>,
    /// conntrack: live entries and entries destroyed while watching.
    entries: Option<usize>,
    destroyed: Option<usize>,
    flows: usize,
    sources: usize,
    seconds: f64,
}

/// `learn --format json` (documented in docs/guide/learn.md).
#[derive(Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    read: Read,
    findings: Vec<FindingJson<'a>>,
    ranking: Vec<RankedJson>,
    spared: Vec<SparedJson<'a>>,
    floods: Vec<FloodJson>,
    warnings: &'a [String],
    proposal: ProposalJson<'a>,
}

#[derive(Serialize)]
struct FindingJson<'a> {
    source: std::net::IpAddr,
    detector: &'static str,
    counts: &'a str,
    threshold: &'a str,
    confidence: f64,
    examples: &'a [String],
    /// The comparison with the source's peers and the baseline, if any.
    compared: Option<String>,
}

#[derive(Serialize)]
struct SparedJson<'a> {
    source: std::net::IpAddr,
    detector: &'a str,
    why: &'a str,
}

#[derive(Serialize)]
struct RankedJson {
    source: std::net::IpAddr,
    flagged: bool,
    explanation: String,
}

#[derive(Serialize)]
struct FloodJson {
    target: std::net::SocketAddr,
    half_open: u64,
    sources: usize,
    rate: f64,
}

#[derive(Serialize)]
struct ProposalJson<'a> {
    policy: String,
    diff: &'a str,
    blocked: &'a [std::net::IpAddr],
    passes: &'a [String],
    limits: &'a [String],
    written: bool,
}

pub fn run(args: &LearnArgs) -> CmdResult {
    let cfg = match &args.config {
        Some(p) => Config::load(p).map_err(Failure::System)?,
        None => Config::default(),
    };
    let started = Instant::now();
    let Some(capture_path) = &args.capture else {
        return learn_conntrack(args, &cfg);
    };
    let size = std::fs::metadata(capture_path).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size);
    // `--dump-flows` writes every flow in time order, so it keeps them all;
    // otherwise they are summarized as they close.
    let read = if args.dump_flows.is_some() { learn::read_flows } else { learn::read_summarized };
    let mut capture = read(capture_path, &cfg, &|pos| bar.set_position(pos))
        .map_err(|e| Failure::System(format!("{}: {e}", capture_path.display())))?;
    bar.finish_and_clear();
    if let Some(d) = &capture.read.damage {
        let msg = format!(
            "{}: cannot read past byte {}: {} ({} packets before it were read)",
            capture_path.display(),
            d.offset,
            d.reason,
            capture.read.packets
        );
        if !args.allow_damaged {
            return Err(Failure::System(format!("{msg}; use --allow-damaged to learn from them")));
        }
        eprintln!("phantomc: warning: {msg}");
    }
    let flows = capture.flow_count();
    dump_flows(args, &capture.flows)?;
    let (observed, report) = capture.observe_and_analyze(&cfg, &args.hosts);
    let elapsed = started.elapsed().as_secs_f64();
    if args.format == TextOrJson::Text {
        eprint!("{}", summary(&capture, flows, &report, elapsed));
    }
    let name = capture_path
        .file_name()
        .map_or_else(|| capture_path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let read = Read {
        input: "capture",
        name: name.clone(),
        packets: Some(capture.read.packets),
        not_decoded: Some(capture.skipped.values().sum()),
        entries: None,
        destroyed: None,
        flows,
        sources: report.sources,
        seconds: elapsed,
    };
    propose_from(args, &cfg, &report, &observed, read)
}

/// `learn --conntrack`: this namespace's conntrack table, plus with --watch
/// the entries destroyed meanwhile, through the same pipeline.
fn learn_conntrack(args: &LearnArgs, cfg: &Config) -> CmdResult {
    let watched = match args.watch {
        Some(secs) => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, stop.clone())
                    .map_err(|e| Failure::System(format!("signal handler: {e}")))?;
            }
            eprintln!("collecting connections destroyed in the next {secs}s (Ctrl-C ends early) ...");
            conntrack::watch(Duration::from_secs(secs.into()), &|| stop.load(Ordering::Relaxed))
        }
        None => conntrack::dump().map(|live| Watched { live, ..Watched::default() }),
    }
    .map_err(|e| Failure::System(e.to_string()))?;
    let started = Instant::now();
    if watched.lost_overruns > 0 {
        eprintln!(
            "phantomc: warning: the kernel dropped {} batches of conntrack events (reader too slow)",
            watched.lost_overruns
        );
    }
    if watched.live.is_empty() && watched.destroyed.is_empty() {
        eprintln!("phantomc: warning: the conntrack table is empty; the kernel tracks connections only where a rule uses conntrack (e.g. `pass in state established`)");
    }
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let timeouts = StateTimeouts::read();
    let mut flows = to_flows(&watched.destroyed, &timeouts, now_us);
    flows.extend(to_flows(&watched.live, &timeouts, now_us));
    let flow_count = flows.len();
    // Conntrack is this host's own table: its addresses are the host.
    let mut hosts = args.hosts.clone();
    if hosts.is_empty() {
        hosts =
            host::addresses().unwrap_or_default().into_iter().map(|a| a.addr).filter(|a| !a.is_loopback()).collect();
    }
    dump_flows(args, &flows)?;
    let (observed, report) = learn::observe_and_analyze(flows, cfg, &hosts);
    let entries = format!("{} live, {} destroyed while watching", watched.live.len(), watched.destroyed.len());
    let elapsed = started.elapsed().as_secs_f64();
    if args.format == TextOrJson::Text {
        eprint!("{}", table(&[("entries", entries)], &flow_count.to_string(), &report, elapsed));
    }
    let read = Read {
        input: "conntrack",
        name: "the conntrack table".into(),
        packets: None,
        not_decoded: None,
        entries: Some(watched.live.len()),
        destroyed: Some(watched.destroyed.len()),
        flows: flow_count,
        sources: report.sources,
        seconds: elapsed,
    };
    propose_from(args, cfg, &report, &observed, read)
}

/// Findings on stderr, then the proposal printed or written.
fn propose_from(
    args: &LearnArgs,
    cfg: &Config,
    report: &learn::Report,
    observed: &learn::baseline::Observations,
    read: Read,
) -> CmdResult {
    let text = args.format == TextOrJson::Text;
    // In JSON mode the document on stdout says it all; stderr stays quiet.
    let say = |line: String| {
        if text {
            eprintln!("{line}");
        }
    };
    let baseline_path = args.baseline.clone().unwrap_or_else(|| {
        // The state directory's root: the feed cache's parent.
        let feeds = args.state_dir.feeds_dir();
        feeds.parent().unwrap_or(&feeds).join("learn").join("baseline.json")
    });
    let mut baseline = learn::baseline::Baseline::load(&baseline_path).map_err(|e| Failure::System(e.to_string()))?;
    let mut ctx = context(args, report);
    for f in &report.findings {
        say(format!("flagged {} {}: {} ({})", f.source, f.detector.name(), f.counts, f.threshold));
        if let Some(vs) = baseline.compare(f.source, observed) {
            say(format!("  compared: {vs}"));
            ctx.notes.insert(f.source, vs);
        }
    }
    let flagged = report.flagged();
    let ranking: Vec<RankedJson> = report
        .ranking
        .iter()
        .take(cfg.score.top)
        .enumerate()
        .map(|(i, r)| RankedJson {
            source: r.source,
            flagged: flagged.contains(&r.source),
            explanation: learn::score::explain(r, i, report.ranking.len()),
        })
        .collect();
    if !learn::score::BUILT_IN {
        say(learn::score::NOT_BUILT_IN.into());
    }
    if !ranking.is_empty() {
        say("ML ranking (advisory, never blocks on its own): most unusual sources".into());
        for r in &ranking {
            let mark = if r.flagged { "flagged" } else { "-" };
            say(format!("  {:<40} {:<8} {}", r.source, mark, r.explanation));
        }
    }
    let policy = super::args::resolve_policy(args.policy.as_deref());
    let proposal = propose::propose(&policy, report, cfg, &read.name, &ctx).map_err(|e| match e {
        propose::ProposeError::Load(l) => Failure::from(l),
        broken => Failure::System(broken.to_string()),
    })?;
    for s in &proposal.spared {
        say(format!("not proposed {} {}: protected ({})", s.source, s.detector, s.why));
    }
    for f in &report.floods {
        say(format!(
            "flood on tcp {}: {} half-open from {} sources at {:.1}/s: proposed as a rate limit, not {} blocks",
            f.target, f.half_open, f.sources, f.rate, f.sources
        ));
    }
    for w in &proposal.warnings {
        say(format!("phantomc: warning: {w}"));
    }
    if args.update_baseline {
        baseline.update(observed, &flagged.iter().copied().collect());
        baseline.save(&baseline_path).map_err(|e| Failure::System(e.to_string()))?;
        say(format!("baseline {} updated ({} updates)", baseline_path.display(), baseline.updates));
    }
    let written = !proposal.diff.is_empty() && args.write;
    if proposal.diff.is_empty() {
        say(format!("nothing to propose: {} already covers this traffic", policy.display()));
    } else if written {
        refuse_lockout(&policy, &proposal)?;
        std::fs::write(&policy, &proposal.new_text)
            .map_err(|e| Failure::System(format!("{}: {e}", policy.display())))?;
        say(format!(
            "wrote {}: {} source(s) blocked, {} pass rule(s) added",
            policy.display(),
            proposal.blocked.len(),
            proposal.passes.len()
        ));
    } else if text {
        print!("{}", proposal.diff);
    }
    if !text {
        let findings = report
            .findings
            .iter()
            .map(|f| FindingJson {
                source: f.source,
                detector: f.detector.name(),
                counts: &f.counts,
                threshold: &f.threshold,
                confidence: f.confidence,
                examples: &f.examples,
                compared: ctx.notes.get(&f.source).cloned(),
            })
            .collect();
        let floods = report
            .floods
            .iter()
            .map(|f| FloodJson { target: f.target, half_open: f.half_open, sources: f.sources, rate: f.rate })
            .collect();
        let doc = Summary {
            read,
            findings,
            ranking,
            spared: proposal
                .spared
                .iter()
                .map(|s| SparedJson { source: s.source, detector: s.detector, why: &s.why })
                .collect(),
            floods,
            warnings: &proposal.warnings,
            proposal: ProposalJson {
                policy: policy.display().to_string(),
                diff: &proposal.diff,
                blocked: &proposal.blocked,
                passes: &proposal.passes,
                limits: &proposal.limits,
                written,
            },
        };
        println!("{}", serde_json::to_string(&doc).expect("learn summary serializes"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The lockout guard on a proposal about to be written: a learned block of
/// a protected source, or a rewrite that would cut off loopback or the
/// operator, writes nothing.
fn refuse_lockout(policy: &Path, proposal: &propose::Proposal) -> Result<(), Failure> {
    let before = ir::compile_file(policy)?.ruleset;
    let after = ir::compile_text_at(policy, proposal.new_text.clone())
        .map_err(|e| Failure::System(format!("the proposed policy does not compile: {e}")))?
        .ruleset;
    let operator = Operator::discover(None, SSH_PORT).map_err(Failure::System)?;
    guard::check_rewrite(&before, &after, &proposal.blocked, &operator).map(drop).map_err(|reasons| {
        Failure::Policy(format!(
            "refused to write {}: {}\nnothing was written; review the proposal without --write\n",
            policy.display(),
            reasons.join("; ")
        ))
    })
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
    let throughput = format!(
        "{:.0} packets/s, {:.1} MB/s",
        read.packets as f64 / secs_or_tiny,
        read.file_bytes as f64 / 1e6 / secs_or_tiny
    );
    table(&[("packets", packets)], &format!("{flows}{merged}"), report, secs)
        + &format!("{:<11} {throughput}\n", "throughput")
}

/// The summary rows every input shares, after the input's own rows.
fn table(input: &[(&str, String)], flows: &str, report: &learn::Report, secs: f64) -> String {
    let rows = [
        ("flows", flows.to_string()),
        ("sources", report.sources.to_string()),
        ("findings", format!("{} ({} sources flagged)", report.findings.len(), report.flagged().len())),
        ("time", format!("{secs:.3}s")),
    ];
    input.iter().chain(&rows).map(|(k, v)| format!("{k:<11} {v}\n")).collect()
}

/// What is never proposed for blocking beyond the built-ins and the policy's
/// trusted sources (this host, its gateways, the operator's SSH clients,
/// `--host`), and when learn ran.
fn context(args: &LearnArgs, report: &learn::Report) -> propose::Context {
    let operator = Operator::discover(None, SSH_PORT).unwrap_or_else(|_| Operator::nobody());
    let mut protected = Protected::gather(None, &operator);
    for h in &args.hosts {
        protected.add((*h).into(), Kind::ThisHost, "--host");
    }
    // The address in every flow is this host only if it served someone: a
    // capture of one scanner has the scanner in every flow.
    if let Some(h) = report.capture_host.filter(|h| report.services.iter().any(|s| s.servers.contains(h))) {
        protected.add(h.into(), Kind::ThisHost, "the capture's host");
    }
    // The clock expiry is judged by (PHANTOMC_TODAY pins it, as for compile).
    let now_us = crate::ir::expiry::now() * 1_000_000;
    propose::Context { protected, now_us, notes: Default::default() }
}
/// `--dump-flows`: one JSON object per flow.
fn dump_flows(args: &LearnArgs, flows: &[learn::Flow]) -> Result<(), Failure> {
    let Some(path) = &args.dump_flows else { return Ok(()) };
    let fail = |e: &dyn std::fmt::Display| Failure::System(format!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| fail(&e))?);
    for f in flows {
        serde_json::to_writer(&mut out, f).map_err(|e| fail(&e))?;
        std::io::Write::write_all(&mut out, b"\n").map_err(|e| fail(&e))?;
    }
    std::io::Write::flush(&mut out).map_err(|e| fail(&e))
}
