//! The policy language: loading files (with includes) and parsing them into
//! an AST. Meaning is given to the AST by [`crate::ir::lower`].

pub mod ast;
mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

pub use parse::parse_action;

use crate::diag::{render_plain, Diag, SourceMap, Span};
use ast::Stmt;

/// Include nesting deeper than this is almost surely a mistake.
const MAX_INCLUDE_DEPTH: usize = 16;

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
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
    Ok(load_str(&path.display().to_string(), path, text)?)
}

/// Parses policy text; `path` anchors relative includes.
pub fn load_str(name: &str, path: &Path, text: String) -> Result<Policy, PolicyError> {
    let mut loader = Loader { sources: SourceMap::default(), stmts: Vec::new(), diags: Vec::new(), stack: Vec::new() };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    loader.file(name.to_string(), path.to_path_buf(), canonical, text);
    if loader.diags.is_empty() {
        Ok(Policy { sources: loader.sources, stmts: loader.stmts })
    } else {
        Err(PolicyError { sources: loader.sources, diags: loader.diags })
    }
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
}

impl Loader {
    fn file(&mut self, name: String, path: PathBuf, canonical: PathBuf, text: String) {
        let id = self.sources.add(name, path.clone(), text);
        let text = self.sources.file(id).text.clone();
        let stmts = match parse::parse_file(id, &text) {
            Ok(s) => s,
            Err(mut d) => {
                self.diags.append(&mut d);
                return;
            }
        };
        self.stack.push(canonical);
        for stmt in stmts {
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
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(Diag::error(
                    "include-missing",
                    path_span,
                    format!("cannot read `{rel}`"),
                    format!("{e}"),
                ));
                return;
            }
        };
        let name = Path::new(&self.sources.file(stmt_span.file).name)
            .parent()
            .map_or_else(|| rel.clone(), |p| p.join(&rel).display().to_string());
        self.file(name, path, canonical, text);
    }
}
