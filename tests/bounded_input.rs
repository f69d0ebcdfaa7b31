//! Policy input is bounded: includes must be regular files under a size cap,
//! and expanding includes and defines stops at a budget with a diagnostic.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `phantomc compile` on `policy` as a child, killed after 30 s so a
/// hang fails the test instead of wedging it.
fn compile(policy: &Path, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phantomc"))
        .arg("compile")
        .arg(policy)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run phantomc");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("phantomc compile {} hung", policy.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn include_of_a_device_is_refused() {
    let out = compile(Path::new("testdata/errors/90-include-device.pf"), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("90-include-device.pf:2:9"), "{err}");
    assert!(err.contains("it is a character device, not a regular file"), "{err}");
}

#[test]
fn include_of_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rules.pf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let main = dir.path().join("main.pf");
    std::fs::write(&main, "pass in proto tcp to port 22\ninclude \"rules.pf\"\n").unwrap();
    let out = compile(&main, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("include-unreadable") && err.contains("main.pf:2:9"), "{err}");
    assert!(err.contains("it is a FIFO, not a regular file"), "{err}");
}

#[test]
fn include_over_the_size_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.pf"), "pass in proto tcp to port 22\n".repeat(10)).unwrap();
    let main = dir.path().join("main.pf");
    std::fs::write(&main, "include \"big.pf\"\n").unwrap();
    let out = compile(&main, &[("PHANTOMC_MAX_INCLUDE_BYTES", "100")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("larger than the cap of 100 bytes"), "{err}");
    // The same file under the default cap compiles.
    assert_eq!(compile(&main, &[]).status.code(), Some(0));
}

/// level N includes level N-1 eight times: 8^10 rules if expanded in full.
fn repeated_includes(dir: &Path, levels: usize) -> std::path::PathBuf {
    std::fs::write(dir.join("l0.pf"), "pass in proto tcp to port 22\n").unwrap();
    for level in 1..=levels {
        std::fs::write(dir.join(format!("l{level}.pf")), format!("include \"l{}.pf\"\n", level - 1).repeat(8)).unwrap();
    }
    dir.join(format!("l{levels}.pf"))
}

#[test]
fn repeated_includes_stop_at_the_statement_budget() {
    let dir = tempfile::tempdir().unwrap();
    let top = repeated_includes(dir.path(), 10);
    let out = compile(&top, &[("PHANTOMC_MAX_STATEMENTS", "5000")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("expansion-limit") && err.contains("grows past 5000 statements"), "{err}");
    assert_eq!(err.matches("expansion-limit").count(), 1, "reported once: {err}");
    // Three levels (512 rules) are within the same budget.
    let small = repeated_includes(dir.path(), 3);
    let out = compile(&small, &[("PHANTOMC_MAX_STATEMENTS", "5000")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn repeated_includes_stop_at_the_text_budget() {
    let dir = tempfile::tempdir().unwrap();
    let top = repeated_includes(dir.path(), 10);
    let out = compile(&top, &[("PHANTOMC_MAX_POLICY_BYTES", "20000")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("grows past 20000 bytes of included text"), "{err}");
}

#[test]
fn doubling_defines_stop_at_the_element_budget() {
    let out = compile(Path::new("testdata/errors/91-doubling-defines.pf"), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "no abort: {err}");
    assert!(err.contains("grows past 1000000 elements"), "{err}");
    assert!(err.contains("91-doubling-defines.pf:20:21"), "{err}");
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_statement() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inc.pf"), "\u{feff}pass in proto tcp to port 80\n").unwrap();
    let main = dir.path().join("main.pf");
    std::fs::write(&main, "\u{feff}pass in proto tcp to port 22\ninclude \"inc.pf\"\n").unwrap();
    let out = compile(&main, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
