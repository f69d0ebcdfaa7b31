//! `import`: another firewall's rules as a phantomc policy (and the old
//! product's `config --import`), optionally verified packet by packet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CmdResult, Failure};
use crate::diag::render_terminal;
use crate::import::{firewalld, firewalld_conf, iptables, nft as nft_import, phantom, verify, ImportError, Imported};
use crate::ir;
use crate::nft::iptables_save::{self, SaveFile};

/// Exit code of `import --verify` when a generated packet gets a different
/// verdict from the original and from the imported policy.
const EXIT_NOT_EQUIVALENT: u8 = 7;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// iptables-save / ip6tables-save output (IPv4 and IPv6 files may be mixed).
    Iptables,
    /// ufw's user rules files (/etc/ufw/user.rules, user6.rules).
    Ufw,
    /// The YAML rules file of the product phantomc replaces (`phantom: rules:`).
    Phantom,
    /// A firewalld zone file (/etc/firewalld/zones/NAME.xml).
    Firewalld,
    /// An nftables ruleset: an nft script, `nft -j list ruleset` JSON, or
    /// `live` for this host's ruleset (scripts are parsed by nft in a throwaway
    /// network namespace; needs root).
    Nft,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The source format.
    #[arg(long = "from", value_enum)]
    pub from: Source,
    /// The files to import.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the policy here (default: standard output); never half-written.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Load the original and the imported policy into two throwaway network
    /// namespaces and send the same generated packets through both (needs
    /// root; firewalld and phantom input need --reference).
    #[arg(long)]
    pub verify: bool,
    /// --verify: the original as an nft script (or iptables-save file) to
    /// load, for formats phantomc cannot load as they are (firewalld, phantom).
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub reference: Option<PathBuf>,
    /// Random packets for --verify, besides every rule's boundary values.
    #[arg(long, default_value_t = 2000)]
    pub packets: usize,
    /// Seed of --verify's packet generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// --from nft: the table to import, when several have filter base chains.
    #[arg(long)]
    pub table: Option<String>,
    /// --from firewalld: a directory of service files (/usr/lib/firewalld/services);
    /// without it, a built-in table of common services.
    #[arg(long, value_name = "DIR")]
    pub services: Option<PathBuf>,
    /// --from firewalld: firewalld.conf (/etc/firewalld/firewalld.conf), for its
    /// IPv6_rpfilter and RFC3964_IPv4; without it, firewalld's defaults.
    #[arg(long, value_name = "FILE")]
    pub firewalld_conf: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Import the old product's rules YAML (`import --from phantom`).
    #[arg(long = "import", value_name = "FILE")]
    pub import: PathBuf,
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub force: bool,
}

fn bad(e: ImportError) -> Failure {
    Failure::Policy(format!("error[import]: {}: {}\nnothing was written\n", e.at, e.message))
}

pub fn config(args: &ConfigArgs) -> CmdResult {
    run(&ImportArgs {
        from: Source::Phantom,
        files: vec![args.import.clone()],
        output: args.output.clone(),
        force: args.force,
        verify: false,
        reference: None,
        packets: 0,
        seed: 1,
        table: None,
        services: None,
        firewalld_conf: None,
    })
}

pub fn run(args: &ImportArgs) -> CmdResult {
    if let Some(out) = &args.output {
        if out.exists() && !args.force {
            return Err(Failure::System(format!("{} exists; use --force to replace it", out.display())));
        }
    }
    if args.verify {
        needs_root()?;
    }
    if args.firewalld_conf.is_some() && args.from != Source::Firewalld {
        return Err(Failure::System("--firewalld-conf goes with --from firewalld".into()));
    }
    let mut files = Vec::new();
    if args.from == Source::Nft {
        return run_nft(args);
    }
    for f in &args.files {
        let text = read_input(f)?;
        files.push((f.display().to_string(), text));
    }
    let imported: Imported = match args.from {
        Source::Iptables => iptables::import(&files, iptables::Dialect::Iptables).map_err(bad)?,
        Source::Ufw => iptables::import(&files, iptables::Dialect::Ufw).map_err(bad)?,
        Source::Phantom => {
            let [(name, text)] = files.as_slice() else {
                return Err(Failure::System("--from phantom takes one file".into()));
            };
            phantom::import(name, text).map_err(bad)?
        }
        Source::Firewalld => {
            let [(name, text)] = files.as_slice() else {
                return Err(Failure::System("--from firewalld takes one zone file".into()));
            };
            let conf = match &args.firewalld_conf {
                Some(path) => firewalld_conf::parse(&path.display().to_string(), &read_input(path)?).map_err(bad)?,
                None => firewalld_conf::DaemonConf::default(),
            };
            firewalld::import(name, text, args.services.as_deref(), &conf).map_err(bad)?
        }
        Source::Nft => unreachable!("read by run_nft"),
    };
    let compiled = compile(args, &imported)?;
    let code = if args.verify { verify_against(args, &files, &compiled, &imported)? } else { ExitCode::SUCCESS };
    finish(args, &imported, code)
}

