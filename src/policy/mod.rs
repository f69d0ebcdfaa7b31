//! The policy language: loading files (with includes) and parsing them into
//! an AST. Meaning is given to the AST by [`crate::ir::lower`].

pub mod ast;
mod descent;
pub mod duration;
mod literal;
mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

pub use parse::parse_action;

use crate::diag::{render_plain, Diag, FileId, SourceMap, Span};
use ast::Stmt;

/// Include nesting deeper than this is almost surely a mistake.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Bytes one policy file (main or include) may hold; `PHANTOMC_MAX_INCLUDE_BYTES` overrides.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Bytes of all policy text together, includes repeated as often as they are
/// included; `PHANTOMC_MAX_POLICY_BYTES` overrides.
const MAX_POLICY_BYTES: u64 = 64 << 20;
/// Statements after expanding includes (repeated includes grow exponentially);
/// `PHANTOMC_MAX_STATEMENTS` overrides. Release build, 2 cores: 200,000 rules
/// compile in 3.5 s and 690 MB (100,000: 1.8 s, 349 MB; 1,000,000: 10.7 s, 2 GB).
pub const MAX_STATEMENTS: u64 = 200_000;

/// Set and list elements after expanding defines (`ir`);
/// `PHANTOMC_MAX_ELEMENTS` overrides. A define of 1,000,000 addresses
/// compiles in 1.7 s (324 MB).
pub const MAX_ELEMENTS: u64 = 1_000_000;

/// The statement budget of one compile.
pub fn max_statements() -> u64 {
    crate::input::cap_from_env("PHANTOMC_MAX_STATEMENTS", MAX_STATEMENTS)
}

/// The element budget of one compile (set and list elements in `ir`).
pub fn max_elements() -> u64 {
    crate::input::cap_from_env("PHANTOMC_MAX_ELEMENTS", MAX_ELEMENTS)
}

/// A parsed policy: every statement of the main file and its includes, in order.
#[derive(Debug)]
pub struct Policy {
    pub sources: SourceMap,
    pub stmts: Vec<Stmt>,
}

/// A policy that could not be read, with everything needed to show why.
#[derive(Debug)]
pub struct PolicyError {
    pub sources: SourceMap,
    pub diags: Vec<Diag>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_plain(&self.diags, &self.sources))
    }
}

impl std::error::Error for PolicyError {}

