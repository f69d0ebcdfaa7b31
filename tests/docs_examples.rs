//! Runs every documentation example marked as runnable (a ```` ```sh runnable ````
//! fence in README.md, CONTRIBUTING.md or docs/**/*.md) and checks its exit
//! status and, when a ```` ```text output ```` block follows it, its output.
//! The convention is described in CONTRIBUTING.md ("Runnable documentation
//! examples"); examples that load rulesets do so inside `unshare --net`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One runnable example: where it is, and its steps, run in one shell.
#[derive(Debug)]
struct Example {
    file: PathBuf,
    line: usize,
    /// Run in a private network namespace (`unshare --net`), for examples that load rulesets.
    netns: bool,
    steps: Vec<Step>,
}

/// A command (or script) with the exit status and output it must give.
#[derive(Debug, PartialEq)]
struct Step {
    script: String,
    exit: i32,
    expected: Option<Vec<String>>,
}

/// A `console runnable` transcript: `$ command` lines, each followed by its
/// output and optionally `(exit N)`.
fn transcript_steps(body: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in body {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step { script: command.to_string(), exit: 0, expected: Some(Vec::new()) });
            continue;
        }
        let step = steps.last_mut().unwrap_or_else(|| panic!("transcript output before any `$ ` command: {line}"));
        let code = line.strip_prefix("(exit ").and_then(|rest| rest.strip_suffix(')'));
        match code {
            Some(code) => step.exit = code.parse().unwrap_or_else(|_| panic!("bad `{line}`")),
            None => step.expected.as_mut().unwrap().push(line.clone()),
        }
    }
    steps
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A fenced block: its info string, first line number (1-based) and body.
struct Fence {
    info: String,
    line: usize,
    body: Vec<String>,
    /// Index of the first line after the closing fence.
    end: usize,
}

fn fence_at(lines: &[&str], start: usize) -> Option<Fence> {
    let info = lines[start].strip_prefix("```")?.trim().to_string();
    let close = (start + 1..lines.len()).find(|&i| lines[i].trim_end() == "```")?;
    Some(Fence {
        info,
        line: start + 1,
        body: lines[start + 1..close].iter().map(|l| l.to_string()).collect(),
        end: close + 1,
    })
}

/// A runnable fence's info string: `sh runnable` (a script) or `console
/// runnable` (a transcript), then options: `exit=N` (sh only: the expected
/// status) and `netns` (run the whole example in a private network namespace).
#[derive(Debug, PartialEq)]
struct Runnable {
    transcript: bool,
    exit: i32,
    netns: bool,
}

fn runnable(info: &str) -> Option<Runnable> {
    let mut words = info.split_whitespace();
    let transcript = match words.next() {
        Some("sh") => false,
        Some("console") => true,
        _ => return None,
    };
    if words.next() != Some("runnable") {
        return None;
    }
    let mut options = Runnable { transcript, exit: 0, netns: false };
    for word in words {
        match word.strip_prefix("exit=") {
            Some(n) if !transcript => {
                options.exit = n.parse().unwrap_or_else(|_| panic!("bad exit status in ```{info}"))
            }
            _ if word == "netns" => options.netns = true,
            _ => panic!("unknown option `{word}` in ```{info}"),
        }
    }
    Some(options)
}

fn examples_in(file: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(fence) = fence_at(&lines, i) else {
            i += 1;
            continue;
        };
        i = fence.end;
        let Some(options) = runnable(&fence.info) else { continue };
        if options.transcript {
            let steps = transcript_steps(&fence.body);
            examples.push(Example { file: file.to_path_buf(), line: fence.line, netns: options.netns, steps });
            continue;
        }
        let mut next = fence.end;
        while next < lines.len() && lines[next].trim().is_empty() {
            next += 1;
        }
        let expected = match fence_at(&lines, next.min(lines.len().saturating_sub(1))) {
            Some(out) if next < lines.len() && out.info == "text output" => {
                i = out.end;
                Some(out.body)
            }
            _ => None,
        };
        let step = Step { script: fence.body.join("\n"), exit: options.exit, expected };
        examples.push(Example { file: file.to_path_buf(), line: fence.line, netns: options.netns, steps: vec![step] });
    }
    examples
}

