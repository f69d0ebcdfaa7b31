//! The shipped systemd unit: systemd itself accepts it (no warning), its
//! command lines parse with this phantomc, and its hardening is in place.

use std::path::Path;
use std::process::Command;

use clap::Parser;
use phantomc::cli::Cli;

const UNIT: &str = include_str!("../dist/phantomc.service");

fn values(key: &str) -> Vec<&'static str> {
    UNIT.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

/// A throwaway root holding the unit and the programs it runs, as
/// `systemd-analyze --root` wants them.
fn unit_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp root");
    let put = |dest: &str, from: &Path| {
        let path = root.path().join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &path).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    put("/usr/local/bin/phantomc", Path::new(env!("CARGO_BIN_EXE_phantomc")));
    put("/bin/kill", Path::new("/bin/kill"));
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).expect("unit dir");
    std::fs::write(root.path().join("etc/systemd/system/phantomc.service"), UNIT).expect("unit");
    root
}

fn analyze(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .arg("phantomc.service")
        .output()
        .expect("systemd-analyze (apt-get install systemd) must be installed")
}

#[test]
fn systemd_accepts_the_unit_without_a_warning() {
    let root = unit_root();
    let out = analyze(root.path(), &["verify"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn the_unit_is_hardened() {
    let root = unit_root();
    let out = analyze(root.path(), &["security", "--offline=true", "--threshold=25"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for phantomc.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure} (systemd's scale: 0 safe .. 10 unsafe):\n{report}");
    assert_eq!(values("CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
    assert_eq!(values("AmbientCapabilities"), ["CAP_NET_ADMIN"]);
    assert_eq!(values("RestrictAddressFamilies"), ["AF_NETLINK AF_UNIX AF_INET AF_INET6"]);
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Type", "notify"),
    ] {
        assert_eq!(values(key), [value], "{key}");
    }
    assert!(values("SystemCallFilter").contains(&"@system-service"));
    // `@resources` is filtered (no setrlimit), so the unit itself must give
    // the API's connection cap room beside the 256 descriptors for reloads.
    let nofile: u64 = values("LimitNOFILE").first().and_then(|v| v.parse().ok()).expect("LimitNOFILE=N");
    assert!(nofile >= 256 + phantomc::serve::listen::FD_RESERVE, "LimitNOFILE={nofile}");
}

#[test]
fn the_units_command_lines_parse() {
    let start = values("ExecStart");
    assert_eq!(start.len(), 1);
    let cli = Cli::try_parse_from(start[0].split_whitespace()).unwrap_or_else(|e| panic!("ExecStart: {e}"));
    assert!(format!("{:?}", cli.command).starts_with("Watch("), "{cli:?}");
    assert_eq!(values("ExecReload"), ["/bin/kill -HUP $MAINPID"], "SIGHUP is watch's reload-now");
}