/// Reads and parses a policy file and everything it includes.
pub fn load(path: &Path) -> Result<Policy, LoadError> {
    let io = |e| LoadError::Io(path.to_path_buf(), e);
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = crate::input::read_capped(file, file_cap()).map_err(|e| match e {
        crate::input::InputError::Io(e) => io(e),
        other => io(std::io::Error::other(other.to_string())),
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| io(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8")))?;
    Ok(load_str(&path.display().to_string(), path, text)?)
}

/// Parses policy text; `path` anchors relative includes.
pub fn load_str(name: &str, path: &Path, text: String) -> Result<Policy, PolicyError> {
    let mut loader = Loader {
        sources: SourceMap::default(),
        stmts: Vec::new(),
        diags: Vec::new(),
        stack: Vec::new(),
        bytes_left: crate::input::cap_from_env("PHANTOMC_MAX_POLICY_BYTES", MAX_POLICY_BYTES),
        stmts_left: max_statements(),
    };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    loader.file(name.to_string(), path.to_path_buf(), canonical, text, None);
    if loader.diags.is_empty() {
        Ok(Policy { sources: loader.sources, stmts: loader.stmts })
    } else {
        Err(PolicyError { sources: loader.sources, diags: loader.diags })
    }
}

/// One file's statements, or why they cannot be read.
pub type Parsed = Result<Vec<Stmt>, Vec<Diag>>;

/// One file's statements: the hand-written parser reads valid text; whatever
/// it does not accept goes to the pest parser, whose diagnostics are shown.
fn parse_text(file: FileId, text: &str) -> Parsed {
    descent::parse_file(file, text).map_or_else(|| parse::parse_file(file, text), Ok)
}

/// The pest parser's reading of `text` and the hand-written parser's (None
/// where it leaves the text to pest), for `tests/parser_parity.rs`.
#[doc(hidden)]
pub fn parse_with_both(text: &str) -> (Parsed, Option<Vec<Stmt>>) {
    let file = FileId::default();
    (parse::parse_file(file, text), descent::parse_file(file, text))
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Policy(#[from] PolicyError),
}

struct Loader {
    sources: SourceMap,
    stmts: Vec<Stmt>,
    diags: Vec<Diag>,
    /// Files being read, outermost first (for cycle detection).
    stack: Vec<PathBuf>,
    /// What is left of the total text and statement budgets.
    bytes_left: u64,
    stmts_left: u64,
}

fn file_cap() -> u64 {
    crate::input::cap_from_env("PHANTOMC_MAX_INCLUDE_BYTES", MAX_FILE_BYTES)
}

/// The error for a policy that grows past a budget once includes and defines are expanded.
pub fn expansion_limit(span: Span, what: String) -> Diag {
    Diag::error("expansion-limit", span, format!("the policy grows past {what}"), "the limit is crossed here")
        .with_help(
            "includes and defines are expanded in full; repeated includes or doubling defines grow exponentially \
         (see docs/language.md, Limits)",
        )
}

impl Loader {
    /// Reads one file's statements; `included_at` is the include statement that brought it in.
    fn file(&mut self, name: String, path: PathBuf, canonical: PathBuf, text: String, included_at: Option<Span>) {
        // Editors on Windows save a byte-order mark; it is not part of the first statement.
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        let id = self.sources.add(name, path.clone(), text);
        let text = self.sources.file(id).text.clone();
        let stmts = match parse_text(id, &text) {
            Ok(s) => s,
            Err(mut d) => {
                self.diags.append(&mut d);
                return;
            }
        };
        if stmts.len() as u64 > self.stmts_left {
            let at = included_at.unwrap_or(Span::new(id, 0, 0));
            self.diags.push(expansion_limit(at, format!("{} statements", max_statements())));
            return;
        }
        self.stmts_left -= stmts.len() as u64;
        self.stack.push(canonical);
        for stmt in stmts {
            if self.diags.iter().any(|d| d.code == "expansion-limit") {
                break; // one report; the rest would only repeat it
            }
            if let Stmt::Include { path: inc, span } = &stmt {
                self.include(&path, inc.node.clone(), inc.span, *span);
            } else {
                self.stmts.push(stmt);
            }
        }
        self.stack.pop();
    }

    fn include(&mut self, from: &Path, rel: String, path_span: Span, stmt_span: Span) {
        let dir = from.parent().unwrap_or(Path::new("."));
        let path = dir.join(&rel);
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(e) => {
                self.diags.push(
                    Diag::error("include-missing", path_span, format!("cannot include `{rel}`"), format!("{e}"))
                        .with_help(format!(
                            "include paths are relative to the including file's folder: looked for {}",
                            path.display()
                        )),
                );
                return;
            }
        };
        if let Some(pos) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[pos..]
                .iter()
                .map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()))
                .chain(std::iter::once(rel.clone()))
                .collect();
            self.diags.push(
                Diag::error(
                    "include-cycle",
                    stmt_span,
                    format!("include cycle: `{rel}` is already being read"),
                    "this include closes the cycle",
                )
                .with_help(format!("cycle: {}", chain.join(" -> "))),
            );
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.diags.push(Diag::error(
                "include-depth",
                stmt_span,
                "includes nested too deeply",
                format!("more than {MAX_INCLUDE_DEPTH} levels"),
            ));
            return;
        }
        let cap = file_cap();
        let text = match crate::input::read_regular(&path, cap.min(self.bytes_left)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    self.diags.push(Diag::error(
                        "include-unreadable",
                        path_span,
                        format!("cannot read `{rel}`"),
                        "not UTF-8 text",
                    ));
                    return;
                }
            },
            Err(crate::input::InputError::TooLarge { .. }) if self.bytes_left < cap => {
                let total = crate::input::cap_from_env("PHANTOMC_MAX_POLICY_BYTES", MAX_POLICY_BYTES);
                self.diags.push(expansion_limit(stmt_span, format!("{total} bytes of included text")));
                return;
            }
            Err(e) => {
                let code = match e {
                    crate::input::InputError::Io(_) => "include-missing",
                    _ => "include-unreadable",
                };
                self.diags.push(
                    Diag::error(code, path_span, format!("cannot include `{rel}`"), format!("{e}")).with_help(
                        "an include must be a regular file of at most PHANTOMC_MAX_INCLUDE_BYTES \
                         (default 16 MiB)",
                    ),
                );
                return;
            }
        };
        self.bytes_left -= text.len() as u64;
        let name = Path::new(&self.sources.file(stmt_span.file).name)
            .parent()
            .map_or_else(|| rel.clone(), |p| p.join(&rel).display().to_string());
        self.file(name, path, canonical, text, Some(stmt_span));
    }
}
