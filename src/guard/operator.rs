//! Who the operator is: the sessions a change must keep, and the management
//! port new logins come in on.

use std::fmt;

use crate::host::{self, Session};

/// The default management port (SSH).
pub const SSH_PORT: u16 = 22;

/// Where a session was learned from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SshConnection,
    Keep,
    /// An established session in the kernel's socket table.
    Sockets,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::SshConnection => "$SSH_CONNECTION",
            Source::Keep => "--keep",
            Source::Sockets => "live session",
        })
    }
}

/// One session of the operator, with the interface it comes in on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSession {
    pub session: Session,
    pub source: Source,
    /// The interface the kernel routes the client through (`None`: unknown,
    /// then rules on interfaces are assumed not to match).
    pub dev: Option<String>,
}

/// The operator's sessions and management port, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operator {
    pub sessions: Vec<OperatorSession>,
    /// New connections from the operator's clients to this port must pass.
    pub mgmt_port: u16,
    /// What could not be read (said plainly next to the check's result).
    pub unknown: Vec<String>,
}

impl Operator {
    /// Nobody known: only loopback is checked.
    pub fn nobody() -> Operator {
        Operator { sessions: Vec::new(), mgmt_port: SSH_PORT, unknown: Vec::new() }
    }

    /// The session of `--keep` (else `$SSH_CONNECTION`) plus every live
    /// established session to the management port.
    pub fn discover(keep: Option<&str>, mgmt_port: u16) -> Result<Operator, String> {
        let mut op = Operator { mgmt_port, ..Operator::nobody() };
        let (given, source) = match keep {
            Some(k) => (Some(Session::parse(k)?), Source::Keep),
            None => (
                std::env::var("SSH_CONNECTION").ok().as_deref().and_then(Session::from_ssh_connection),
                Source::SshConnection,
            ),
        };
        if let Some(s) = given {
            op.add(s, source, host::route_dev(s.client.ip()));
        }
        match host::sessions_to_port(mgmt_port) {
            Ok(sessions) => {
                for s in sessions {
                    op.add(s, Source::Sockets, host::route_dev(s.client.ip()));
                }
            }
            Err(e) => op.unknown.push(format!("live sessions to port {mgmt_port}: {e}")),
        }
        Ok(op)
    }

    /// Adds a session (once).
    pub fn add(&mut self, session: Session, source: Source, dev: Option<String>) {
        if !self.sessions.iter().any(|s| s.session == session) {
            self.sessions.push(OperatorSession { session, source, dev });
        }
    }

    /// One line for the operator when no session could be checked.
    pub fn unchecked_note(&self) -> Option<String> {
        if !self.sessions.is_empty() {
            return None;
        }
        let mut note = format!(
            "could not check your own session (no --keep, no $SSH_CONNECTION, no established session to port {} on this host): only loopback was checked",
            self.mgmt_port
        );
        for u in &self.unknown {
            note.push_str(&format!("; could not read {u}"));
        }
        Some(note)
    }
}
