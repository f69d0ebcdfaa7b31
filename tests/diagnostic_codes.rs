//! Every diagnostic code of the catalog (`phantomc codes`, src/diag/codes.rs)
//! is reported by its example: one test case per code, named after it, runs
//! the example's command and finds the code in what it prints; each has a
//! snapshot. Also: every code in the source is in the catalog, and
//! docs/diagnostics.md holds the generated catalog.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use phantomc::diag::codes::{self, Code};
use phantomc::diag::render_plain;

/// Runs the example's command; its output (stdout and stderr).
fn run_example(code: Code) -> String {
    let info = code.info();
    assert!(
        info.command.contains(&format!("testdata/errors/{}", info.fixture)),
        "{}: the command does not use the fixture",
        info.code
    );
    let mut words = info.command.split_whitespace().peekable();
    let mut envs = Vec::new();
    while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
        envs.push((k.to_string(), v.to_string()));
        words.next();
    }
    assert_eq!(words.next(), Some("phantomc"), "{}", info.command);
    let args: Vec<&str> = words.collect();
    let out = if args[0] == "apply" {
        // The lockout guard checks the sessions of a namespace of its own.
        let ns = common::Netns::new("codes");
        ns.phantomc(&args)
    } else {
        Command::new(env!("CARGO_BIN_EXE_phantomc")).args(&args).envs(envs).output().expect("run phantomc")
    };
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// nft refusing a rule needs an nft that refuses: the refusal nft prints
/// for the example's first rule is mapped back to the policy line.
fn nft_refusal() -> String {
    let path = "testdata/errors/nft-refused.pf";
    let compiled = phantomc::ir::compile_file(Path::new(path)).expect("the example compiles");
    let out = Command::new(env!("CARGO_BIN_EXE_phantomc")).args(["compile", path]).output().expect("run phantomc");
    let script = String::from_utf8(out.stdout).expect("utf-8");
    let line = script.lines().position(|l| l.contains("comment \"nft-refused.pf:3")).expect("rule of line 3") + 1;
    let stderr = format!("/dev/stdin:{line}:1-20: Error: Could not process rule: No such file or directory\n");
    let diag = phantomc::nft::locate_script_error(&stderr, &script, &compiled.ruleset).expect("located");
    render_plain(&[diag], &compiled.sources)
}

fn check(code: Code) {
    let info = code.info();
    let fixture = format!("testdata/errors/{}", info.fixture);
    assert!(Path::new(&fixture).is_file(), "{}: no fixture {fixture}", info.code);
    let text = if code == Code::NftRefused { nft_refusal() } else { run_example(code) };
    assert!(
        text.lines().any(|l| l.trim() == info.code),
        "{}: `{}` does not report it:\n{text}",
        info.code,
        info.command
    );
    // Broken policies of the compile corpus have their snapshot there.
    let compile_snapshot =
        format!("tests/snapshots/compile_snapshots__error-{}.snap", info.fixture.trim_end_matches(".pf"));
    if info.fixture.as_bytes()[0].is_ascii_digit() {
        let snap = std::fs::read_to_string(&compile_snapshot).unwrap_or_else(|e| panic!("{compile_snapshot}: {e}"));
        assert!(snap.lines().any(|l| l.trim() == info.code), "{compile_snapshot} does not show {}", info.code);
    } else {
        insta::assert_snapshot!(info.code, text);
    }
}

macro_rules! one_case_per_code {
    ($($test:ident => $code:ident,)*) => {
        $(
            #[test]
            fn $test() {
                check(Code::$code);
            }
        )*

        #[test]
        fn every_code_of_the_catalog_has_a_case() {
            let cased: BTreeSet<Code> = [$(Code::$code,)*].into_iter().collect();
            let all: BTreeSet<Code> = Code::ALL.iter().copied().collect();
            assert_eq!(all.difference(&cased).collect::<Vec<_>>(), Vec::<&Code>::new(), "add a case for each");
        }
    };
}