/// Does `line` match `pattern`, where `[..]` in the pattern stands for any text?
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (k, part) in parts.iter().enumerate() {
        if k + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn without_trailing_blank_lines<S: AsRef<str>>(lines: &[S]) -> Vec<&str> {
    let mut lines: Vec<&str> = lines.iter().map(|l| l.as_ref()).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// Does the output match the expected lines, where a line `...` stands for
/// any number of lines (indented or not)? Trailing spaces are ignored:
/// editors strip them from documentation.
fn output_matches<S: AsRef<str>>(expected: &[S], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.as_ref().trim() == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual.split_first().is_some_and(|(line, more)| {
            line_matches(first.as_ref().trim_end(), line.trim_end()) && output_matches(rest, more)
        }),
    }
}

const MARK: &str = "@@phantomc-docs-step-status ";

/// Runs the example's steps in one bash (so a transcript's commands share
/// variables and the working directory) and checks each step.
fn run(example: &Example, root: &Path, bin_dir: &Path) -> Result<(), String> {
    let state = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // One pipe for both streams keeps their order; a marker line after each
    // step carries its exit status; `timeout` bounds a hang.
    let mut script = String::from("exec 2>&1\nset -o pipefail\n");
    for step in &example.steps {
        // A transcript line runs in the shell itself, so later lines see its
        // variables and directory; a script block runs with `set -eu` in a subshell.
        let body = match step.script.contains('\n') {
            true => format!("( set -eu\n{}\n)", step.script),
            false => format!("{{ {}\n}}", step.script),
        };
        script.push_str(&format!("{body}\nprintf '\\n{MARK}%d\\n' $?\n"));
    }
    let mut command = vec!["timeout", "300"];
    if example.netns {
        command.extend(["unshare", "--net"]);
    }
    command.extend(["bash", "-c", &script]);
    let out = Command::new(command[0])
        .args(&command[1..])
        .current_dir(root)
        .env("PATH", path)
        .env("PHANTOMC_STATE_DIR", state.path())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let output = String::from_utf8_lossy(&out.stdout);
    // pieces[0] is step 1's output; pieces[k] is step k's status line, then step k+1's output.
    let pieces: Vec<&str> = output.split(&format!("\n{MARK}")).collect();
    for (k, step) in example.steps.iter().enumerate() {
        let step_output = match k {
            0 => pieces[0],
            _ => pieces[k].split_once('\n').map_or("", |(_, rest)| rest),
        };
        let status = pieces.get(k + 1).and_then(|p| p.lines().next()).and_then(|s| s.trim().parse::<i32>().ok());
        let Some(status) = status else {
            return Err(format!("`{}` did not finish (killed or timed out); output:\n{output}", step.script));
        };
        if status != step.exit {
            return Err(format!(
                "`{}` exited {status}, the example says {}; output:\n{step_output}",
                step.script, step.exit
            ));
        }
        if let Some(expected) = &step.expected {
            let expected = without_trailing_blank_lines(expected);
            let lines: Vec<&str> = step_output.lines().collect();
            let actual = without_trailing_blank_lines(&lines);
            if !output_matches(&expected, &actual) {
                let documented = expected.join("\n");
                return Err(format!(
                    "`{}`: output differs.\n--- documented\n{documented}\n--- actual\n{step_output}",
                    step.script
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_runnable_documentation_example_runs_as_shown() {
    common::require_tools();
    common::require_tool("unshare");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_phantomc")).parent().unwrap().to_path_buf();
    let examples: Vec<Example> = markdown_files(root).iter().flat_map(|f| examples_in(f)).collect();
    let in_readme = examples.iter().filter(|e| e.file.ends_with("README.md") && e.file.parent() == Some(root)).count();
    assert!(in_readme >= 5, "the README's quick start should have its runnable examples, found {in_readme}");
    let mut failures = Vec::new();
    for example in &examples {
        let rel = example.file.strip_prefix(root).unwrap().display().to_string();
        match run(example, root, &bin_dir) {
            Ok(()) => eprintln!("ok   {rel}:{}", example.line),
            Err(why) => {
                eprintln!("FAIL {rel}:{}", example.line);
                failures.push(format!("{rel}:{}: {why}", example.line));
            }
        }
    }
    eprintln!("{} runnable examples, {} failed", examples.len(), failures.len());
    assert!(failures.is_empty(), "documentation examples that do not run as shown:\n\n{}", failures.join("\n\n"));
}

#[test]
fn the_output_matcher_accepts_wildcards_and_rejects_differences() {
    let expected = ["a", "  ...", "time [..]s", "end"];
    assert!(output_matches(&expected, &["a", "x", "y", "time 0.01s", "end"]));
    assert!(output_matches(&expected, &["a", "time 3s", "end"]));
    assert!(!output_matches(&expected, &["a", "time 3", "end"]));
    assert!(!output_matches(&expected, &["a", "time 3s", "end", "more"]));
    assert!(!output_matches(&expected, &["b", "time 3s", "end"]));
    assert!(line_matches("[..]", "anything"));
    assert!(!line_matches("x[..]y[..]z", "xyy"));
}

#[test]
fn runnable_fences_and_their_output_blocks_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.md");
    std::fs::write(
        &doc,
        concat!(
            "```sh\nnot run\n```\n\n```sh runnable\necho hi\n```\n\n```text output\nhi\n```\n\n",
            "```sh runnable exit=5\nexit 5\n```\n",
            "```console runnable netns\n$ echo a\na\n$ false\n(exit 1)\n```\n",
        ),
    )
    .unwrap();
    let found = examples_in(&doc);
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].line, 5);
    assert_eq!(found[0].steps, vec![Step { script: "echo hi".into(), exit: 0, expected: Some(vec!["hi".into()]) }]);
    assert_eq!(found[1].steps, vec![Step { script: "exit 5".into(), exit: 5, expected: None }]);
    let transcript = vec![
        Step { script: "echo a".into(), exit: 0, expected: Some(vec!["a".into()]) },
        Step { script: "false".into(), exit: 1, expected: Some(vec![]) },
    ];
    assert_eq!(found[2].steps, transcript);
    assert!(found[2].netns && !found[0].netns);
}

#[test]
fn a_wrong_exit_status_or_output_is_reported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = |steps| Example { file: root.join("x.md"), line: 1, netns: false, steps };
    let step = |script: &str, exit, expected: &[&str]| Step {
        script: script.into(),
        exit,
        expected: Some(expected.iter().map(|s| s.to_string()).collect()),
    };
    let good = example(vec![step("echo a; echo b", 0, &["a", "b"]), step("sh -c 'echo c >&2; exit 3'", 3, &["c"])]);
    assert_eq!(run(&good, root, root), Ok(()));
    let wrong_exit = example(vec![step("echo a", 0, &["a"]), step("false", 0, &[])]);
    assert!(run(&wrong_exit, root, root).unwrap_err().contains("`false` exited 1"));
    let wrong_output = example(vec![step("echo a", 0, &["b"])]);
    assert!(run(&wrong_output, root, root).unwrap_err().contains("output differs"));
}
