//! `feeds update`, `feeds list`, `feeds parse`: threat feeds as nft sets,
//! refreshed in place without reloading the ruleset.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::args::resolve_policy;
use super::{CmdResult, Failure};
use crate::feeds::cache::{Cache, Meta};
use crate::feeds::update::{self, Outcome, SetLoad};
use crate::feeds::{self, normalize, FeedConfig, Format};
use crate::guard::{Operator, Protected, SSH_PORT};
use crate::ir::{self, nft_set_name, Family, Ruleset};
use crate::nft::{Elements, Nft};

#[derive(clap::Subcommand, Debug)]
pub enum FeedsCommand {
    /// Fetch feeds, keep the last good copy if a new one is bad, and swap
    /// each feed set's elements in one nft transaction (no reload).
    Update(UpdateArgs),
    /// Each feed's source, entries, last update, age and status.
    List(ListArgs),
    /// Parse and aggregate a feed file and print the counts (no kernel, no cache).
    Parse(ParseArgs),
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// `[POLICY] [NAME]`: the policy file [default: $PHANTOMC_POLICY, else
    /// /etc/phantomc/policy.pf], optionally followed by one feed's name.
    /// The old order `NAME POLICY` still works (with a deprecation note).
    #[arg(value_name = "[POLICY] [NAME]", num_args = 0..=2)]
    pub args: Vec<String>,
    /// The policy file (then the only positional argument is the feed name).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Only feeds whose refresh interval has passed since the last attempt
    /// (or whose local file changed since).
    #[arg(long)]
    pub due: bool,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// A policy: list its feeds, also those never fetched (default: every cached feed).
    pub policy: Option<PathBuf>,
    /// Output format (JSON fields in docs/guide/feeds.md).
    #[arg(long, value_enum, default_value_t = super::explain::TextOrJson::Text)]
    pub format: super::explain::TextOrJson,
    #[command(flatten)]
    pub state_dir: super::args::StateDirArg,
}

#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    pub file: PathBuf,
    #[arg(long, default_value = "plain", value_parser = |s: &str| s.parse::<Format>())]
    pub format: Format,
    /// CSV column of the address (from 1).
    #[arg(long, default_value_t = 1)]
    pub column: usize,
    /// Print the aggregated networks too.
    #[arg(long)]
    pub print: bool,
}

pub fn run(cmd: &FeedsCommand) -> CmdResult {
    match cmd {
        FeedsCommand::Update(a) => update(a),
        FeedsCommand::List(a) => list(a),
        FeedsCommand::Parse(a) => parse(a),
    }
}

/// `[POLICY] [NAME]`, `--policy POLICY [NAME]`, or the old `NAME POLICY`.
/// A lone word is the policy when it names a file (or looks like a path),
/// else a feed of the default policy.
fn policy_and_name(a: &UpdateArgs) -> Result<(PathBuf, Option<String>), Failure> {
    let usage = || Failure::System("usage: phantomc feeds update [POLICY] [NAME] (or --policy POLICY [NAME])".into());
    let is_policy = |s: &str| Path::new(s).is_file() || s.contains('/') || s.ends_with(".pf");
    match (&a.policy, a.args.as_slice()) {
        (Some(p), []) => Ok((p.clone(), None)),
        (Some(p), [name]) => Ok((p.clone(), Some(name.clone()))),
        (None, []) => Ok((resolve_policy(None), None)),
        (None, [p]) if is_policy(p) => Ok((PathBuf::from(p), None)),
        (None, [name]) => Ok((resolve_policy(None), Some(name.clone()))),
        (None, [name, p]) if is_policy(p) && !is_policy(name) => {
            eprintln!("phantomc: note: `feeds update NAME POLICY` is deprecated; write `feeds update {p} {name}`");
            Ok((PathBuf::from(p), Some(name.clone())))
        }
        (None, [p, name]) => Ok((PathBuf::from(p), Some(name.clone()))),
        _ => Err(usage()),
    }
}

