//! The catalog of diagnostic codes: every code phantomc reports, with a
//! summary, an explanation and an example (a fixture under
//! `testdata/errors` and the command that reports it). `phantomc codes`
//! prints it; `docs/diagnostics.md` is generated from it; the
//! `diagnostic_codes` test runs every example.

use super::Severity;

/// One catalog entry.
#[derive(Debug)]
pub struct CodeInfo {
    pub code: &'static str,
    pub severity: Severity,
    /// The example policy, under `testdata/errors/`.
    pub fixture: &'static str,
    /// Its text.
    pub example: &'static str,
    /// The command that reports the code for the example.
    pub command: &'static str,
    pub summary: &'static str,
    pub explanation: &'static str,
}

macro_rules! catalog {
    ($($variant:ident = $code:literal, $severity:ident, $fixture:literal, $command:literal, $summary:literal, $explanation:literal;)*) => {
        /// Every diagnostic code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn info(self) -> &'static CodeInfo {
                match self {
                    $(Code::$variant => &CodeInfo {
                        code: $code,
                        severity: Severity::$severity,
                        fixture: $fixture,
                        example: include_str!(concat!("../../testdata/errors/", $fixture)),
                        command: $command,
                        summary: $summary,
                        explanation: $explanation,
                    },)*
                }
            }
        }
    };
}

