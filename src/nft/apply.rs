//! Loading a compiled policy into the kernel, and comparing what is loaded
//! with what a policy says. Shared by `apply`, `status`, `watch` and the
//! confirm-or-rollback machinery.

use super::kernel::{self, Snapshot};
use super::{build, live_elements, locate_script_error, script_for, Elements, Nft, NftError, NftTable};
use crate::diag::Diag;
use crate::ir::{Compiled, Ruleset, SetKind};

/// Why a policy could not be loaded. In every case the live ruleset is as it was.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// nft refused one rule; the diagnostic points at its policy line.
    #[error("{}", .0.message)]
    RuleRefused(Box<Diag>),
    #[error("nft refused the compiled ruleset:\n{0}")]
    Refused(String),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("cannot count the rules of table inet {0} after loading: {1}")]
    Count(String, std::io::Error),
    #[error("table inet {table} holds {found} rules after loading, expected {expected}")]
    Verify { table: String, found: usize, expected: usize },
}

/// A built ruleset, ready to load.
pub struct Prepared {
    pub table: NftTable,
    /// Run-time and feed set entries carried over from the live table.
    pub kept: Elements,
}

/// Reads run-time entries and builds the ruleset.
pub fn prepare(compiled: &Compiled) -> Result<Prepared, ApplyError> {
    Ok(prepare_with(compiled, live_elements(&compiled.ruleset)?))
}

/// Like [`prepare`] with explicit extra elements (feeds, saved entries).
pub fn prepare_with(compiled: &Compiled, kept: Elements) -> Prepared {
    Prepared { table: build(&compiled.ruleset, &kept), kept }
}

/// Loads a prepared ruleset in one transaction and checks the result.
/// Returns the number of rules loaded. There is no separate check pass: a
/// transaction nft or the kernel refuses changes nothing.
pub fn load(nft: &Nft, compiled: &Compiled, p: &Prepared) -> Result<usize, ApplyError> {
    check_kernel(nft, compiled)?;
    if load_over_netlink(&p.table).is_err() {
        // Not encodable, or refused: nft loads the nft script (a refused
        // transaction changed nothing), and its error names a script line,
        // which maps back to the policy rule through the rule's comment.
        // nft parses a script faster than the same ruleset as JSON.
        let script = script_for(compiled, &p.table);
        nft.run(&["-f", "-"], Some(&script)).map_err(|e| refused(e, &script, compiled))?;
    }
    let name = &p.table.name;
    let found = super::kernel::count(name).map_err(|e| ApplyError::Count(name.clone(), e))?;
    let expected = p.table.rule_count();
    if found != expected {
        return Err(ApplyError::Verify { table: name.clone(), found, expected });
    }
    Ok(found)
}

/// Loads `table` as one nftables netlink batch, without nft, when the
/// encoder covers every construct ([`super::wire::Unsupported`]): the
/// kernel then holds the bytes nft would have given it
/// (`tests/kernel_netlink_load.rs`). `PHANTOMC_LOAD=nft` asks for nft.
pub fn load_over_netlink(table: &NftTable) -> Result<(), LoadPath> {
    if std::env::var_os("PHANTOMC_LOAD").is_some_and(|v| v == "nft") {
        return Err(LoadPath::NotAsked);
    }
    let messages = super::wire::replace_messages(table).map_err(LoadPath::Unsupported)?;
    crate::netlink::batch(super::wire::NFNL_SUBSYS_NFTABLES, &messages).map_err(LoadPath::Kernel)
}

/// Why a table was not loaded over netlink.
#[derive(Debug)]
pub enum LoadPath {
    NotAsked,
    Unsupported(super::wire::Unsupported),
    Kernel(std::io::Error),
}

/// Refuses a policy the kernel cannot hold, before anything is changed:
/// flowtables need `nf_flow_table`. The probe is `nft --check` of an empty
/// flowtable in a table of its own, which the kernel validates and never
/// commits.
pub fn check_kernel(nft: &Nft, compiled: &Compiled) -> Result<(), ApplyError> {
    let Some(first) = compiled.ruleset.flowtables.first() else { return Ok(()) };
    let probe =
        "table inet phantomc_flowtable_probe {\n\tflowtable probe {\n\t\thook ingress priority filter;\n\t}\n}\n";
    match nft.run(&["--check", "-f", "-"], Some(probe)) {
        Ok(_) => Ok(()),
        Err(NftError::Refused { stderr }) => {
            let d = Diag::error(
                "flowtable-unsupported",
                first.origin.span,
                "this kernel has no flowtable support",
                "the kernel cannot load it",
            )
            .with_help(format!(
                "the kernel needs CONFIG_NF_FLOW_TABLE (module nf_flow_table, and nf_flow_table_inet); nft --check of an empty flowtable said: {}",
                stderr.lines().find(|l| l.contains("Error")).unwrap_or(stderr.trim())
            ));
            Err(ApplyError::RuleRefused(Box::new(d)))
        }
        Err(other) => Err(ApplyError::Nft(other)),
    }
}

