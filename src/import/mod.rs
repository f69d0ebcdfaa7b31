//! `phantomc import`: another firewall's rules as a phantomc policy. Each
//! source format is read by its own module into [`Imported`]: policy lines,
//! each with a comment naming the source line it came from, and the list of
//! what could not be translated (by line, never silently dropped). The text
//! is compiled before it is handed back, so an import is always a policy.

pub mod firewalld;
pub mod firewalld_conf;
pub mod iptables;
pub mod lab;
pub mod nft;
pub mod phantom;
pub mod verify;

use std::fmt::Write as _;

/// One source construct that has no phantomc translation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Untranslated {
    /// `file:line`.
    pub at: String,
    pub text: String,
    pub reason: String,
}

/// A policy statement and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub statement: String,
    /// `file:line: source text`.
    pub origin: String,
}

/// What an import produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Header comment lines (source, family, notes).
    pub header: Vec<String>,
    /// Statements before the rules: sets, defines, default policies.
    pub declarations: Vec<Line>,
    pub rules: Vec<Line>,
    pub untranslated: Vec<Untranslated>,
}

impl Imported {
    /// The policy file text.
    pub fn policy(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            let _ = writeln!(out, "# {h}");
        }
        out.push_str("table phantomc\n\n");
        let width = self.declarations.iter().chain(&self.rules).map(|l| l.statement.len()).max().unwrap_or(0).min(72);
        let line = |out: &mut String, l: &Line| {
            let _ = writeln!(out, "{:width$}  # {}", l.statement, l.origin.replace('\n', " "));
        };
        for l in &self.declarations {
            line(&mut out, l);
        }
        out.push('\n');
        for l in &self.rules {
            line(&mut out, l);
        }
        if !self.untranslated.is_empty() {
            let _ = writeln!(out, "\n# Not translated ({}):", self.untranslated.len());
            for u in &self.untranslated {
                let _ = writeln!(out, "#   {}: {}\n#     {}", u.at, u.text, u.reason);
            }
        }
        out
    }
}

/// Orders reports by file, then line number.
pub fn sort_by_line(list: &mut [Untranslated]) {
    list.sort_by_key(|u| {
        let (file, line) = u.at.rsplit_once(':').unwrap_or((&u.at, "0"));
        (file.to_string(), line.parse::<usize>().unwrap_or(0))
    });
}

/// A source that cannot be imported at all: its location and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ImportError {
    /// `file:line`.
    pub at: String,
    pub message: String,
}
