//! The Debian packages: `dist/build-deb.sh` builds them (here around the
//! test's own binary, so the normal test run needs no release build), `dpkg`
//! installs them into a throwaway root, and the installed files work: the
//! binary runs and carries no debug info, its debug info is in the -dbgsym
//! package under its build id, `man -w` finds a page for every command, the
//! completions load, the unit verifies, the starter policy keeps SSH open,
//! and the policy is a conffile that an upgrade keeps and a purge removes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package and its -dbgsym package.
fn build_debs(out_dir: &Path) -> (PathBuf, PathBuf) {
    let out = run(Command::new("bash")
        .args([
            "dist/build-deb.sh",
            "--binary",
            env!("CARGO_BIN_EXE_phantomc"),
            "--out",
            out_dir.to_str().unwrap(),
            "--compression",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    let printed = text(&out);
    let paths: Vec<PathBuf> = printed.lines().map(PathBuf::from).collect();
    assert_eq!(paths.len(), 2, "the test binary has debug info: a .deb and a -dbgsym .deb:\n{printed}");
    (paths[0].clone(), paths[1].clone())
}

/// The names of an ELF file's sections.
fn sections(file: &Path) -> Vec<String> {
    let out = text(&run(Command::new("readelf").args(["-S", "--wide"]).arg(file)));
    out.lines().filter_map(|l| Some(l.split_once(']')?.1.split_whitespace().next()?.to_string())).collect()
}

/// `file:line` of a function address, from the debug info in `file`.
fn source_line(file: &Path, address: &str) -> String {
    text(&run(Command::new("addr2line").arg("-e").arg(file).arg(address))).trim().to_string()
}

/// An empty dpkg database under `root`, as `dpkg --root` expects it.
fn empty_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    root
}

/// dpkg into the throwaway root. Its maintainer scripts run outside a chroot
/// with `DPKG_ROOT` set (the root has no shell); nftables and libc6 are not
/// in the root's database, so dependencies are not checked.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-not-root"])
        .args(args))
}