/// An nft error about `script`, pointing at the policy line when it can.
pub fn refused(e: NftError, script: &str, compiled: &Compiled) -> ApplyError {
    match e {
        NftError::Refused { stderr } => match locate_script_error(&stderr, script, &compiled.ruleset) {
            Some(d) => ApplyError::RuleRefused(Box::new(d)),
            None => ApplyError::Refused(stderr),
        },
        other => ApplyError::Nft(other),
    }
}

/// What the live table looks like next to a policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    NotLoaded,
    InSync {
        rules: usize,
        entries: usize,
    },
    /// A unified diff, compiled policy first, live kernel second.
    Drifted(String),
}

/// Is `name` a set whose elements are not the policy's own (run-time and
/// feed sets), or whose elements time out on their own (a static set with
/// timed entries: the kernel drops them, and their timeouts count down)?
/// Their contents are read or recorded elsewhere, never compared.
pub fn runtime_set(rs: &Ruleset, name: &str) -> bool {
    // A feed's hash sets are named after its set (`bad_v4_24`).
    let of_feed = crate::ir::feed_layout::of_kernel_set(name)
        .and_then(|(set, _)| rs.set(set))
        .is_some_and(|s| matches!(s.kind, SetKind::Feed { .. }));
    of_feed || rs.set(name).is_some_and(|s| !matches!(s.kind, SetKind::Static { .. }) || s.kind.has_timeouts())
}

/// The policy as the kernel would hold it: loaded without run-time or
/// feed entries into a throwaway namespace and read back over netlink.
pub fn expected_snapshot(nft: &Nft, compiled: &Compiled) -> Result<Snapshot, ApplyError> {
    let rs = &compiled.ruleset;
    let script = script_for(compiled, &build(rs, &Elements::default()));
    let snap = super::in_scratch_netns(|| {
        nft.run(&["-f", "-"], Some(&script)).map_err(|e| refused(e, &script, compiled))?;
        kernel::snapshot(&rs.table, &|name| runtime_set(rs, name)).map_err(|e| ApplyError::Nft(NftError::Kernel(e)))
    })??;
    Ok(snap.unwrap_or_default())
}

/// The live table read over netlink, `None` when it is not loaded.
pub fn live_snapshot(rs: &Ruleset) -> Result<Option<Snapshot>, NftError> {
    kernel::snapshot(&rs.table, &|name| runtime_set(rs, name)).map_err(NftError::Kernel)
}

/// Compares the live table with the policy, exactly: the policy is loaded
/// into a throwaway namespace and both are read from their kernels over
/// netlink: chains, rules, set definitions and the elements of the policy's
/// own sets. Feed and run-time set contents are not compared, so the cost
/// does not grow with a feed.
pub fn status(nft: &Nft, compiled: &Compiled) -> Result<Status, ApplyError> {
    let Some(live) = live_snapshot(&compiled.ruleset)? else { return Ok(Status::NotLoaded) };
    compare(&compiled.ruleset, &live, &expected_snapshot(nft, compiled)?)
}

/// The live table next to what the policy compiles to in the kernel.
pub fn compare(rs: &Ruleset, live: &Snapshot, expected: &Snapshot) -> Result<Status, ApplyError> {
    if expected != live {
        let (e, l) = (kernel::describe(expected), kernel::describe(live));
        return Ok(Status::Drifted(unified(&e, &l, "compiled policy", "live kernel")));
    }
    let mut entries = 0;
    for s in rs.sets.iter().filter(|s| matches!(s.kind, SetKind::Dynamic { .. })) {
        entries += kernel::set_elements(&rs.table, &s.nft_name).map_err(NftError::Kernel)?.len();
    }
    Ok(Status::InSync { rules: live.rules.len(), entries })
}

pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    similar::TextDiff::from_lines(a, b).unified_diff().context_radius(2).header(a_name, b_name).to_string()
}
