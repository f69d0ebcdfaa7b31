//! Source files, spans and diagnostics shared by every stage.
//!
//! Every error or finding carries a [`Span`] into a [`SourceMap`], so the
//! message can point at the exact file, line and column with miette.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub mod codes;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, SourceCode,
    SourceSpan, SpanContents,
};

pub type FileId = usize;

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start, end }
    }

    pub fn from_pest(file: FileId, s: pest::Span<'_>) -> Self {
        Span::new(file, s.start(), s.end())
    }
}

#[derive(Debug)]
pub struct SourceFile {
    /// The name shown to people (the path as the user or the include wrote it).
    pub name: String,
    /// The path used to read the file.
    pub path: PathBuf,
    pub text: Arc<String>,
    /// Byte offset of each line's start, for fast line lookups.
    line_starts: Arc<Vec<usize>>,
    /// The text as diagnostics show it ([`visible`]), made once per file.
    shown: OnceLock<Arc<String>>,
}

impl SourceFile {
    fn shown(&self) -> Arc<String> {
        self.shown
            .get_or_init(|| {
                let shown = visible(&self.text);
                if shown == *self.text {
                    self.text.clone()
                } else {
                    Arc::new(shown)
                }
            })
            .clone()
    }
}

/// All files read while loading one policy (the main file and its includes).
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, name: String, path: PathBuf, text: String) -> FileId {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        self.files.push(SourceFile {
            name,
            path,
            text: Arc::new(text),
            line_starts: Arc::new(line_starts),
            shown: OnceLock::new(),
        });
        self.files.len() - 1
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// 1-based line and column of a span's start.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let file = &self.files[span.file];
        let start = span.start.min(file.text.len());
        let line = file.line_starts.partition_point(|&s| s <= start);
        let col = file.text[file.line_starts[line - 1]..start].chars().count() + 1;
        (line, col)
    }

    /// `file:line`, the id that links a compiled rule back to the policy.
    pub fn origin(&self, span: Span) -> String {
        let (line, _) = self.line_col(span);
        let name = &self.files[span.file].name;
        let short = Path::new(name).file_name().map_or(name.as_str(), |n| n.to_str().unwrap_or(name));
        format!("{short}:{line}")
    }

    /// Text of a span.
    pub fn snippet(&self, span: Span) -> &str {
        &self.files[span.file].text[span.start..span.end]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

/// One problem found in a policy: where, what, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
    /// Secondary places (same file only are drawn; others are named in the help).
    pub related: Vec<(Span, String)>,
}

impl Diag {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diag {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: label.into(),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diag { severity: Severity::Warning, ..Diag::error(code, span, message, label) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    /// A miette diagnostic bound to its source text, ready to print.
    pub fn to_report(&self, sources: &SourceMap) -> Report {
        let file = sources.file(self.span.file);
        let mut labels =
            vec![LabeledSpan::new_primary_with_span(Some(visible(&self.label)), self.span.start..self.span.end)];
        let mut help = self.help.as_deref().map(visible);
        for (span, label) in &self.related {
            if span.file == self.span.file {
                labels.push(LabeledSpan::new_with_span(Some(visible(label)), span.start..span.end));
            } else {
                let (line, col) = sources.line_col(*span);
                let note = format!("{label}: {}:{line}:{col}", sources.file(span.file).name);
                help = Some(match help {
                    Some(h) => format!("{h}\n{note}"),
                    None => note,
                });
            }
        }
        Report {
            code: self.code,
            severity: self.severity,
            message: visible(&self.message),
            help,
            labels,
            source: Excerpt { name: visible(&file.name), text: file.shown(), line_starts: file.line_starts.clone() },
        }
    }
}

/// `text` with control characters (but newline, tab, carriage return) and
/// bidirectional overrides replaced by a visible mark of the same UTF-8 length,
/// so a diagnostic cannot drive the terminal or reorder what it shows, and
/// spans stay valid.
pub fn visible(text: &str) -> String {
    let hidden = |c: char| {
        (c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    text.chars()
        .map(|c| match (hidden(c), c.len_utf8()) {
            (false, _) => c,
            (true, 1) => '?',
            (true, 2) => '\u{bf}',
            (true, _) => '\u{fffd}',
        })
        .collect()
}

/// A file's text for miette that reads only the lines around a span:
/// miette's own reader scans the text from its start for every label, which
/// made rendering many findings of a large policy quadratic.
#[derive(Debug)]
struct Excerpt {
    name: String,
    text: Arc<String>,
    line_starts: Arc<Vec<usize>>,
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let line_of = |offset: usize| self.line_starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let (start, end) = (span.offset(), span.offset() + span.len());
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        // Whole lines from one before the context to two after it: miette's
        // reader gives the same answer on them as on the whole text.
        let first = line_of(start).saturating_sub(context_lines_before + 1);
        let past = line_of(end) + context_lines_after + 3;
        let (from, to) = (self.line_starts[first], self.line_starts.get(past).copied().unwrap_or(self.text.len()));
        let window = &self.text.as_bytes()[from..to];
        let local = SourceSpan::new((start - from).into(), span.len());
        let found = window.read_span(&local, context_lines_before, context_lines_after)?;
        let data: &'a [u8] = found.data();
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            data,
            SourceSpan::new((found.span().offset() + from).into(), found.span().len()),
            found.line() + first,
            found.column(),
            found.line_count() + first,
        )))
    }
}

