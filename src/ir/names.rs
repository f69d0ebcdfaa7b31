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

/// Service names accepted in `port` (`port ssh`, `port { https, domain }`)
/// with the protocols each is served on, as IANA's registry and Debian's
/// /etc/services list them. Embedded, so a policy means the same on every
/// machine, whatever /etc/services the build or the firewall host has.
pub const SERVICES: &[(&str, u16, &[u8])] = &[
    ("ftp-data", 20, &[TCP]),
    ("ftp", 21, &[TCP]),
    ("ssh", 22, &[TCP]),
    ("telnet", 23, &[TCP]),
    ("smtp", 25, &[TCP]),
    ("whois", 43, &[TCP]),
    ("domain", 53, &[TCP, UDP]),
    ("dns", 53, &[TCP, UDP]),
    ("bootps", 67, &[UDP]),
    ("bootpc", 68, &[UDP]),
    ("tftp", 69, &[UDP]),
    ("http", 80, &[TCP]),
    ("www", 80, &[TCP]),
    ("kerberos", 88, &[TCP, UDP]),
    ("pop3", 110, &[TCP]),
    ("sunrpc", 111, &[TCP, UDP]),
    ("auth", 113, &[TCP]),
    ("ident", 113, &[TCP]),
    ("nntp", 119, &[TCP]),
    ("ntp", 123, &[UDP]),
    ("imap", 143, &[TCP]),
    ("imap2", 143, &[TCP]),
    ("snmp", 161, &[TCP, UDP]),
    ("snmp-trap", 162, &[TCP, UDP]),
    ("bgp", 179, &[TCP]),
    ("ldap", 389, &[TCP, UDP]),
    ("https", 443, &[TCP, UDP]),
    ("microsoft-ds", 445, &[TCP]),
    ("isakmp", 500, &[UDP]),
    ("syslog", 514, &[UDP]),
    ("submissions", 465, &[TCP]),
    ("smtps", 465, &[TCP]),
    ("submission", 587, &[TCP]),
    ("ldaps", 636, &[TCP, UDP]),
    ("domain-s", 853, &[TCP, UDP]),
    ("rsync", 873, &[TCP]),
    ("ftps", 990, &[TCP]),
    ("imaps", 993, &[TCP]),
    ("pop3s", 995, &[TCP]),
    ("openvpn", 1194, &[TCP, UDP]),
    ("ms-sql-s", 1433, &[TCP]),
    ("nfs", 2049, &[TCP, UDP]),
    ("mysql", 3306, &[TCP]),
    ("ms-wbt-server", 3389, &[TCP]),
    ("rdp", 3389, &[TCP]),
    ("ipsec-nat-t", 4500, &[UDP]),
    ("sip", 5060, &[TCP, UDP]),
    ("sip-tls", 5061, &[TCP, UDP]),
    ("xmpp-client", 5222, &[TCP]),
    ("xmpp-server", 5269, &[TCP]),
    ("mdns", 5353, &[UDP]),
    ("postgresql", 5432, &[TCP]),
    ("postgres", 5432, &[TCP]),
    ("amqp", 5672, &[TCP]),
    ("redis", 6379, &[TCP]),
    ("http-alt", 8080, &[TCP]),
    ("webcache", 8080, &[TCP]),
    ("git", 9418, &[TCP]),
    ("zabbix-agent", 10050, &[TCP]),
    ("zabbix-trapper", 10051, &[TCP]),
    ("memcache", 11211, &[TCP, UDP]),
    ("mongodb", 27017, &[TCP]),
];

/// The port and protocols of a service name.
pub fn service(name: &str) -> Option<(u16, &'static [u8])> {
    SERVICES.iter().find(|(n, ..)| *n == name).map(|(_, port, protos)| (*port, *protos))
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

/// The states of a packet conntrack gave a connection (established,
/// related, new): only these have a ct mark.
pub const CT_TRACKED: u8 = 2 | 4 | 8;

pub fn ct_state_bit(name: &str) -> Option<u8> {
    CT_STATES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

pub use crate::diag::suggest;