fn subcommands(phantomc: &Path) -> Vec<String> {
    let help = text(&run(Command::new(phantomc).arg("--help")));
    let commands = help.split("Commands:").nth(1).expect("a command list").split("Options:").next().unwrap();
    commands
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_deb_installs_into_a_throwaway_root_and_everything_in_it_works() {
    let work = tempfile::tempdir().unwrap();
    let (deb, dbgsym) = build_debs(work.path());
    let fields = text(&run(Command::new("dpkg-deb").args(["--field"]).arg(&deb)));
    for field in ["Package: phantomc", "Depends: nftables", "Version: 0.1.0"] {
        assert!(fields.contains(field), "control lacks {field}:\n{fields}");
    }

    let root = empty_root();
    let r = root.path();
    dpkg(r, &["-i", deb.to_str().unwrap()]);
    let status = text(&dpkg(r, &["-s", "phantomc"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(status.contains("Conffiles:\n /etc/phantomc/policy.pf "), "{status}");

    // The binary.
    let phantomc = r.join("usr/bin/phantomc");
    assert_eq!(text(&run(Command::new(&phantomc).arg("--version"))).trim(), "phantomc 0.1.0");

    // No debug info in the package; it is in the -dbgsym package, named by
    // the binary's build id, and it still maps the binary's code to its source.
    let built = PathBuf::from(env!("CARGO_BIN_EXE_phantomc"));
    assert!(sections(&built).contains(&".debug_line".to_string()), "the test binary has line tables");
    let installed = sections(&phantomc);
    assert!(!installed.iter().any(|s| s.starts_with(".debug_") && s != ".debug_gdb_scripts"), "{installed:?}");
    assert!(installed.contains(&".symtab".to_string()) && installed.contains(&".gnu_debuglink".to_string()));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&phantomc) < size(&built), "{} vs {} bytes", size(&phantomc), size(&built));
    let fields = text(&run(Command::new("dpkg-deb").args(["--field"]).arg(&dbgsym)));
    for field in ["Package: phantomc-dbgsym", "Depends: phantomc (= 0.1.0)", "Section: debug"] {
        assert!(fields.contains(field), "dbgsym control lacks {field}:\n{fields}");
    }
    dpkg(r, &["-i", dbgsym.to_str().unwrap()]);
    let notes = text(&run(Command::new("readelf").arg("-n").arg(&phantomc)));
    let build_id = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a build id").to_string();
    let debug_file = r.join(format!("usr/lib/debug/.build-id/{}/{}.debug", &build_id[..2], &build_id[2..]));
    assert!(sections(&debug_file).contains(&".debug_line".to_string()), "{}", debug_file.display());
    let symbols = text(&run(Command::new("nm").arg("--demangle").arg(&phantomc)));
    let main = symbols
        .lines()
        .find_map(|l| l.strip_suffix(" t phantomc::main").or_else(|| l.strip_suffix(" T phantomc::main")))
        .expect("phantomc::main in the symbol table");
    let address = format!("0x{main}");
    assert!(source_line(&phantomc, &address).starts_with("??"), "no line tables left in the package's binary");
    let line = source_line(&debug_file, &address);
    assert!(line.contains("src/main.rs:"), "the debug file maps main to its source: {line}");

    // A man page for phantomc and every subcommand, found by man-db in the installed tree.
    let man_dir = r.join("usr/share/man");
    let subs = subcommands(&phantomc);
    assert!(subs.len() >= 15 && subs.contains(&"apply".to_string()), "{subs:?}");
    let pages = std::iter::once("phantomc".to_string())
        .chain(subs.iter().map(|s| format!("phantomc-{s}")))
        .chain(["phantomc-feeds-update".to_string()]);
    for page in pages {
        let found = text(&run(Command::new("man").arg("-M").arg(&man_dir).args(["-w", &page])));
        assert_eq!(PathBuf::from(found.trim()), man_dir.join(format!("man1/{page}.1.gz")));
    }
    let rendered = text(&run(Command::new("man").arg("-M").arg(&man_dir).args(["-P", "cat", "phantomc-apply"])));
    assert!(rendered.contains("--confirm"), "the apply page documents its options:\n{rendered}");

    // Completions where bash, zsh and fish look for them.
    let bash = r.join("usr/share/bash-completion/completions/phantomc");
    let loaded =
        text(&run(Command::new("bash").arg("-c").arg(format!("source {}; complete -p phantomc", bash.display()))));
    assert!(loaded.contains("phantomc"), "{loaded}");
    let zsh = std::fs::read_to_string(r.join("usr/share/zsh/vendor-completions/_phantomc")).unwrap();
    assert!(zsh.starts_with("#compdef phantomc"));
    let fish = std::fs::read_to_string(r.join("usr/share/fish/vendor_completions.d/phantomc.fish")).unwrap();
    assert!(fish.contains("complete -c phantomc"));

    // The unit runs the packaged binary and systemd accepts it. /bin/kill
    // (ExecReload) belongs to the base system, which the throwaway root lacks.
    // verify runs `man` for the unit's Documentation= pages, so MANPATH points
    // at the installed pages (and nft's, on the host).
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/phantomc.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/phantomc watch /etc/phantomc/policy.pf"), "{unit}");
    assert!(unit.contains("\nDocumentation=man:phantomc-watch(1) man:nft(8)\n"), "{unit}");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    let verify = run(Command::new("systemd-analyze")
        .env("MANPATH", format!("{}:/usr/share/man", man_dir.display()))
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("phantomc.service"));
    let said = format!("{}{}", text(&verify), String::from_utf8_lossy(&verify.stderr));
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    assert!(r.join("var/lib/phantomc").is_dir());

    // The starter policy is clean and its own tests (SSH stays open) pass.
    let policy = r.join("etc/phantomc/policy.pf");
    run(Command::new(&phantomc).arg("lint").arg(&policy).arg("--deny-warnings"));
    let tests = text(&run(Command::new(&phantomc).arg("test").arg(&policy)));
    assert!(tests.contains("9 tests: 9 passed, 0 failed"), "{tests}");

    // The policy is a conffile: a reinstall keeps the admin's edit, a purge removes it.
    std::fs::write(&policy, "# edited by the admin\npolicy input pass\n").unwrap();
    dpkg(r, &["--force-confold", "-i", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), "# edited by the admin\npolicy input pass\n");
    dpkg(r, &["--purge", "phantomc-dbgsym", "phantomc"]);
    assert!(!phantomc.exists() && !policy.exists() && !r.join("var/lib/phantomc").exists());
    assert!(!debug_file.exists());
}