one_case_per_code! {
    syntax => Syntax,
    unknown_define => UnknownDefine,
    duplicate_define => DuplicateDefine,
    port_on_portless => PortOnPortless,
    family_mismatch => FamilyMismatch,
    unknown_set => UnknownSet,
    duplicate_set => DuplicateSet,
    host_bits => HostBits,
    bad_address => BadAddress,
    bad_prefix => BadPrefix,
    bad_port_range => BadPortRange,
    bad_port => BadPort,
    port_without_proto => PortWithoutProto,
    icmp_without_proto => IcmpWithoutProto,
    unknown_icmp_type => UnknownIcmpType,
    unknown_proto => UnknownProto,
    unknown_state => UnknownState,
    iface_direction => IfaceDirection,
    duplicate_clause => DuplicateClause,
    ct_mark => CtMark,
    urpf_rule => UrpfRule,
    self_match => SelfMatch,
    flowtable => Flowtable,
    offload_device => OffloadDevice,
    flowtable_unsupported => FlowtableUnsupported,
    nat_direction => NatDirection,
    nat_target => NatTarget,
    duplicate_policy => DuplicatePolicy,
    type_mismatch => TypeMismatch,
    bad_iface => BadIface,
    iface_negation => IfaceNegation,
    bad_limit => BadLimit,
    proto_conflict => ProtoConflict,
    no_port_for_proto => NoPortForProto,
    empty_set => EmptySet,
    duplicate_table => DuplicateTable,
    bad_table => BadTable,
    feed_source => FeedSource,
    set_list => SetList,
    include_cycle => IncludeCycle,
    include_missing => IncludeMissing,
    include_unreadable => IncludeUnreadable,
    include_depth => IncludeDepth,
    expansion_limit => ExpansionLimit,
    long_log_prefix => LongLogPrefix,
    long_label => LongLabel,
    feed_option => FeedOption,
    duplicate_option => DuplicateOption,
    feed_key => FeedKey,
    feed_refresh => FeedRefresh,
    bad_date => BadDate,
    bad_exclusion => BadExclusion,
    entry_timeout => EntryTimeout,
    reject_with => RejectWith,
    early_rule => EarlyRule,
    notrack_rule => NotrackRule,
    bad_counter_name => BadCounterName,
    bad_mark => BadMark,
    match_rule => MatchRule,
    bad_priority => BadPriority,
    adaptive_option => AdaptiveOption,
    adaptive_set => AdaptiveSet,
    duplicate_adaptive => DuplicateAdaptive,
    bad_number => BadNumber,
    bad_proto => BadProto,
    icmp_on_non_icmp => IcmpOnNonIcmp,
    nat_option => NatOption,
    nat_port => NatPort,
    log_limit => LogLimit,
    bad_log_group => BadLogGroup,
    unknown_service => UnknownService,
    bad_quota => BadQuota,
    never_matches => NeverMatches,
    after_catch_all => AfterCatchAll,
    shadowed => Shadowed,
    redundant => Redundant,
    exempts_nothing => ExemptsNothing,
    unused_define => UnusedDefine,
    unused_set => UnusedSet,
    overlapping_entries => OverlappingEntries,
    feed_overlaps_allow => FeedOverlapsAllow,
    expired => Expired,
    expires_soon => ExpiresSoon,
    drops_loopback => DropsLoopback,
    drops_established => DropsEstablished,
    no_management_access => NoManagementAccess,
    rule_in_pftest => RuleInPftest,
    test_failed => TestFailed,
    bad_packet => BadPacket,
    lockout => Lockout,
    nft_refused => NftRefused,
}

/// String literals where a diagnostic code goes: `Diag::error("code", ...)`,
/// `Diag::warning(`, `.diag(`, feed problems and the include match.
fn codes_in_source() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![Path::new("src").to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("codes.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for opener in ["Diag::error(", "Diag::warning(", "diag(", "problem(", "=> \"include-"] {
                for (at, _) in text.match_indices(opener) {
                    let rest = text[at + opener.len()..].trim_start();
                    let rest = if opener.starts_with("=>") { &text[at + 4..] } else { rest };
                    if let Some(lit) = rest.strip_prefix('"') {
                        let word: String = lit.chars().take_while(|c| *c != '"').collect();
                        if !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                            found.insert(word);
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_code_in_the_source_is_in_the_catalog() {
    let found = codes_in_source();
    assert!(found.len() >= 60, "the scan found only {found:?}");
    let unknown: Vec<&String> = found.iter().filter(|c| Code::named(c).is_none()).collect();
    assert!(unknown.is_empty(), "codes reported but not in src/diag/codes.rs (a typo?): {unknown:?}");
}

const BEGIN: &str = "<!-- catalog: generated by `phantomc codes --markdown`; edit src/diag/codes.rs -->\n";
const END: &str = "<!-- end of catalog -->";

#[test]
fn docs_diagnostics_md_holds_the_generated_catalog() {
    let path = "docs/diagnostics.md";
    let doc = std::fs::read_to_string(path).expect("docs/diagnostics.md");
    let (head, rest) = doc.split_once(BEGIN).expect("the catalog's begin marker");
    let (catalog, tail) = rest.split_once(END).expect("the catalog's end marker");
    let want = codes::markdown();
    if catalog != want && std::env::var_os("PHANTOMC_BLESS").is_some() {
        std::fs::write(path, format!("{head}{BEGIN}{want}{END}{tail}")).expect("write docs/diagnostics.md");
        return;
    }
    assert!(
        catalog == want,
        "docs/diagnostics.md is not the generated catalog: run `PHANTOMC_BLESS=1 cargo test --test diagnostic_codes`"
    );
}
