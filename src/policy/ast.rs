//! Syntax tree of a policy file, close to what the admin wrote, with spans.

use std::net::IpAddr;

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Input,
    Forward,
    Output,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Input, Hook::Forward, Hook::Output];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pass,
    Block,
    Reject,
}

impl Action {
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Block => "block",
            Action::Reject => "reject",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The keys of a `feed` block, in the grammar's order (`feed_key`).
pub const FEED_KEYS: [&str; 16] = [
    "source",
    "format",
    "refresh",
    "max-entries",
    "max-shrink",
    "max-coverage",
    "column",
    "provider",
    "key-file",
    "key-env",
    "key-credential",
    "key-header",
    "min-confidence",
    "confidence",
    "max-age",
    "pulses",
];

/// One element of a value (a define, a list, or a clause's argument).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `tcp 80`, `udp 5000-5100`, `tcp $port`.
    Service {
        proto: String,
        port: Box<Spanned<Item>>,
    },
    /// `$name`
    Macro(String),
    /// `<name>`
    SetRef(String),
    /// An address or network, already validated (`10.0.0.0/8`, `2001:db8::1`).
    Net(ipnet::IpNet),
    /// `1024-65535`
    PortRange(u32, u32),
    Number(u64),
    /// Interface, protocol, ICMP type or ct state name.
    Name(String),
    /// `!10.1.0.0/16` in a list: addresses taken out of the list's other entries.
    Except(Box<Spanned<Item>>),
    /// `10.0.0.7 expires 2026-12-31`: an entry left out after that day.
    Expiring {
        item: Box<Spanned<Item>>,
        date: Spanned<Date>,
    },
    /// `192.0.2.1 timeout 1h` in a named set: the kernel removes the entry
    /// that many seconds after the set is loaded.
    Timed {
        item: Box<Spanned<Item>>,
        seconds: Spanned<u64>,
    },
}

impl Item {
    /// A list entry (spanning `span`): the item, taken out of the list when
    /// `negated`, left out after `date`, removed by the kernel after `seconds`.
    pub fn entry(
        item: Spanned<Item>,
        negated: bool,
        date: Option<Spanned<Date>>,
        seconds: Option<Spanned<u64>>,
        span: Span,
    ) -> Spanned<Item> {
        let mut item = item;
        if negated {
            item = Spanned::new(Item::Except(Box::new(item)), span);
        }
        if let Some(date) = date {
            item = Spanned::new(Item::Expiring { item: Box::new(item), date }, span);
        }
        match seconds {
            Some(seconds) => Spanned::new(Item::Timed { item: Box::new(item), seconds }, span),
            None => item,
        }
    }

    /// What kind of thing this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Service { .. } => "a service",
            Item::Macro(_) => "a macro",
            Item::SetRef(_) => "a set",
            Item::Net(n) if n.prefix_len() == n.max_prefix_len() => "an address",
            Item::Net(_) => "a network",
            Item::PortRange(..) => "a port range",
            Item::Number(_) => "a number",
            Item::Name(_) => "a name",
            Item::Except(_) => "an exclusion",
            Item::Expiring { item, .. } | Item::Timed { item, .. } => item.node.kind(),
        }
    }
}

/// A calendar day (UTC), as written in `expires 2026-12-31`; checked valid by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// The date if it exists in the Gregorian calendar.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (day >= 1 && day <= days_in_month).then_some(Date { year, month, day })
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The day `days` after 1970-01-01 (civil_from_days).
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Date { year, month, day }
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub items: Vec<Spanned<Item>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub negated: bool,
    /// `self`: this host's own addresses (then `addr` is `None`).
    pub local: bool,
    /// `None` means any address.
    pub addr: Option<Value>,
    /// `except VALUE`: addresses taken out of `addr`.
    pub except: Option<Value>,
    pub port: Option<PortSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub negated: bool,
    pub value: Value,
}

/// `on [!]VALUE`: interface names or `p*` patterns, maybe negated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceSpec {
    pub negated: bool,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl TimeUnit {
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Second => "second",
            TimeUnit::Minute => "minute",
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    pub rate: u64,
    pub unit: TimeUnit,
    pub per_source: bool,
    pub burst: Option<u64>,
}

