//! Findings for people (miette text) and for CI: JSON, SARIF 2.1.0, and
//! GitHub Actions workflow commands (annotations on the pull request).

use serde_json::{json, Value};

use crate::diag::{render_plain, Diag, Severity, SourceMap, Span};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Diagnostics with the policy source (miette).
    Text,
    /// One JSON array of findings.
    Json,
    /// SARIF 2.1.0 (GitHub code scanning and other tools).
    Sarif,
    /// GitHub Actions `::error`/`::warning` commands (annotations).
    Github,
}

/// Where a span is, for machines.
struct Place {
    file: String,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

fn place(sources: &SourceMap, span: Span) -> Place {
    let (line, column) = sources.line_col(span);
    let (end_line, end_column) = sources.line_col(Span { start: span.end, ..span });
    Place { file: sources.file(span.file).name.clone(), line, column, end_line, end_column }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

pub fn render(diags: &[Diag], sources: &SourceMap, format: Format, color: bool) -> String {
    match format {
        Format::Text => {
            let body = if color { crate::diag::render_terminal(diags, sources) } else { render_plain(diags, sources) };
            body + &summary(diags)
        }
        Format::Json => {
            serde_json::to_string_pretty(&json_findings(diags, sources)).expect("JSON values serialize") + "\n"
        }
        Format::Sarif => serde_json::to_string_pretty(&sarif(diags, sources)).expect("JSON values serialize") + "\n",
        Format::Github => diags.iter().map(|d| github(d, sources)).collect(),
    }
}

pub fn summary(diags: &[Diag]) -> String {
    let count = |s| diags.iter().filter(|d| d.severity == s).count();
    format!("{} errors, {} warnings\n", count(Severity::Error), count(Severity::Warning))
}

fn json_findings(diags: &[Diag], sources: &SourceMap) -> Value {
    let items: Vec<Value> = diags
        .iter()
        .map(|d| {
            let p = place(sources, d.span);
            let related: Vec<Value> = d
                .related
                .iter()
                .map(|(s, label)| {
                    let r = place(sources, *s);
                    json!({"file": r.file, "line": r.line, "column": r.column, "label": label})
                })
                .collect();
            json!({
                "code": d.code,
                "severity": severity_word(d.severity),
                "message": d.message,
                "file": p.file,
                "line": p.line,
                "column": p.column,
                "end_line": p.end_line,
                "end_column": p.end_column,
                "label": d.label,
                "help": d.help,
                "related": related,
            })
        })
        .collect();
    Value::Array(items)
}

fn sarif_location(sources: &SourceMap, span: Span, message: Option<&str>) -> Value {
    let p = place(sources, span);
    let mut loc = json!({
        "physicalLocation": {
            "artifactLocation": {"uri": p.file},
            "region": {"startLine": p.line, "startColumn": p.column, "endLine": p.end_line, "endColumn": p.end_column},
        }
    });
    if let Some(m) = message {
        loc["message"] = json!({"text": m});
    }
    loc
}

fn sarif(diags: &[Diag], sources: &SourceMap) -> Value {
    let mut codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
    codes.sort_unstable();
    codes.dedup();
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let text = match &d.help {
                Some(h) => format!("{}\nhelp: {h}", d.message),
                None => d.message.clone(),
            };
            json!({
                "ruleId": d.code,
                "level": severity_word(d.severity),
                "message": {"text": text},
                "locations": [sarif_location(sources, d.span, None)],
                "relatedLocations": d.related.iter().map(|(s, l)| sarif_location(sources, *s, Some(l))).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "phantomc",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": codes.iter().map(|c| json!({"id": c})).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}

/// `::error file=F,line=L,col=C,endLine=E,endColumn=F,title=T::message`, escaped as the runner expects.
fn github(d: &Diag, sources: &SourceMap) -> String {
    let p = place(sources, d.span);
    let data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut message = d.message.clone();
    for (s, label) in &d.related {
        message += &format!("\n{}: {label}", sources.origin(*s));
    }
    if let Some(h) = &d.help {
        message += &format!("\nhelp: {h}");
    }
    format!(
        "::{} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
        if d.severity == Severity::Error { "error" } else { "warning" },
        prop(&p.file),
        p.line,
        p.column,
        p.end_line,
        p.end_column,
        prop(&format!("phantomc {}", d.code)),
        data(&message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> (crate::ir::Compiled, Vec<Diag>) {
        // Safe on loopback, replies and SSH, so the one finding is the shadowed rule.
        let c = crate::ir::compile(
            "t.pf",
            "policy input pass\nblock in proto tcp to port 80\npass in proto tcp to port 80\n",
        )
        .expect("compiles");
        let d = crate::analyze::lint::lint(&c);
        (c, d)
    }

    #[test]
    fn github_commands_escape_and_locate() {
        let (c, d) = findings();
        let out = render(&d, &c.sources, Format::Github, false);
        assert!(
            out.starts_with("::error file=t.pf,line=3,col=1,endLine=3,endColumn=29,title=phantomc shadowed::"),
            "{out}"
        );
        assert!(out.contains("%0At.pf:2: decides some of its packets (block)"), "{out}");
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn sarif_and_json_carry_code_level_and_region() {
        let (c, d) = findings();
        let s: Value = serde_json::from_str(&render(&d, &c.sources, Format::Sarif, false)).expect("json");
        let r = &s["runs"][0]["results"][0];
        assert_eq!((r["ruleId"].as_str(), r["level"].as_str()), (Some("shadowed"), Some("error")));
        assert_eq!(r["locations"][0]["physicalLocation"]["region"]["startLine"], 3);
        assert_eq!(r["relatedLocations"][0]["physicalLocation"]["region"]["startLine"], 2);
        let j: Value = serde_json::from_str(&render(&d, &c.sources, Format::Json, false)).expect("json");
        assert_eq!((j[0]["code"].as_str(), j[0]["line"].as_u64()), (Some("shadowed"), Some(3)));
    }
}
