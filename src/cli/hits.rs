//! `hits`: packets and bytes per policy line, from the live rule counters
//! (every rule counts unless marked `nocounter`), busiest first.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::args::PolicyArg;
use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::ir::{self, Compiled};
use crate::nft::{kernel, NftError};
use crate::serve::rules::{self, RuleRow};

#[derive(clap::Args, Debug)]
pub struct HitsArgs {
    #[command(flatten)]
    pub policy: PolicyArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
    /// Refresh every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch", value_name = "N")]
    pub iterations: Option<u64>,
}

/// The JSON document of `hits --format json` (fields documented in
/// docs/guide/hits-log.md).
#[derive(Serialize)]
struct Hits<'a> {
    table: &'a str,
    loaded: bool,
    rules: Vec<RuleRow>,
    /// Named counters with the lines that count into them.
    counters: Vec<rules::CounterRow>,
}

pub fn run(args: &HitsArgs) -> CmdResult {
    let compiled = ir::compile_file(&args.policy.path())?;
    let Some(every) = args.watch else {
        return print_once(&compiled, args.format);
    };
    let clear = std::io::stdout().is_terminal() && args.format == TextOrJson::Text;
    let mut done = 0;
    loop {
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        print_once(&compiled, args.format)?;
        let _ = std::io::stdout().flush();
        done += 1;
        if args.iterations.is_some_and(|n| done >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(every.max(1)));
    }
}

fn print_once(compiled: &Compiled, format: TextOrJson) -> CmdResult {
    let table = &compiled.ruleset.table;
    // Counters come with the rules of a netlink rule dump; nft would read
    // every feed set element first.
    let system = |e| Failure::System(NftError::Kernel(e).to_string());
    let live = kernel::rules(table).map_err(system)?;
    let elements = kernel::merged_counters(table).map_err(system)?;
    let named = kernel::named_counters(table).map_err(system)?;
    let rows = sorted(rules::rows(compiled, live.as_deref(), &elements, &named));
    let counters = rules::counters(compiled, &named);
    match format {
        TextOrJson::Json => {
            let doc = Hits { table, loaded: live.is_some(), rules: rows, counters };
            println!("{}", serde_json::to_string(&doc).expect("hits serialize"));
        }
        TextOrJson::Text if live.is_none() => {
            println!("table inet {table} is not loaded: nothing counted (apply the policy first)");
        }
        TextOrJson::Text => print!("{}{}", render(&rows), render_counters(&counters)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The named counters, by name, with their lines.
fn render_counters(counters: &[rules::CounterRow]) -> String {
    let mut out = String::new();
    if !counters.is_empty() {
        out += "named counters:\n";
    }
    for c in counters {
        let (packets, bytes) = match (c.packets, c.bytes) {
            (Some(p), Some(b)) => (p.to_string(), human_bytes(b)),
            _ => ("-".to_string(), "-".to_string()),
        };
        out += &format!("{packets:>12} {bytes:>10}  {}  ({})\n", c.name, c.lines.join(", "));
    }
    out
}

/// Busiest first; lines without a count last; ties in policy order.
fn sorted(mut rows: Vec<RuleRow>) -> Vec<RuleRow> {
    rows.sort_by_key(|r| std::cmp::Reverse(r.packets.map_or(0, |p| p + 1)));
    rows
}

fn render(rows: &[RuleRow]) -> String {
    let id_width = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(4);
    let mut out =
        format!("{:>12} {:>10}  {:<id_width$}  {:<8} {:<7} RULE\n", "PACKETS", "BYTES", "LINE", "CHAIN", "ACTION");
    for r in rows {
        let (packets, bytes) = match (r.packets, r.bytes) {
            (Some(p), Some(b)) => (p.to_string(), human_bytes(b)),
            _ => ("-".to_string(), "-".to_string()),
        };
        out += &format!("{packets:>12} {bytes:>10}  {:<id_width$}  {:<8} {:<7} {}\n", r.id, r.chain, r.action, r.text);
    }
    let uncounted: Vec<&str> = rows.iter().filter(|r| r.packets.is_none()).map(|r| r.id.as_str()).collect();
    if !uncounted.is_empty() {
        out += &format!("not counted (nocounter, or not in the live table): {}\n", uncounted.join(", "));
    }
    out
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, packets: Option<u64>) -> RuleRow {
        RuleRow {
            id: id.into(),
            line: 1,
            text: format!("rule {id}"),
            kind: "rule",
            chain: "input".into(),
            action: "pass".into(),
            label: None,
            counter: packets.is_some(),
            counter_name: None,
            nft_rules: 1,
            packets,
            bytes: packets.map(|p| p * 1500),
        }
    }

    #[test]
    fn busiest_first_uncounted_last_ties_in_policy_order() {
        let rows = sorted(vec![row("a:1", Some(0)), row("a:2", None), row("a:3", Some(7)), row("a:4", Some(0))]);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a:3", "a:1", "a:4", "a:2"]);
        let text = render(&rows);
        assert!(text.lines().nth(1).expect("first row").starts_with("           7   10.3 KiB  a:3 "), "{text}");
        assert!(text.ends_with("not counted (nocounter, or not in the live table): a:2\n"), "{text}");
        assert_eq!(human_bytes(512), "512 B");
    }
}
