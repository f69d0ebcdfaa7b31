//! `alerts`: what the adaptive mode found and did, from `alerts.jsonl`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::{CmdResult, Failure};
use crate::watch::adaptive::{self, alerts::Alert};

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
    /// Keep printing alerts as they come (Ctrl-C ends).
    #[arg(long, short)]
    pub follow: bool,
    /// How many of the latest alerts to print first.
    #[arg(long, default_value_t = 50)]
    pub last: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    /// One JSON object per line, as in alerts.jsonl.
    Json,
}

pub fn run(args: &AlertsArgs) -> CmdResult {
    let dir = args.state_dir.adaptive_dir();
    let file = dir.join(adaptive::alerts::FILE);
    let io = |e: std::io::Error| Failure::System(format!("{}: {e}", file.display()));
    let (alerts, bad) = adaptive::alerts::read(&dir, args.last).map_err(io)?;
    if bad > 0 {
        eprintln!("phantomc: warning: {bad} damaged line(s) in {} skipped", file.display());
    }
    if alerts.is_empty() && !args.follow {
        eprintln!("no alerts in {} (adaptive mode runs in `watch` with an `adaptive` block)", file.display());
    }
    let mut out = std::io::stdout().lock();
    for a in &alerts {
        writeln!(out, "{}", render(a, args.format)).map_err(io)?;
    }
    out.flush().map_err(io)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: read what is appended; start over when the file is rotated.
    let mut offset = std::fs::metadata(&file).map_or(0, |m| m.len());
    let mut partial = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let len = std::fs::metadata(&file).map_or(0, |m| m.len());
        if len < offset {
            offset = 0;
            partial.clear();
        }
        if len == offset {
            continue;
        }
        let mut f = std::fs::File::open(&file).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut chunk = String::new();
        let n = f.take(len - offset).read_to_string(&mut chunk).map_err(io)?;
        offset += n as u64;
        partial.push_str(&chunk);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            match serde_json::from_str::<Alert>(line.trim_end()) {
                Ok(a) => writeln!(out, "{}", render(&a, args.format)).map_err(io)?,
                Err(_) => eprintln!("phantomc: warning: damaged line in {} skipped", file.display()),
            }
        }
        out.flush().map_err(io)?;
    }
}

fn render(a: &Alert, format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string(a).expect("alerts serialize");
    }
    let when = crate::learn::fmt_time(a.time * 1_000_000);
    let mut line = format!(
        "{when}  {:<14} {:<15} {} ({:.2}): {}; {}",
        a.action, a.source, a.detector, a.confidence, a.counts, a.threshold
    );
    if let (Some(t), Some(exp)) = (a.timeout, a.expires) {
        line += &format!("; blocked {t}s until {}", crate::learn::fmt_time(exp * 1_000_000));
        if let Some(n) = a.offence.filter(|&n| n > 1) {
            line += &format!(" (offence {n})");
        }
    }
    if let Some(r) = &a.reason {
        line += &format!("; {r}");
    }
    if let Some(b) = &a.baseline {
        line += &format!("\n    baseline: {b}");
    }
    line
}
