//! Applies a unified diff (as [`super::propose`] writes them) to a text:
//! every hunk's context and removed lines must still be there, at the line
//! the hunk names or (the file changed elsewhere) at exactly one other
//! place. Otherwise the diff is stale and nothing is applied.

/// One hunk: the lines it expects and the lines it leaves.
struct Hunk {
    /// 0-based line the hunk starts at in the old text.
    at: usize,
    old: Vec<String>,
    new: Vec<String>,
    /// The new side's last line has no newline (`\ No newline at end of file`).
    new_unterminated: bool,
}

/// Why a diff does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the diff is malformed: {0}")]
    Malformed(String),
    #[error("hunk {hunk} (at line {line}) no longer matches the file: {why}")]
    Stale { hunk: usize, line: usize, why: String },
}

fn hunks(diff: &str) -> Result<Vec<Hunk>, PatchError> {
    let mut out: Vec<Hunk> = Vec::new();
    let mut last_sign = None;
    for line in diff.lines() {
        if let Some(header) = line.strip_prefix("@@ ") {
            let old = header.split_whitespace().next().and_then(|r| r.strip_prefix('-'));
            let start = old
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| PatchError::Malformed(format!("bad hunk header `{line}`")))?;
            // `-0,0` (an empty file) and `-N` both name the line before or at N.
            out.push(Hunk { at: start.saturating_sub(1), old: Vec::new(), new: Vec::new(), new_unterminated: false });
            continue;
        }
        let Some(h) = out.last_mut() else { continue };
        if !line.starts_with('\\') {
            last_sign = line.chars().next();
        }
        match line.split_at_checked(1) {
            Some((" ", rest)) => {
                h.old.push(rest.to_string());
                h.new.push(rest.to_string());
            }
            Some(("-", rest)) => h.old.push(rest.to_string()),
            Some(("+", rest)) => h.new.push(rest.to_string()),
            // "\ No newline at end of file", about the line before it.
            Some(("\\", _)) => h.new_unterminated |= last_sign != Some('-'),
            _ if line.is_empty() => {
                h.old.push(String::new());
                h.new.push(String::new());
            }
            _ => return Err(PatchError::Malformed(format!("unexpected line `{line}`"))),
        }
    }
    if out.is_empty() {
        return Err(PatchError::Malformed("no hunks".into()));
    }
    Ok(out)
}

/// `text` with `diff` applied, or why it does not apply.
pub fn apply(text: &str, diff: &str) -> Result<String, PatchError> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut offset: isize = 0;
    let mut terminated = text.ends_with('\n') || text.is_empty();
    for (i, h) in hunks(diff)?.into_iter().enumerate() {
        let wanted = h.at.saturating_add_signed(offset);
        let matches_at = |at: usize| at + h.old.len() <= lines.len() && lines[at..at + h.old.len()] == h.old[..];
        let at = if matches_at(wanted) {
            wanted
        } else {
            let found: Vec<usize> = (0..=lines.len().saturating_sub(h.old.len())).filter(|&a| matches_at(a)).collect();
            match found.as_slice() {
                [one] if !h.old.is_empty() => *one,
                [] | [_] => {
                    return Err(PatchError::Stale {
                        hunk: i + 1,
                        line: h.at + 1,
                        why: "its context lines are not in the file any more".into(),
                    })
                }
                _ => {
                    return Err(PatchError::Stale {
                        hunk: i + 1,
                        line: h.at + 1,
                        why: format!("its context is at {} places now", found.len()),
                    })
                }
            }
        };
        offset += h.new.len() as isize - h.old.len() as isize + at as isize - wanted as isize;
        if at + h.old.len() == lines.len() {
            terminated = !h.new_unterminated;
        }
        lines.splice(at..at + h.old.len(), h.new);
    }
    let mut out = lines.join("\n");
    if terminated && !lines.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(a: &str, b: &str) -> String {
        similar::TextDiff::from_lines(a, b).unified_diff().context_radius(3).header("a/p.pf", "b/p.pf").to_string()
    }

    const OLD: &str = "table t\npolicy input block\npass in on lo\npass in state established\npass in proto tcp to port 22\npass in proto tcp to port 80\n";

    #[test]
    fn a_diff_applies_where_it_was_made_and_after_edits_elsewhere() {
        let new = OLD.replace("pass in state established\n", "pass in state established\nblock in from <x>\n")
            + "pass in proto tcp to port 443\n";
        let d = diff(OLD, &new);
        assert_eq!(apply(OLD, &d).expect("applies"), new);
        // Lines added above the hunks: the hunks move down with them.
        let edited = format!("# a comment\n# another\n{OLD}");
        assert_eq!(apply(&edited, &d).expect("applies moved"), format!("# a comment\n# another\n{new}"));
    }

    #[test]
    fn a_changed_context_is_stale() {
        let new = OLD.replace("pass in state established\n", "pass in state established\nblock in from <x>\n");
        let d = diff(OLD, &new);
        let edited = OLD.replace("pass in state established", "pass in state { established, related }");
        let err = apply(&edited, &d).unwrap_err();
        assert!(matches!(err, PatchError::Stale { hunk: 1, .. }), "{err}");
        assert!(err.to_string().contains("no longer matches"), "{err}");
        assert!(matches!(apply(OLD, "not a diff"), Err(PatchError::Malformed(_))));
    }

    #[test]
    fn text_without_final_newline_and_empty_files() {
        let d = diff("a\nb", "a\nb\nc\n");
        assert_eq!(apply("a\nb", &d).expect("applies"), "a\nb\nc\n");
        let d = diff("", "x\n");
        assert_eq!(apply("", &d).expect("applies to empty"), "x\n");
    }
}