impl Code {
    pub fn as_str(self) -> &'static str {
        self.info().code
    }

    /// The code called `name`.
    pub fn named(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

catalog! {
    Syntax = "syntax", Error, "01-syntax-allow.pf", "phantomc compile testdata/errors/01-syntax-allow.pf",
        r#"the policy does not parse"#,
        r#"The text does not follow the policy grammar (`grammar/policy.pest`). The diagnostic points at the first token the parser could not use and says what it expected there. A misspelt keyword gets a "did you mean" (`prot` -> `proto`), and the words other firewalls use get phantomc's (`allow`/`accept` -> `pass`, `deny`/`drop` -> `block`)."#;
    UnknownDefine = "unknown-define", Error, "02-unknown-define.pf", "phantomc compile testdata/errors/02-unknown-define.pf",
        r#"a `$name` that no define declares"#,
        r#"A `$name` stands for the value of a `define`. Declare it with `define name = ...` before the first use; a define written later in the file is reported as used before it is defined, and a close spelling gets a "did you mean"."#;
    DuplicateDefine = "duplicate-define", Error, "04-duplicate-define.pf", "phantomc compile testdata/errors/04-duplicate-define.pf",
        r#"a define name declared twice"#,
        r#"Each define name can be declared once, in the policy and everything it includes. The second declaration is marked and the first is shown; rename one of them."#;
    PortOnPortless = "port-on-portless", Error, "05-port-on-icmp.pf", "phantomc compile testdata/errors/05-port-on-icmp.pf",
        r#"a port on a protocol without ports"#,
        r#"Port clauses match the port fields of TCP, UDP, UDP-Lite, SCTP and DCCP. ICMP and other protocols have no ports, so such a rule could never match. Drop the port or the protocol."#;
    FamilyMismatch = "family-mismatch", Error, "07-family-mismatch.pf", "phantomc compile testdata/errors/07-family-mismatch.pf",
        r#"IPv4 and IPv6 that can never match together"#,
        r#"A rule whose source and destination (or an address and an explicit `ipv4`/`ipv6`, or a NAT address and its rule) are of different address families matches no packet. Split it into one rule per family or fix the address."#;
    UnknownSet = "unknown-set", Error, "08-undefined-set.pf", "phantomc compile testdata/errors/08-undefined-set.pf",
        r#"a `<set>` that no set or feed declares"#,
        r#"`<name>` refers to a `set` or a `feed` of the policy. Sets and feeds may be used before their statement, but they must exist; a close spelling gets a "did you mean"."#;
    DuplicateSet = "duplicate-set", Error, "09-duplicate-set.pf", "phantomc compile testdata/errors/09-duplicate-set.pf",
        r#"a set or feed name declared twice"#,
        r#"Sets and feeds share one namespace (both become nft sets). The second declaration is marked and the first is shown; rename one of them."#;
    HostBits = "host-bits", Error, "10-host-bits.pf", "phantomc compile testdata/errors/10-host-bits.pf",
        r#"a network written with host bits set"#,
        r#"`10.0.0.1/8` is ambiguous: the network `10.0.0.0/8` or the host `10.0.0.1`? phantomc refuses to guess and the help offers both."#;
    BadAddress = "bad-address", Error, "11-bad-octet.pf", "phantomc compile testdata/errors/11-bad-octet.pf",
        r#"not an IP address or network"#,
        r#"The value is not an IPv4 or IPv6 address or network (an octet over 255, a stray character, a port written with a colon). Write the address in the usual notation."#;
    BadPrefix = "bad-prefix", Error, "12-prefix-too-long.pf", "phantomc compile testdata/errors/12-prefix-too-long.pf",
        r#"a prefix length longer than the address"#,
        r#"A prefix is at most /32 for IPv4 and /128 for IPv6."#;
    BadPortRange = "bad-port-range", Error, "13-port-range-backwards.pf", "phantomc compile testdata/errors/13-port-range-backwards.pf",
        r#"a port range that runs backwards"#,
        r#"In `A-B` the first port must not be greater than the second."#;
    BadPort = "bad-port", Error, "14-port-out-of-range.pf", "phantomc compile testdata/errors/14-port-out-of-range.pf",
        r#"a port outside 0-65535"#,
        r#"Ports are 16-bit numbers, 0 to 65535, or a known service name such as `ssh`."#;
    PortWithoutProto = "port-without-proto", Error, "15-port-without-proto.pf", "phantomc compile testdata/errors/15-port-without-proto.pf",
        r#"a port clause without a protocol"#,
        r#"A port means nothing without a protocol that has ports: add `proto tcp`, `proto udp` or `proto { tcp, udp }`."#;
    IcmpWithoutProto = "icmp-without-proto", Error, "16-icmp-type-without-proto.pf", "phantomc compile testdata/errors/16-icmp-type-without-proto.pf",
        r#"`icmp-type` without `proto icmp` or `icmpv6`"#,
        r#"ICMP types exist only in ICMP and ICMPv6 headers: add `proto icmp` or `proto icmpv6`."#;
    UnknownIcmpType = "unknown-icmp-type", Error, "17-icmpv6-type-on-icmp.pf", "phantomc compile testdata/errors/17-icmpv6-type-on-icmp.pf",
        r#"an ICMP type name the protocol does not have"#,
        r#"ICMP and ICMPv6 have different type names and numbers (`echo-request` is in both; `nd-neighbor-solicit` only in ICMPv6). The help lists the names of the rule's protocol."#;
    UnknownProto = "unknown-proto", Error, "18-unknown-proto.pf", "phantomc compile testdata/errors/18-unknown-proto.pf",
        r#"a protocol name phantomc does not know"#,
        r#"Use a known name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `gre`, `esp`, `ah`, ...) or the protocol number."#;
    UnknownState = "unknown-state", Error, "19-unknown-state.pf", "phantomc compile testdata/errors/19-unknown-state.pf",
        r#"a conntrack state that does not exist"#,
        r#"`state` takes `new`, `established`, `related`, `invalid` and `untracked`."#;
    IfaceDirection = "iface-direction", Error, "20-out-on-in-rule.pf", "phantomc compile testdata/errors/20-out-on-in-rule.pf",
        r#"an interface clause the hook cannot see"#,
        r#"Incoming packets have only an input interface (`on`), outgoing ones only an output interface (`out on`); forwarded rules must say which one (`in on` or `out on`)."#;
    DuplicateClause = "duplicate-clause", Error, "22-duplicate-clause.pf", "phantomc compile testdata/errors/22-duplicate-clause.pf",
        r#"the same clause twice in one rule"#,
        r#"A rule has at most one clause of each kind (`from`, `to`, `proto`, `counter`/`nocounter`, ...). Merge the values into one list."#;
    NatDirection = "nat-direction", Error, "23-masquerade-in.pf", "phantomc compile testdata/errors/23-masquerade-in.pf",
        r#"a NAT rule in the wrong direction"#,
        r#"`masquerade` and `snat` rewrite the source of outgoing packets (`out on`); `dnat` rewrites the destination of incoming ones (`in on`)."#;
    NatTarget = "nat-target", Error, "24-dnat-without-target.pf", "phantomc compile testdata/errors/24-dnat-without-target.pf",
        r#"a missing or wrong NAT target"#,
        r#"`snat` and `dnat` need `-> ADDRESS [port N]` with a single address; `masquerade` takes none (it uses the interface's address)."#;
    DuplicatePolicy = "duplicate-policy", Error, "25-duplicate-policy.pf", "phantomc compile testdata/errors/25-duplicate-policy.pf",
        r#"a hook's default policy set twice"#,
        r#"Each of input, forward and output has one default policy; the second one is marked."#;
    TypeMismatch = "type-mismatch", Error, "26-address-as-port.pf", "phantomc compile testdata/errors/26-address-as-port.pf",
        r#"a value of the wrong kind for its clause"#,
        r#"An address where a port goes, a port where an address goes, or a hostname: phantomc never resolves names, so write the address."#;
    BadIface = "bad-iface", Error, "27-iface-too-long.pf", "phantomc compile testdata/errors/27-iface-too-long.pf",
        r#"an interface name the kernel cannot have"#,
        r#"Interface names are 1 to 15 bytes (IFNAMSIZ)."#;
    IfaceNegation = "iface-negation", Error, "140-iface-list-exclusion.pf", "phantomc compile testdata/errors/140-iface-list-exclusion.pf",
        r#"an interface list that excludes one of its entries"#,
        r#"A packet's interface has one name, so `on { eth0, !docker0 }` cannot mean anything an address list's exclusion would. Negate the whole clause instead: `on !docker0` or `on !{ docker0, br-* }` matches every interface but those."#;
    BadLimit = "bad-limit", Error, "28-rate-zero.pf", "phantomc compile testdata/errors/28-rate-zero.pf",
        r#"a rate limit or burst of zero"#,
        r#"`limit N/unit [burst M]` needs N and M of at least 1; a zero limit would match nothing."#;
    ProtoConflict = "proto-conflict", Error, "31-service-proto-conflict.pf", "phantomc compile testdata/errors/31-service-proto-conflict.pf",
        r#"a service's protocol that conflicts with the rule's"#,
        r#"A port written with its protocol (`udp 53`) must agree with the rule's `proto`."#;
    NoPortForProto = "no-port-for-proto", Error, "110-no-port-for-proto.pf", "phantomc compile testdata/errors/110-no-port-for-proto.pf",
        r#"no port of the list fits the rule's protocols"#,
        r#"Every port in the lists is tied to a protocol the rule does not match together with the other port list, so the rule would expand to nothing. Fix the protocols of the ports or of the rule."#;
    EmptySet = "empty-set", Error, "33-empty-set.pf", "phantomc compile testdata/errors/33-empty-set.pf",
        r#"a static set with no entries"#,
        r#"A set declared with `= { }` can never match. Give it entries, or make it `dynamic` if it is filled at run time."#;
    DuplicateTable = "duplicate-table", Error, "36-duplicate-table.pf", "phantomc compile testdata/errors/36-duplicate-table.pf",
        r#"the table named twice"#,
        r#"A policy owns exactly one nft table; `table NAME` may appear once."#;
    BadTable = "bad-table", Error, "102-bad-table.pf", "phantomc compile testdata/errors/102-bad-table.pf",
        r#"a table name nft cannot use"#,
        r#"Table names are at most 64 letters, digits, `_` and `-`."#;
    FeedSource = "feed-source", Error, "37-feed-without-source.pf", "phantomc compile testdata/errors/37-feed-without-source.pf",
        r#"a feed without a source"#,
        r#"A feed needs `source "PATH"` or `source "https://..."`, unless a `provider` preset gives the URL."#;
    SetList = "set-list", Error, "38-set-mixed-with-addresses.pf", "phantomc compile testdata/errors/38-set-mixed-with-addresses.pf",
        r#"a `<set>` mixed with addresses in one list"#,
        r#"A list is either addresses or one set; nft cannot match both in one expression. Write two rules, or put the addresses in the set."#;
    IncludeCycle = "include-cycle", Error, "39-include-cycle.pf", "phantomc compile testdata/errors/39-include-cycle.pf",
        r#"a policy that includes itself"#,
        r#"An include chain leads back to a file already being read."#;
    IncludeMissing = "include-missing", Error, "40-include-missing.pf", "phantomc compile testdata/errors/40-include-missing.pf",
        r#"an include that cannot be read"#,
        r#"The included file does not exist or cannot be read. Paths are relative to the including file."#;
    IncludeUnreadable = "include-unreadable", Error, "90-include-device.pf", "phantomc compile testdata/errors/90-include-device.pf",
        r#"an include that is not a regular file or is too large"#,
        r#"Includes must be regular files of at most `PHANTOMC_MAX_INCLUDE_BYTES` (16 MiB); devices and FIFOs are refused before they are read."#;
    IncludeDepth = "include-depth", Error, "111-include-depth.pf", "phantomc compile testdata/errors/111-include-depth.pf",
        r#"includes nested too deeply"#,
        r#"Includes nest at most 16 levels deep."#;
    ExpansionLimit = "expansion-limit", Error, "91-doubling-defines.pf", "phantomc compile testdata/errors/91-doubling-defines.pf",
        r#"a policy that expands past the element or byte limits"#,
        r#"Defines that double each other, or very large included text, would expand without bound; lowering stops at `PHANTOMC_MAX_ELEMENTS` elements and `PHANTOMC_MAX_POLICY_BYTES` bytes of included text."#;
    LongLogPrefix = "long-log-prefix", Error, "42-long-log-prefix.pf", "phantomc compile testdata/errors/42-long-log-prefix.pf",
        r#"a log prefix over nft's 127 bytes"#,
        r#"The log prefix is the table name, the rule's origin and the log text; nft accepts at most 127 bytes. Shorten the log text."#;
    LongLabel = "long-label", Error, "107-long-label.pf", "phantomc compile testdata/errors/107-long-label.pf",
        r#"a label too long for an nft comment"#,
        r#"A rule's label is kept in its nft comment with the origin, at most 128 bytes in all."#;
    FeedOption = "feed-option", Error, "43-feed-bad-options.pf", "phantomc compile testdata/errors/43-feed-bad-options.pf",
        r#"a feed or provider option that is unknown or out of range"#,
        r#"Each feed option has a type and a range (`format` one of plain, spamhaus, netset, csv, otx; `refresh` a duration; `max-shrink` a percentage; ...). The help says what is accepted."#;
    DuplicateOption = "duplicate-option", Error, "104-duplicate-option.pf", "phantomc compile testdata/errors/104-duplicate-option.pf",
        r#"a feed or adaptive option given twice"#,
        r#"Each option of a `feed`, `provider` or `adaptive` block may appear once."#;
    FeedKey = "feed-key", Error, "70-provider-without-key.pf", "phantomc compile testdata/errors/70-provider-without-key.pf",
        r#"a feed key that is missing, given twice, or would leak"#,
        r#"Keyed providers need exactly one of `key-file`, `key-env` or `key-credential`; a key is never sent over plain `http`."#;
    FeedRefresh = "feed-refresh", Error, "105-feed-refresh.pf", "phantomc compile testdata/errors/105-feed-refresh.pf",
        r#"a refresh more often than the provider allows"#,
        r#"Each provider preset has a minimum refresh interval from its published limits; polling faster gets the key banned."#;
    BadDate = "bad-date", Error, "45-bad-date.pf", "phantomc compile testdata/errors/45-bad-date.pf",
        r#"an `expires` date that is not a real YYYY-MM-DD"#,
        r#"`expires` takes a calendar date such as `2026-12-31`."#;
    BadExclusion = "bad-exclusion", Error, "46-exclusion-outside.pf", "phantomc compile testdata/errors/46-exclusion-outside.pf",
        r#"an exclusion that does not cut anything sensible"#,
        r#"An excluded network (`!net` in a list, `except`) must lie inside what it is excluded from, must not remove all of it, and must be an address, not a set or name."#;
    EntryTimeout = "entry-timeout", Error, "120-entry-timeout-in-rule.pf", "phantomc compile testdata/errors/120-entry-timeout-in-rule.pf",
        r#"an entry `timeout` outside a named set, on an exclusion, or out of range"#,
        r#"Only the elements of a named set can time out in nft: declare `set NAME = { ADDRESS timeout 1h }` and match `<NAME>`. A timeout is 1s to 4294967295s; an exclusion has none."#;
    RejectWith = "reject-with", Error, "49-with-on-block.pf", "phantomc compile testdata/errors/49-with-on-block.pf",
        r#"a `with` that does not fit the verdict, protocol or family"#,
        r#"`with` belongs to `reject`; `tcp reset` needs TCP, `icmp` codes need IPv4, `icmpv6` codes IPv6 and `icmpx` fits both."#;
    EarlyRule = "early-rule", Error, "53-early-pass.pf", "phantomc compile testdata/errors/53-early-pass.pf",
        r#"an `early` rule that is not a stateless block, an exemption or a `notrack` pass"#,
        r#"Early rules run before conntrack and routing, so they can `block`, `pass` (which exempts the packets from the early rules after it) or `pass ... notrack`, and cannot use `state`; arriving packets have no `out on` yet, and an `out` rule can be early only with `notrack`. An early `pass` must exempt a fixed set of packets (no `limit`, `quota` or run-time set), and `notrack` rules come before early passes."#;
    BadMark = "bad-mark", Error, "131-set-mark-on-block.pf", "phantomc compile testdata/errors/131-set-mark-on-block.pf",
        r#"a mark that does not fit 32 bits, or `set mark` on a rule that drops"#,
        r#"Packet marks are 0 to 0xffffffff. `set mark` belongs to `pass` rules (the packet leaves with the mark) and `match` rules (the mark is set before the filter chains)."#;
    MatchRule = "match-rule", Error, "132-match-without-mark.pf", "phantomc compile testdata/errors/132-match-without-mark.pf",
        r#"a `match` rule without `set mark`, or with an option it cannot have"#,
        r#"`match in|out` rules run before every filter chain (at raw priority; after conntrack when they use the ct mark) and decide nothing: they take header matches, `mark`, `ct mark`, `counter` and must `set mark ...` or `set ct mark ...`; `match in` cannot use `out on` or be `forward`."#;
    Flowtable = "flowtable", Error, "136-offload-on-input.pf", "phantomc compile testdata/errors/136-offload-on-input.pf",
        r#"a flowtable or `offload` clause that cannot work"#,
        r#"`flowtable NAME { devices { ... } }` needs a new name and device names (no patterns); `offload` belongs on `pass forward` rules (a flowtable holds accepted forwarded connections) and names a declared flowtable, or takes the only one."#;
    CtMark = "ct-mark", Error, "134-ct-mark-on-early.pf", "phantomc compile testdata/errors/134-ct-mark-on-early.pf",
        r#"a connection mark used where there is no connection yet, or in an order nft would not run"#,
        r#"`ct mark N`, `set ct mark ...` and `set mark from ct mark` need conntrack: not on `early` rules; `set mark from ct mark` only on `match` rules (on a pass, nft would skip the verdict of a packet without a connection); a mark is not copied onto itself. Match rules that use the ct mark run after conntrack, so they must follow the plain match rules of their direction, and no early rule may test a `mark` they set."#;
    BadCounterName = "bad-counter-name", Error, "133-bad-counter-name.pf", "phantomc compile testdata/errors/133-bad-counter-name.pf",
        r#"a `counter "name"` that nft cannot take as a counter name"#,
        r#"A named counter's name starts with a letter or `_`, continues with letters, digits, `_`, `-` or `.`, and has at most 64 characters."#;
    NotrackRule = "notrack-rule", Error, "130-notrack-without-early.pf", "phantomc compile testdata/errors/130-notrack-without-early.pf",
        r#"`notrack` outside an early `in` or `out` pass"#,
        r#"`notrack` keeps packets from conntrack, so it needs `early` (the raw-priority chain before conntrack), a `pass` verdict, no `limit` or `quota`, and an `in` or `out` rule (forwarded packets stay tracked)."#;
    UrpfRule = "urpf-rule", Error, "137-urpf-on-out.pf", "phantomc compile testdata/errors/137-urpf-on-out.pf",
        r#"`from urpf-failed` on an `out` rule"#,
        r#"`from urpf-failed` looks up the route back to an arriving packet's source and compares its interface with the one the packet came in on (nft `fib saddr . mark . iif oif missing`), which exists in prerouting, input and forward only: write it on `in` or `forward` rules (with `early`, before conntrack, for both). NAT and `match` rules do not take it."#;
    SelfMatch = "self-match", Error, "143-self-as-source.pf", "phantomc compile testdata/errors/143-self-as-source.pf",
        r#"`self` where it is no destination test"#,
        r#"`to self` matches packets addressed to one of this host's own addresses (nft `fib daddr type local`), in filter rules of every direction, `match` rules and `dnat` (prerouting). `from self` is not supported (write an `out` rule for what this host sends), nor `to self` on `snat`/`masquerade` (a packet leaving by postrouting is not addressed to this host), nor `to !self except ...` (not one test)."#;
    BadPriority = "bad-priority", Error, "55-priority-before-conntrack.pf", "phantomc compile testdata/errors/55-priority-before-conntrack.pf",
        r#"a chain priority outside -199..1000"#,
        r#"A chain at -200 or lower runs before conntrack, where `state` matches nothing; use `early` rules to drop before conntrack."#;
    AdaptiveOption = "adaptive-option", Error, "60-adaptive-bad-options.pf", "phantomc compile testdata/errors/60-adaptive-bad-options.pf",
        r#"an `adaptive` option that is unknown or out of range"#,
        r#"`adaptive { }` takes mode, set, thresholds, timeout, max-timeout, max-blocks, window and min-confidence, each in its range."#;
    AdaptiveSet = "adaptive-set", Error, "61-adaptive-set-unused.pf", "phantomc compile testdata/errors/61-adaptive-set-unused.pf",
        r#"`adaptive` without a dynamic set that a block rule uses"#,
        r#"Adaptive mode blocks by adding sources to a `dynamic` set; a `block` rule must use that set, or its additions would do nothing."#;
    DuplicateAdaptive = "duplicate-adaptive", Error, "103-duplicate-adaptive.pf", "phantomc compile testdata/errors/103-duplicate-adaptive.pf",
        r#"`adaptive` given twice"#,
        r#"A policy has at most one `adaptive` block."#;
    BadNumber = "bad-number", Error, "100-bad-number.pf", "phantomc compile testdata/errors/100-bad-number.pf",
        r#"a number too large for its place"#,
        r#"Numbers are read as 32-bit or 64-bit unsigned integers; this one does not fit."#;
    BadProto = "bad-proto", Error, "101-bad-proto.pf", "phantomc compile testdata/errors/101-bad-proto.pf",
        r#"a protocol number over 255"#,
        r#"IP protocol numbers are 0 to 255."#;
    IcmpOnNonIcmp = "icmp-on-non-icmp", Error, "106-icmp-on-non-icmp.pf", "phantomc compile testdata/errors/106-icmp-on-non-icmp.pf",
        r#"`icmp-type` on a rule for another protocol"#,
        r#"`icmp-type` needs `proto icmp` or `proto icmpv6`, not TCP or UDP."#;
    NatOption = "nat-option", Error, "108-nat-option.pf", "phantomc compile testdata/errors/108-nat-option.pf",
        r#"a rule option NAT rules do not take"#,
        r#"NAT rules translate addresses; `log`, `limit`, `state`, `label`, `with` and `early` belong to filter rules."#;
    NatPort = "nat-port", Error, "109-nat-port.pf", "phantomc compile testdata/errors/109-nat-port.pf",
        r#"a port translation without a protocol with ports"#,
        r#"`-> ADDRESS port N` rewrites a port, so the rule must match `proto tcp` or `udp`."#;
    LogLimit = "log-limit", Error, "92-log-limit-twice.pf", "phantomc compile testdata/errors/92-log-limit-twice.pf",
        r#"a rate-limited rule that also limits its log"#,
        r#"A rule's `limit` already bounds how often it matches and so what it logs; nft cannot put a second limit on the log of the same rule. Drop the `limit` after `log`."#;
    BadLogGroup = "bad-log-group", Error, "93-bad-log-group.pf", "phantomc compile testdata/errors/93-bad-log-group.pf",
        r#"an NFLOG group outside 0-65535"#,
        r#"`log group N` sends the rule's log to NFLOG group N (for `phantomc log` or ulogd); groups are 16-bit numbers."#;
    UnknownService = "unknown-service", Error, "94-unknown-service.pf", "phantomc compile testdata/errors/94-unknown-service.pf",
        r#"a service name phantomc does not know"#,
        r#"Ports may be written as service names (`ssh`, `https`, `domain`, ...); names outside phantomc's table get a "did you mean", or write the port number."#;
    BadQuota = "bad-quota", Error, "96-quota-split.pf", "phantomc compile testdata/errors/96-quota-split.pf",
        r#"a quota that would not be one budget, or out of range"#,
        r#"A quota counts bytes for one nft rule: a rule that expands to several (protocols or address families) would get one quota each, so write one rule per protocol and family; a quota of 0 never matches, and nft states a quota in 32 bits of its unit."#;
    NeverMatches = "never-matches", Error, "lint-never-matches.pf", "phantomc lint testdata/errors/lint-never-matches.pf",
        r#"a rule no packet can match"#,
        r#"Its clauses contradict each other (an IPv4 rule from `! 0.0.0.0/0`, a port list that excludes every port): decided exactly in header space."#;
    AfterCatchAll = "after-catch-all", Error, "lint-after-catch-all.pf", "phantomc lint testdata/errors/lint-after-catch-all.pf",
        r#"a rule after one that matches everything"#,
        r#"An earlier rule decides every packet of the chain, so this one is never reached."#;
    Shadowed = "shadowed", Error, "lint-shadowed.pf", "phantomc lint testdata/errors/lint-shadowed.pf",
        r#"a rule that earlier rules with another verdict hide"#,
        r#"Earlier rules (together) decide every packet this rule matches, with a different verdict: it never takes effect. Move it up or narrow the earlier rules."#;
    Redundant = "redundant", Warning, "lint-redundant.pf", "phantomc lint testdata/errors/lint-redundant.pf",
        r#"a rule that changes nothing"#,
        r#"Earlier rules with the same verdict already decide all its packets, or without it the later rules or the default policy would decide them the same way."#;
    ExemptsNothing = "exempts-nothing", Warning, "lint-exempts-nothing.pf", "phantomc lint testdata/errors/lint-exempts-nothing.pf",
        r#"an early `pass` that no early rule after it could match"#,
        r#"An early `pass` only skips the early rules after it (as an accept in a raw-priority chain); the filter rules still decide its packets. With no early rule after it that matches them it does nothing: remove `early` to pass the packets, or move it above the early block it should spare."#;
    UnusedDefine = "unused-define", Warning, "lint-unused-define.pf", "phantomc lint testdata/errors/lint-unused-define.pf",
        r#"a define no rule uses"#,
        r#"Remove it, or use it."#;
    UnusedSet = "unused-set", Warning, "lint-unused-set.pf", "phantomc lint testdata/errors/lint-unused-set.pf",
        r#"a set no rule uses"#,
        r#"Remove it, or use it; an unused set is still created in nft."#;
    OverlappingEntries = "overlapping-entries", Warning, "lint-overlapping-entries.pf", "phantomc lint testdata/errors/lint-overlapping-entries.pf",
        r#"an entry inside another entry of the same list"#,
        r#"The inner entry adds nothing (and nft would merge it anyway); remove it, or keep the one you meant."#;
    FeedOverlapsAllow = "feed-overlaps-allow", Warning, "lint-feed-overlaps-allow.pf", "phantomc lint testdata/errors/lint-feed-overlaps-allow.pf",
        r#"a local feed lists addresses a pass rule allows"#,
        r#"Addresses a rule passes by name are also in a block feed: whichever rule comes first wins. Checked for feeds read from local files."#;
    OffloadDevice = "offload-device", Warning, "lint-offload-device.pf", "phantomc lint testdata/errors/lint-offload-device.pf",
        r#"an `offload` rule names an interface its flowtable does not hook"#,
        r#"The kernel offloads a connection only when both its directions arrive on devices of the flowtable; connections through other interfaces stay in the forward chain. Add the devices to the flowtable, or drop `offload` on that rule."#;
    Expired = "expired", Warning, "lint-expired.pf", "phantomc lint testdata/errors/lint-expired.pf",
        r#"a rule or entry past its `expires` date"#,
        r#"It is left out of the compiled ruleset. Remove it from the policy, or move the date. `lint --expired` makes this fail CI."#;
    ExpiresSoon = "expires-soon", Warning, "lint-expires-soon.pf", "PHANTOMC_TODAY=2099-12-20 phantomc lint testdata/errors/lint-expires-soon.pf",
        r#"a rule or entry that expires within 14 days"#,
        r#"Announced ahead (`lint --expires-within DAYS`) so the expiry is not a surprise."#;
    DropsLoopback = "drops-loopback", Warning, "lint-drops-loopback.pf", "phantomc lint testdata/errors/lint-drops-loopback.pf",
        r#"a policy that drops loopback traffic"#,
        r#"Local services talk over `lo`; `pass in on lo` before other rules keeps them working."#;
    DropsEstablished = "drops-established", Warning, "lint-drops-established.pf", "phantomc lint testdata/errors/lint-drops-established.pf",
        r#"a policy that drops replies to this host's own connections"#,
        r#"Without `pass in state { established, related }` the answers to outgoing connections (DNS, package updates) are dropped."#;
    NoManagementAccess = "no-management-access", Warning, "lint-no-management-access.pf", "phantomc lint testdata/errors/lint-no-management-access.pf",
        r#"a policy that lets no SSH in"#,
        r#"Nothing passes new connections to port 22: applied remotely, it would lock you out."#;
    RuleInPftest = "rule-in-pftest", Error, "test-rule-in-pftest.pftest", "phantomc test policies/webserver.pf testdata/errors/test-rule-in-pftest.pftest",
        r#"a rule in a `.pftest` file"#,
        r#"`.pftest` files hold only `test` blocks; the rules are the policy's."#;
    TestFailed = "test-failed", Error, "test-test-failed.pf", "phantomc test testdata/errors/test-test-failed.pf",
        r#"a policy test got another verdict"#,
        r#"The `expect` line's packet is decided differently; the label names the deciding rule."#;
    BadPacket = "bad-packet", Error, "test-bad-packet.pf", "phantomc test testdata/errors/test-bad-packet.pf",
        r#"a test packet that cannot be read"#,
        r#"Write it as `PROTO SRC[:PORT] -> DST[:PORT] [in IF] [out IF] [STATE] [ICMP-TYPE]`."#;
    Lockout = "lockout", Error, "apply-lockout.pf", "phantomc apply --dry-run testdata/errors/apply-lockout.pf",
        r#"a change that would cut off loopback or your own session"#,
        r#"The lockout guard evaluates the new ruleset against loopback and the operator's SSH sessions before anything is loaded; `--force` overrides it."#;
    FlowtableUnsupported = "flowtable-unsupported", Error, "apply-flowtable-unsupported.pf", "phantomc apply testdata/errors/apply-flowtable-unsupported.pf",
        r#"the kernel cannot hold a flowtable the policy declares"#,
        r#"Before loading, `apply` asks the kernel (`nft --check` of an empty flowtable, which commits nothing) whether it has flowtable support: CONFIG_NF_FLOW_TABLE, module nf_flow_table with nf_flow_table_inet. Without it the policy is refused at its first `flowtable` line and the live ruleset stays as it was. (The example reports this code only on such a kernel.)"#;
    NftRefused = "nft-refused", Error, "nft-refused.pf", "phantomc apply testdata/errors/nft-refused.pf",
        r#"nft refused a compiled rule"#,
        r#"The kernel or nft rejected a rule phantomc compiled (a missing kernel module, an older nft). Nothing was changed; the error names the policy line the rule came from."#;
}

/// `phantomc codes`: one line per code.
pub fn table() -> String {
    let width = Code::ALL.iter().map(|c| c.as_str().len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in Code::ALL {
        let i = c.info();
        out.push_str(&format!("{:width$}  {:7}  {}\n", i.code, severity_name(i.severity), i.summary));
    }
    out
}

/// `phantomc codes CODE`: the whole entry, like `rustc --explain`.
pub fn explain(code: Code) -> String {
    let i = code.info();
    let example = i.example.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    format!(
        "{} ({}): {}\n\n{}\n\nExample (testdata/errors/{}):\n\n{example}\n\n    $ {}\n",
        i.code,
        severity_name(i.severity),
        i.summary,
        i.explanation,
        i.fixture,
        i.command
    )
}

/// The catalog section of `docs/diagnostics.md`.
pub fn markdown() -> String {
    let mut out = String::from("| code | severity | meaning |\n|---|---|---|\n");
    for c in Code::ALL {
        let i = c.info();
        out.push_str(&format!(
            "| [`{0}`](#{0}) | {1} | {2} |\n",
            i.code,
            severity_name(i.severity),
            i.summary.replace('|', "\\|")
        ));
    }
    for c in Code::ALL {
        let i = c.info();
        out.push_str(&format!(
            "\n### {}\n\n{} ({}). {}\n\n```text\n# testdata/errors/{}\n{}```\n\n`{}`\n",
            i.code,
            capitalized(i.summary),
            severity_name(i.severity),
            i.explanation,
            i.fixture,
            i.example,
            i.command
        ));
    }
    out
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}