/// `log ["text"] [limit N/unit [burst N]] [group N]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSpec {
    pub text: Option<String>,
    /// Rate of the log lines (the rule itself is not limited).
    pub limit: Option<Spanned<LimitSpec>>,
    /// NFLOG group: packets go to userspace instead of the kernel log.
    pub group: Option<Spanned<u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOpt {
    On(IfaceSpec),
    InOn(IfaceSpec),
    OutOn(IfaceSpec),
    Family(Family),
    Proto(Value),
    From(HostSpec),
    To(HostSpec),
    IcmpType(Value),
    State(Value),
    Limit(LimitSpec),
    /// `quota N mbytes`: matches until that many bytes matched.
    Quota(u64),
    Log(LogSpec),
    /// `counter` (the default, `true`) or `nocounter`.
    Counter(bool),
    Label(String),
    Expires(Date),
    /// `with icmp CODE` / `with icmpv6 CODE` / `with icmpx CODE` / `with tcp reset`.
    RejectWith {
        kind: String,
        code: Option<String>,
    },
    /// `early`: decided in prerouting, before conntrack.
    Early,
    /// `notrack`: an early pass that conntrack never sees.
    Notrack,
    /// `mark N`: the packet's mark is N (as written; checked when lowered).
    Mark(u64),
    /// `set mark N` or `set mark from ct mark`.
    SetMark(MarkSource),
    /// `ct mark N`: the connection's mark is N.
    CtMark(u64),
    /// `offload [FLOWTABLE]`: established connections go to the flowtable.
    Offload(Option<String>),
    /// `set ct mark N` or `set ct mark from mark`.
    SetCtMark(MarkSource),
    /// `counter "name"`: counts into a named counter.
    NamedCounter(String),
    /// `from urpf-failed`: the source fails the reverse-path check.
    UrpfFailed,
}

/// What `set mark` / `set ct mark` sets: a number (as written; checked when
/// lowered), or a copy of one of the two marks (`from mark`, `from ct mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkSource {
    Value(u64),
    Mark,
    CtMark,
}

impl RuleOpt {
    /// The clause keyword, for "duplicate clause" messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            RuleOpt::On(_) => "on",
            RuleOpt::InOn(_) => "in on",
            RuleOpt::OutOn(_) => "out on",
            RuleOpt::Family(_) => "ipv4/ipv6",
            RuleOpt::Proto(_) => "proto",
            RuleOpt::From(_) => "from",
            RuleOpt::To(_) => "to",
            RuleOpt::IcmpType(_) => "icmp-type",
            RuleOpt::State(_) => "state",
            RuleOpt::Limit(_) => "limit",
            RuleOpt::Quota(_) => "quota",
            RuleOpt::Log(_) => "log",
            RuleOpt::Counter(true) => "counter",
            RuleOpt::Counter(false) => "nocounter",
            RuleOpt::Label(_) => "label",
            RuleOpt::Expires(_) => "expires",
            RuleOpt::RejectWith { .. } => "with",
            RuleOpt::Early => "early",
            RuleOpt::Notrack => "notrack",
            RuleOpt::Mark(_) => "mark",
            RuleOpt::SetMark(_) => "set mark",
            RuleOpt::CtMark(_) => "ct mark",
            RuleOpt::Offload(_) => "offload",
            RuleOpt::SetCtMark(_) => "set ct mark",
            RuleOpt::NamedCounter(_) => "counter",
            RuleOpt::UrpfFailed => "from urpf-failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Forward,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleAst {
    pub action: Spanned<Action>,
    pub direction: Spanned<Direction>,
    pub opts: Vec<Spanned<RuleOpt>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchAst {
    pub keyword: Span,
    pub direction: Spanned<Direction>,
    pub opts: Vec<Spanned<RuleOpt>>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    Masquerade,
    Snat,
    Dnat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTarget {
    pub addr: Value,
    pub port: Option<Value>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatAst {
    pub kind: Spanned<NatKind>,
    pub direction: Spanned<Direction>,
    pub opts: Vec<Spanned<RuleOpt>>,
    pub target: Option<NatTarget>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetBody {
    Static(Value),
    /// Filled at run time (`phantomc block`); elements may expire.
    Dynamic {
        timeout: Option<Spanned<u64>>,
    },
}

/// The value of a `key value;` option inside a `feed` or `adaptive` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedValue {
    Str(String),
    Seconds(u64),
    Number(u64),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub action: Spanned<Action>,
    pub packet: Spanned<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    Table(Spanned<String>),
    Define {
        name: Spanned<String>,
        value: Value,
    },
    Include {
        path: Spanned<String>,
        span: Span,
    },
    Policy {
        hook: Spanned<Hook>,
        action: Spanned<Action>,
        log: Option<LogSpec>,
        counter: bool,
        /// `priority N`: the hook chain's nft priority.
        priority: Option<Spanned<i64>>,
        span: Span,
    },
    Set {
        name: Spanned<String>,
        body: SetBody,
        span: Span,
    },
    Feed {
        name: Spanned<String>,
        opts: Vec<(Spanned<String>, Spanned<FeedValue>)>,
        span: Span,
    },
    /// `adaptive { mode block; ... }`: continuous learning in `watch`.
    Adaptive {
        opts: Vec<(Spanned<String>, Spanned<FeedValue>)>,
        span: Span,
    },
    /// `flowtable NAME { devices ... }`: a fast path for forwarded connections.
    Flowtable {
        name: Spanned<String>,
        devices: Value,
        span: Span,
    },
    /// `allow-always { ... }`: addresses removed from every block feed.
    AllowAlways {
        value: Value,
        span: Span,
    },
    Rule(RuleAst),
    Nat(NatAst),
    /// `match in|out ... set mark N`: marks packets before the filter chains.
    Match(MatchAst),
    Test {
        name: Spanned<String>,
        expects: Vec<Expect>,
        span: Span,
    },
}