/// The imported policy compiled: a policy import writes always compiles.
fn compile(args: &ImportArgs, imported: &Imported) -> Result<ir::Compiled, Failure> {
    let name = args.output.as_ref().map_or_else(|| "imported.pf".to_string(), |p| p.display().to_string());
    ir::compile(&name, &imported.policy()).map_err(|e| {
        Failure::Policy(format!(
            "{}the imported policy does not compile (a bug in import; please report it with the input)\nnothing was written\n",
            render_terminal(&e.diags, &e.sources)
        ))
    })
}

/// Writes the policy and reports what was not translated.
fn finish(args: &ImportArgs, imported: &Imported, code: ExitCode) -> CmdResult {
    let policy = imported.policy();
    match &args.output {
        Some(out) => write_atomically(out, &policy)?,
        None => print!("{policy}"),
    }
    eprintln!(
        "imported {} rules from {}; {} not translated{}",
        imported.rules.len(),
        args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
        imported.untranslated.len(),
        if imported.untranslated.is_empty() { "" } else { " (listed at the end of the policy):" }
    );
    for u in &imported.untranslated {
        eprintln!("  {}: {}\n    {}", u.at, u.text, u.reason);
    }
    Ok(code)
}

/// An input file as text; bytes that are not UTF-8 are bad input, named by line.
fn read_input(path: &Path) -> Result<String, Failure> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Failure::System(format!("cannot read {name}: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        bad(ImportError {
            at: format!("{name}:{line}"),
            message: format!("not text: the byte at offset {at} is not UTF-8 (a binary or garbled file)"),
        })
    })
}

/// `--from nft`: a script or JSON file, or `live`.
fn run_nft(args: &ImportArgs) -> CmdResult {
    let [file] = args.files.as_slice() else {
        return Err(Failure::System("--from nft takes one file (or `live`)".into()));
    };
    let name = file.display().to_string();
    let (json, text) = if name == "live" {
        let json = crate::nft::Nft::default()
            .run(&["-j", "list", "ruleset"], None)
            .map_err(|e| Failure::System(format!("nft -j list ruleset: {e}")))?;
        (json, None)
    } else {
        let text = read_input(file)?;
        if text.trim().is_empty() {
            return Err(bad(ImportError { at: format!("{name}:1"), message: "an empty ruleset".into() }));
        }
        // nft itself parses the script, in a throwaway namespace; its errors name the line.
        let (_, json) = verify::load_nft(&text).map_err(|e| bad(ImportError { at: name.clone(), message: e }))?;
        (json, Some(text))
    };
    let imported = nft_import::import(&name, &json, args.table.as_deref(), text.as_deref()).map_err(|mut e| {
        // What nft loaded is read back as a whole: a file's error is the file's, from its first line.
        if text.is_some() && e.at == name {
            e.at = format!("{name}:1");
        }
        bad(e)
    })?;
    let compiled = compile(args, &imported)?;
    let code = if args.verify {
        let original = match &args.reference {
            Some(_) => reference(args)?,
            None => verify::OriginalRules::Nft(text.unwrap_or(json)),
        };
        let untranslated = |_v6: bool, table: &str, chain: &str, index: usize| -> Option<String> {
            // The rule, or its whole chain (a base chain phantomc has no place for).
            let (rule, whole) =
                (format!(" {table} chain {chain} rule {}", index + 1), format!(" {table} chain {chain}"));
            imported.untranslated.iter().find(|u| u.at.ends_with(&rule) || u.at.ends_with(&whole)).map(|u| u.at.clone())
        };
        run_verify(args, &original, &compiled, &[false, true], &untranslated)?
    } else {
        ExitCode::SUCCESS
    };
    finish(args, &imported, code)
}

