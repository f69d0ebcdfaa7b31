//! Names the policy language shares with nft: protocols, ICMP types, ct states.

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", ICMP),
    ("igmp", 2),
    ("tcp", TCP),
    ("udp", UDP),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", ICMPV6),
    ("ipv6-icmp", ICMPV6),
    ("sctp", SCTP),
    ("udplite", 136),
];

pub fn proto_number(name: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// The name nft uses for a protocol (numbers for the rest).
pub fn proto_name(p: u8) -> String {
    match p {
        ICMPV6 => "ipv6-icmp".into(),
        _ => PROTOCOLS.iter().find(|(_, n)| *n == p).map_or_else(|| p.to_string(), |(n, _)| n.to_string()),
    }
}

/// Protocols whose header has ports.
pub fn has_ports(p: u8) -> bool {
    matches!(p, TCP | UDP | SCTP | 136)
}

pub const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

pub const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("ind-neighbor-solicit", 141),
    ("ind-neighbor-advert", 142),
    ("mld2-listener-report", 143),
];

pub fn icmp_table(proto: u8) -> &'static [(&'static str, u8)] {
    if proto == ICMPV6 {
        ICMPV6_TYPES
    } else {
        ICMP_TYPES
    }
}

pub fn icmp_type_name(proto: u8, t: u8) -> String {
    icmp_table(proto).iter().find(|(_, n)| *n == t).map_or_else(|| t.to_string(), |(n, _)| n.to_string())
}

/// ICMP codes a `reject with` can send, per kind (as nft names them).
pub const REJECT_CODES: &[(&str, &[&str])] = &[
    (
        "icmp",
        &[
            "net-unreachable",
            "host-unreachable",
            "prot-unreachable",
            "port-unreachable",
            "net-prohibited",
            "host-prohibited",
            "admin-prohibited",
        ],
    ),
    ("icmpv6", &["no-route", "admin-prohibited", "addr-unreachable", "port-unreachable"]),
    ("icmpx", &["port-unreachable", "admin-prohibited", "no-route", "host-unreachable"]),
];

pub fn reject_codes(kind: &str) -> &'static [&'static str] {
    REJECT_CODES.iter().find(|(k, _)| *k == kind).map_or(&[], |(_, codes)| codes)
}

/// Bits of [`super::CtStates`], in nft's order.
pub const CT_STATES: &[(&str, u8)] =
    &[("invalid", 1), ("established", 2), ("related", 4), ("new", 8), ("untracked", 16)];

pub const CT_ALL: u8 = 31;

pub fn ct_state_bit(name: &str) -> Option<u8> {
    CT_STATES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

pub use crate::diag::suggest;