/// A [`Diag`] with its source attached, in miette's terms.
#[derive(Debug)]
pub struct Report {
    code: &'static str,
    severity: Severity,
    message: String,
    help: Option<String>,
    labels: Vec<LabeledSpan>,
    source: Excerpt,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Note => miette::Severity::Advice,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Renders diagnostics as plain text (no colour), the form used in snapshots
/// and when stderr is not a terminal.
/// Diagnostics as JSON objects (for the API): code, severity, where, what,
/// and the plain rendering a terminal would show.
pub fn to_json(diags: &[Diag], sources: &SourceMap) -> Vec<serde_json::Value> {
    diags
        .iter()
        .map(|d| {
            let (line, column) = sources.line_col(d.span);
            serde_json::json!({
                "code": d.code,
                "severity": d.severity,
                "message": d.message,
                "file": sources.file(d.span.file).name,
                "line": line,
                "column": column,
                "label": d.label,
                "help": d.help,
                "rendered": render_plain(std::slice::from_ref(d), sources),
            })
        })
        .collect()
}

pub fn render_plain(diags: &[Diag], sources: &SourceMap) -> String {
    render_with(diags, sources, GraphicalTheme::unicode_nocolor())
}

/// Renders for a terminal: colour when stderr is a TTY.
pub fn render_terminal(diags: &[Diag], sources: &SourceMap) -> String {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        render_with(diags, sources, GraphicalTheme::unicode())
    } else {
        render_plain(diags, sources)
    }
}

fn render_with(diags: &[Diag], sources: &SourceMap, theme: GraphicalTheme) -> String {
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let report = d.to_report(sources);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
    }
    out
}

/// The closest known word, for "did you mean" help.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod visible_tests {
    use super::*;

    #[test]
    fn diagnostics_never_echo_terminal_escapes_or_bidi_overrides() {
        let mut sources = SourceMap::default();
        let text = "pass in from $ab\u{202e}cd\u{1b}[31m\n".to_string();
        let id = sources.add("x.pf".into(), "x.pf".into(), text.clone());
        let d = Diag::error("syntax", Span::new(id, 13, text.len() - 1), "unexpected `ab\u{202e}\u{1b}`", "here");
        let out = render_plain(&[d], &sources);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}'), "{out}");
        assert!(out.contains("$ab\u{fffd}cd?[31m"), "{out}");
        assert_eq!(visible("a\tb\u{85}\u{2066}"), "a\tb\u{bf}\u{fffd}");
    }
}

#[cfg(test)]
mod excerpt_tests {
    use super::*;

    #[test]
    fn an_excerpt_reads_what_miette_reads_from_the_whole_text() {
        for text in [
            "pass in on lo\npass in state { established, related }\n\nblock in from 10.0.0.0/8\npass in proto tcp to port 22",
            "a\r\nbb\r\n\r\nccc\r\nd\n",
            "only one line",
            "\n\n\nx\n\n\n",
        ] {
            let mut sources = SourceMap::default();
            sources.add("t.pf".into(), "t.pf".into(), text.to_string());
            let file = sources.file(0);
            let excerpt = Excerpt { name: "t.pf".into(), text: file.shown(), line_starts: file.line_starts.clone() };
            for start in 0..=text.len() {
                for len in [0, 1, 3, 9, 40] {
                    if start + len > text.len() {
                        continue;
                    }
                    for (before, after) in [(0, 0), (1, 1), (2, 3), (5, 0)] {
                        let span = SourceSpan::new(start.into(), len);
                        let whole = text.as_bytes().read_span(&span, before, after).expect("in bounds");
                        let part = excerpt.read_span(&span, before, after).expect("in bounds");
                        let facts = |c: &dyn SpanContents<'_>| {
                            (c.data().to_vec(), *c.span(), c.line(), c.column(), c.line_count())
                        };
                        assert_eq!(facts(&*part), facts(&*whole), "{text:?} {start}+{len} ({before}, {after})");
                    }
                }
            }
            let past = SourceSpan::new(text.len().into(), 1);
            assert!(excerpt.read_span(&past, 1, 1).is_err());
        }
    }
}