fn verify_against(
    args: &ImportArgs,
    files: &[(String, String)],
    compiled: &ir::Compiled,
    imported: &Imported,
) -> Result<ExitCode, Failure> {
    let tagged: Vec<(String, String, bool)> =
        files.iter().map(|(n, t)| (n.clone(), t.clone(), iptables::is_ipv6(n, t))).collect();
    let original = match (args.from, &args.reference) {
        (_, Some(_)) => reference(args)?,
        (Source::Ufw, None) => verify::OriginalRules::Iptables(
            tagged.iter().map(|(n, t, v6)| (n.clone(), iptables::ufw_as_loaded(t, *v6), *v6)).collect(),
        ),
        (Source::Iptables, None) => verify::OriginalRules::Iptables(tagged.clone()),
        _ => {
            return Err(Failure::System(
                "--verify needs the original as a ruleset: give --reference FILE (an nft script or iptables-save \
                 output that does what the imported file means)"
                    .into(),
            ))
        }
    };
    let saves: Vec<(String, SaveFile, bool)> =
        tagged.iter().filter_map(|(n, t, v6)| iptables_save::parse(t).ok().map(|s| (n.clone(), s, *v6))).collect();
    let untranslated = |v6: bool, table: &str, chain: &str, index: usize| -> Option<String> {
        if args.from == Source::Firewalld {
            // A zone file's lines are no rules of the reference's chains.
            return None;
        }
        saves.iter().filter(|s| s.2 == v6).find_map(|(name, save, _)| {
            let t = save.tables.iter().find(|t| t.name == table)?;
            let not_translated = |line: usize| {
                let at = format!("{name}:{line}");
                imported.untranslated.iter().any(|u| u.at == at).then_some(at)
            };
            let rule = t.rules_of(chain).nth(index)?;
            // A rule of a user chain the packet can only have reached
            // through jumps that were not translated.
            let into = |r: &&iptables_save::SaveRule| {
                r.args.windows(2).any(|w| matches!(w[0].as_str(), "-j" | "-g") && w[1] == chain)
            };
            not_translated(rule.line).or_else(|| {
                let jumps: Vec<Option<String>> = t.rules.iter().filter(into).map(|r| not_translated(r.line)).collect();
                jumps.iter().all(Option::is_some).then(|| jumps.into_iter().next()).flatten().flatten()
            })
        })
    };
    let families: Vec<bool> = match args.from {
        Source::Iptables | Source::Ufw if args.reference.is_none() => {
            [false, true].into_iter().filter(|v6| tagged.iter().any(|f| f.2 == *v6)).collect()
        }
        _ => vec![false, true],
    };
    run_verify(args, &original, compiled, &families, &untranslated)
}

/// `--reference FILE`: an iptables-save file when it looks like one, else an nft ruleset.
fn reference(args: &ImportArgs) -> Result<verify::OriginalRules, Failure> {
    let path = args.reference.as_ref().expect("called with --reference");
    let name = path.display().to_string();
    let text = read_input(path)?;
    let is_save =
        text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).is_some_and(|l| l.starts_with('*'));
    Ok(if is_save {
        let v6 = iptables::is_ipv6(&name, &text);
        verify::OriginalRules::Iptables(vec![(name, text, v6)])
    } else {
        verify::OriginalRules::Nft(text)
    })
}

/// --verify creates network namespaces and sends raw packets.
fn needs_root() -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure::System(
            "--verify loads both rulesets into throwaway network namespaces and sends packets through them, \
             which needs root (CAP_NET_ADMIN and CAP_NET_RAW): run it as root, or import without --verify"
                .into(),
        ));
    }
    Ok(())
}

fn run_verify(
    args: &ImportArgs,
    original: &verify::OriginalRules,
    compiled: &ir::Compiled,
    families: &[bool],
    untranslated: &dyn Fn(bool, &str, &str, usize) -> Option<String>,
) -> Result<ExitCode, Failure> {
    let reports = verify::verify(original, compiled, families, args.packets, args.seed, untranslated)
        .map_err(|e| Failure::System(format!("--verify: {e}")))?;
    let mut code = ExitCode::SUCCESS;
    for (v6, r) in &reports {
        if report_verify(*v6, r) {
            code = ExitCode::from(EXIT_NOT_EQUIVALENT);
        }
    }
    Ok(code)
}

/// Prints one family's comparison; true when a difference is unexplained.
fn report_verify(v6: bool, r: &verify::Report) -> bool {
    eprintln!(
        "verify {}: {} packets through both kernels ({} input, {} forward; the original accepted {}, rejected {}, \
         dropped {}), {} differ, {} more differ where the original's deciding rule was not translated; {} meet a \
         rate-limited rule (not compared), {} not sent (on loopback, or hairpinned from an unroutable source)",
        if v6 { "IPv6" } else { "IPv4" },
        r.packets,
        r.input,
        r.forward,
        r.original_fates[0],
        r.original_fates[1],
        r.original_fates[2],
        r.differing.len(),
        r.explained.len(),
        r.rate_limited,
        r.not_sent
    );
    for d in r.differing.iter().chain(r.explained.iter()) {
        eprintln!(
            "  {}: original {} ({}), imported {} ({})",
            d.packet, d.original, d.original_rule, d.imported, d.imported_rule
        );
    }
    !r.differing.is_empty()
}

/// Writes the policy in one rename: never half-written.
fn write_atomically(path: &Path, text: &str) -> Result<(), Failure> {
    crate::watch::write_atomic(path, text.as_bytes())
        .map_err(|e| Failure::System(format!("cannot write {}: {e}", path.display())))
}
