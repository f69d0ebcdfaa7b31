use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::explain::TextOrJson;
use super::{CmdResult, Failure};
use crate::analyze::diff;
use crate::ir::{self, Compiled};
use crate::policy;

/// Exit code when `--fail-on` matched.
pub const EXIT_FAIL_ON: u8 = 5;

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// OLD.pf NEW.pf, or with --git just the policy file.
    #[arg(num_args = 1..=2, required = true)]
    pub policies: Vec<PathBuf>,
    /// Compare the policy against this git revision of the same file (e.g. origin/main).
    #[arg(long, value_name = "REV")]
    pub git: Option<String>,
    /// Exit 5 when the new policy lets more traffic through (`widen`), or on any change (`change`).
    #[arg(long, value_enum, default_value_t = FailOn::Never)]
    pub fail_on: FailOn,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Never,
    Widen,
    Change,
}

pub fn run(args: &DiffArgs) -> CmdResult {
    let (old, new) = match (&args.git, args.policies.as_slice()) {
        (Some(rev), [path]) => (from_git(rev, path)?, ir::compile_file(path)?),
        (None, [old, new]) => (ir::compile_file(old)?, ir::compile_file(new)?),
        (Some(_), _) => return Err(Failure::System("with --git, give only the policy file".into())),
        (None, _) => return Err(Failure::System("give OLD.pf NEW.pf, or --git REV POLICY".into())),
    };
    let d = diff::diff(&old, &new);
    match args.format {
        TextOrJson::Text => print!("{}", diff::render(&d)),
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&d).expect("diffs serialize")),
    }
    let fail = match args.fail_on {
        FailOn::Never => false,
        FailOn::Widen => d.widens(),
        FailOn::Change => !d.regions.is_empty() || d.nat_changed,
    };
    Ok(if fail { ExitCode::from(EXIT_FAIL_ON) } else { ExitCode::SUCCESS })
}

fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, Failure> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| Failure::System(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Failure::System(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The policy as it was at `rev`. The revision's whole directory is
/// exported, so its includes are the ones of that revision too.
fn from_git(rev: &str, path: &Path) -> Result<Compiled, Failure> {
    let abs = path.canonicalize().map_err(|e| Failure::System(format!("cannot read {}: {e}", path.display())))?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let root = PathBuf::from(String::from_utf8_lossy(&git(dir, &["rev-parse", "--show-toplevel"])?).trim());
    let rel = abs
        .strip_prefix(&root)
        .map_err(|_| Failure::System(format!("{} is not inside {}", abs.display(), root.display())))?;
    let rel_dir = rel.parent().map_or(".".to_string(), |p| {
        if p.as_os_str().is_empty() {
            ".".into()
        } else {
            p.display().to_string()
        }
    });
    let tar = git(&root, &["archive", "--format=tar", rev, "--", &rel_dir])?;
    let tmp =
        std::env::temp_dir().join(format!("phantomc-diff-{}-{}", std::process::id(), rev.replace(['/', ':'], "_")));
    std::fs::create_dir_all(&tmp).map_err(|e| Failure::System(format!("cannot create {}: {e}", tmp.display())))?;
    let result = unpack_and_compile(&tar, &tmp, rel, rev);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn unpack_and_compile(tar: &[u8], tmp: &Path, rel: &Path, rev: &str) -> Result<Compiled, Failure> {
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::System(format!("cannot run tar: {e}")))?;
    crate::nft::write_to_child(&mut child.stdin.take().expect("piped"), tar)
        .map_err(|e| Failure::System(format!("tar: {e}")))?;
    let status = child.wait().map_err(|e| Failure::System(format!("tar: {e}")))?;
    if !status.success() {
        return Err(Failure::System("tar could not unpack the git archive".into()));
    }
    let file = tmp.join(rel);
    let text = std::fs::read_to_string(&file)
        .map_err(|_| Failure::System(format!("{} does not exist at {rev}", rel.display())))?;
    let name = format!("{rev}:{}", rel.display());
    let p = policy::load_str(&name, &file, text)
        .map_err(|e| Failure::Policy(crate::diag::render_terminal(&e.diags, &e.sources)))?;
    let (ruleset, unused) =
        ir::lower(&p).map_err(|diags| Failure::Policy(crate::diag::render_terminal(&diags, &p.sources)))?;
    Ok(Compiled { sources: p.sources, ruleset, unused })
}