fn update(a: &UpdateArgs) -> CmdResult {
    let (policy, only) = policy_and_name(a)?;
    let compiled = ir::compile_file(&policy)?;
    let rs = &compiled.ruleset;
    let mut configs = feeds::configs(rs, &policy);
    if let Some(name) = &only {
        configs.retain(|c| &c.name == name);
        if configs.is_empty() {
            let names: Vec<&str> = rs.feeds.iter().map(|f| f.name.as_str()).collect();
            return Err(Failure::System(format!(
                "{} declares no feed `{name}` (feeds: {})",
                policy.display(),
                names.join(", ")
            )));
        }
    }
    let cache = Cache::new(a.state_dir.feeds_dir());
    let now = update::now();
    let operator = Operator::discover(None, SSH_PORT).map_err(Failure::System)?;
    let runs =
        update::update_feeds(&Nft::default(), rs, &configs, &cache, now, a.due, &operator).map_err(Failure::System)?;
    if let Some(note) = operator.unchecked_note() {
        eprintln!("note: {note}");
    }
    let mut refused = 0;
    for (cfg, run) in configs.iter().zip(&runs) {
        let Some(report) = &run.report else {
            println!("{}: not due (refresh {}s)", cfg.name, cfg.refresh.as_secs());
            continue;
        };
        let (v4, v6) = (report.meta.v4, report.meta.v6);
        match &report.outcome {
            Outcome::Updated => println!("{}: updated from {} ({v4} IPv4, {v6} IPv6 entries)", cfg.name, cfg.source),
            Outcome::NotModified => {
                println!("{}: not modified since the last update ({v4} IPv4, {v6} IPv6 entries)", cfg.name)
            }
            Outcome::Kept { reason } => {
                refused += 1;
                let kept = if report.meta.fetched_at > 0 {
                    format!(
                        "kept the last good copy from {} ({v4} IPv4, {v6} IPv6 entries)",
                        age(now, report.meta.fetched_at)
                    )
                } else {
                    "no good copy yet: the set stays as it is".to_string()
                };
                println!("{}: REFUSED: {reason}; {kept}", cfg.name);
            }
        }
        for w in &report.warnings {
            eprintln!("warning: feed {}: {w}", cfg.name);
        }
        for w in &run.cuts {
            eprintln!("warning: {w}");
        }
        let table = &rs.table;
        let names = [nft_set_name(&cfg.name, Family::V4), nft_set_name(&cfg.name, Family::V6)];
        match &run.load {
            None => {}
            Some(SetLoad::NoTable) => println!("  table inet {table} is not loaded: cached for the next `phantomc apply`"),
            Some(SetLoad::NoSet) => println!("  table inet {table} has no set {}: apply the policy to create it (cached meanwhile)", names[0]),
            Some(SetLoad::Replaced { v4, v6, millis }) => println!(
                "  sets {} and {} of table inet {table} replaced in one transaction ({v4} + {v6} elements, {millis} ms)",
                names[0], names[1]
            ),
        }
    }
    Ok(if refused > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Live feed sets from the kernel, overridden by each feed's cached copy:
/// what `apply` loads, so a reload never empties a feed set.
pub fn apply_elements(rs: &Ruleset, protected: &Protected, state_dir: Option<&Path>) -> Result<Elements, Failure> {
    let (kept, warnings) = feeds::load_elements(rs, protected, state_dir).map_err(Failure::System)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(kept)
}

/// One `feeds list` row: a feed of the policy, or a cached feed.
struct ListRow {
    name: String,
    source: String,
    provider: Option<String>,
    meta: Option<Meta>,
    /// Unix time of the next update, if known.
    next: Option<u64>,
}

fn list(a: &ListArgs) -> CmdResult {
    let cache = Cache::new(a.state_dir.feeds_dir());
    let rows: Vec<ListRow> = match &a.policy {
        Some(p) => {
            let compiled = ir::compile_file(p)?;
            let configs: Vec<FeedConfig> = feeds::configs(&compiled.ruleset, p);
            configs
                .into_iter()
                .map(|c| {
                    let meta = cache.meta(&c.name)?;
                    Ok(ListRow {
                        next: meta.as_ref().map(|m| update::next_attempt(&c, m)),
                        provider: c.provider_name().map(str::to_string),
                        name: c.name,
                        source: c.source,
                        meta,
                    })
                })
                .collect::<Result<_, String>>()
                .map_err(Failure::System)?
        }
        None => cache
            .names()
            .and_then(|names| {
                names
                    .into_iter()
                    .map(|name| {
                        let meta = cache.meta(&name)?;
                        Ok(ListRow {
                            source: meta.as_ref().map(|m| m.source.clone()).unwrap_or_default(),
                            provider: meta.as_ref().and_then(|m| m.provider.clone()),
                            next: meta.as_ref().map(|m| m.next_at).filter(|&t| t > 0),
                            name,
                            meta,
                        })
                    })
                    .collect()
            })
            .map_err(Failure::System)?,
    };
    if a.format == super::explain::TextOrJson::Json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let m = r.meta.as_ref();
                serde_json::json!({
                    "name": r.name,
                    "source": r.source,
                    "provider": r.provider,
                    "ipv4": m.map(|m| m.v4),
                    "ipv6": m.map(|m| m.v6),
                    "fetched_at": m.map(|m| m.fetched_at).filter(|&t| t > 0),
                    "checked_at": m.map(|m| m.checked_at).filter(|&t| t > 0),
                    "status": m.map_or("not-fetched", |m| m.status.as_str()),
                    "message": m.and_then(|m| m.message.clone()),
                    "last_error": m.and_then(|m| m.last_error.clone()),
                    "last_error_at": m.and_then(|m| m.last_error_at),
                    "urls": m.map(|m| &m.parts),
                    "next_update_at": r.next,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no feeds cached in {}", cache.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let now = update::now();
    let header = ["NAME", "SOURCE", "IPV4", "IPV6", "PROVIDER", "LAST SUCCESS", "NEXT UPDATE", "STATUS", "LAST ERROR"];
    let mut table = vec![header.map(String::from).to_vec()];
    for row in rows {
        let provider = row.provider.unwrap_or_else(|| "-".into());
        let next = row.next.map_or_else(|| "due".to_string(), |t| until(now, t));
        let cells = match row.meta {
            None => {
                vec!["-".into(), "-".into(), provider, "never".into(), "due".into(), "not fetched".into(), "-".into()]
            }
            Some(m) => {
                // A good copy with a URL that failed is `ok, partly`; the error says which.
                let status = match &m.message {
                    Some(_) if m.status == "ok" => "ok, partly".to_string(),
                    _ => m.status.clone(),
                };
                let last = if m.fetched_at > 0 { age(now, m.fetched_at) } else { "never".into() };
                let error = match (&m.last_error, m.last_error_at) {
                    (Some(e), Some(at)) => format!("{}: {e}", age(now, at)),
                    (Some(e), None) => e.clone(),
                    (None, _) => "-".into(),
                };
                vec![m.v4.to_string(), m.v6.to_string(), provider, last, next, status, error]
            }
        };
        table.push([row.name, row.source].into_iter().chain(cells).collect());
    }
    print!("{}", columns(&table));
    Ok(ExitCode::SUCCESS)
}

/// `in 5h`, or `due` when the time has come.
fn until(now: u64, then: u64) -> String {
    match then.saturating_sub(now) {
        0 => "due".into(),
        s => format!("in {}", age(s, 0).trim_end_matches(" ago")),
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len() - 1;
        for (i, cell) in r.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn age(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn parse(a: &ParseArgs) -> CmdResult {
    let started = Instant::now();
    let text = std::fs::read(&a.file).map_err(|e| Failure::System(format!("cannot read {}: {e}", a.file.display())))?;
    let text =
        String::from_utf8(text).map_err(|_| Failure::System(format!("{}: not valid UTF-8 text", a.file.display())))?;
    let p = normalize::parse(&text, a.format, a.column)
        .map_err(|e| Failure::System(format!("{}: {e}", a.file.display())))?;
    let ms = started.elapsed().as_millis();
    if a.print {
        for n in p.nets() {
            println!("{n}");
        }
    }
    eprintln!(
        "{}: {} entries, {} junk; aggregated to {} IPv4 + {} IPv6 networks in {ms} ms",
        a.file.display(),
        p.entries,
        p.junk.count,
        p.v4.len(),
        p.v6.len()
    );
    if let Some(w) = p.junk.warning() {
        eprintln!("warning: {w}");
    }
    if p.v4.is_empty() && p.v6.is_empty() {
        // A feed with no address would empty its set: most likely the
        // wrong file, format or column.
        return Err(Failure::System(format!(
            "{}: no addresses found (check --format{})",
            a.file.display(),
            if a.format == Format::Csv { " and --column" } else { "" }
        )));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update_args(args: &[&str]) -> UpdateArgs {
        UpdateArgs {
            args: args.iter().map(|s| s.to_string()).collect(),
            policy: None,
            due: false,
            state_dir: Default::default(),
        }
    }

    #[test]
    fn update_takes_policy_then_name_and_the_old_order() {
        let p = |args: &[&str]| policy_and_name(&update_args(args)).ok();
        let name = Some("bad".to_string());
        assert_eq!(p(&["x/p.pf", "bad"]), Some((PathBuf::from("x/p.pf"), name.clone())));
        assert_eq!(p(&["bad", "x/p.pf"]), Some((PathBuf::from("x/p.pf"), name.clone())), "old order");
        assert_eq!(p(&["p.pf"]), Some((PathBuf::from("p.pf"), None)));
        assert_eq!(p(&["bad"]).map(|(_, n)| n), Some(name), "a lone name is a feed of the default policy");
        assert!(p(&["a", "b", "c"]).is_none());
    }
}
