//! Errors of the Pika relay: what ends `serve` and what ends one replica's link.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::pika::frame::FrameError;
use crate::pika::messages::MessageError;

/// Why [`serve`](super::serve) returned.
#[derive(Debug)]
pub enum RelayError {
    /// A listener could not be bound.
    Bind {
        /// Which port (P, P+2000, P+10001).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The configuration cannot work (e.g. a port above 65535 once shifted).
    Config(String),
    /// The state directory cannot be used.
    StateDir(io::Error),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Bind { what, addr, source } => {
                write!(f, "cannot listen on {addr} ({what}): {source}")
            }
            RelayError::Config(msg) => write!(f, "invalid pika relay configuration: {msg}"),
            RelayError::StateDir(e) => write!(f, "cannot use the state directory: {e}"),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Bind { source, .. } => Some(source),
            RelayError::StateDir(e) => Some(e),
            RelayError::Config(_) => None,
        }
    }
}

/// Which end of a link misbehaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The master (upstream).
    Master,
    /// The replica (downstream).
    Replica,
}

impl Side {
    /// The peer's name, for log lines.
    pub const fn name(self) -> &'static str {
        match self {
            Side::Master => "master",
            Side::Replica => "replica",
        }
    }

    /// The `side` metric label, shared with the Redis relay.
    pub const fn metric(self) -> crate::metrics::Side {
        match self {
            Side::Master => crate::metrics::Side::Upstream,
            Side::Replica => crate::metrics::Side::Downstream,
        }
    }
}

/// Why one replica's link (its downstream and upstream connections) was closed.
#[derive(Debug)]
pub enum LinkError {
    /// A socket failed.
    Io(Side, io::Error),
    /// The length framing broke (e.g. a frame above the size limit).
    Frame(Side, FrameError),
    /// A frame did not parse as the protobuf message it must be.
    Message(Side, MessageError),
    /// The peer said something that does not fit the protocol state (e.g. an ack that answers
    /// no forwarded response).
    Protocol(Side, String),
    /// The offset map could not be persisted; continuing would risk an unrecoverable restart.
    Persist(io::Error),
    /// Nothing arrived from that side for too long.
    Timeout(Side, std::time::Duration),
    /// The replica sent no BinlogSync request for the master's drop timeout: the master has
    /// dropped it.
    ReplicaSilent(std::time::Duration),
}

impl LinkError {
    /// The `reason` of `pika_ttl_proxy_replica_disconnects_total` for a link that ended with
    /// this error (the Redis relay's vocabulary).
    pub fn disconnect_reason(&self) -> &'static str {
        match self {
            LinkError::Io(Side::Master, e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                "upstream_closed"
            }
            LinkError::Io(Side::Master, _) => "upstream_io",
            LinkError::Io(Side::Replica, _) => "downstream_io",
            LinkError::Frame(Side::Master, _)
            | LinkError::Message(Side::Master, _)
            | LinkError::Protocol(Side::Master, _) => "upstream_protocol",
            LinkError::Frame(Side::Replica, _)
            | LinkError::Message(Side::Replica, _)
            | LinkError::Protocol(Side::Replica, _) => "downstream_protocol",
            LinkError::Timeout(Side::Master, _) => "upstream_timeout",
            LinkError::Timeout(Side::Replica, _) => "handshake_timeout",
            LinkError::ReplicaSilent(_) => "replica_timeout",
            LinkError::Persist(_) => "state_write_failed",
        }
    }

    /// Metric label for `protocol_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Io(..) => "io",
            LinkError::Frame(..) => "frame",
            LinkError::Message(..) => "message",
            LinkError::Protocol(..) => "protocol",
            LinkError::Persist(_) => "persist",
            LinkError::Timeout(..) | LinkError::ReplicaSilent(_) => "timeout",
        }
    }

    /// The side at fault, if any.
    pub fn side(&self) -> Option<Side> {
        match self {
            LinkError::Io(s, _)
            | LinkError::Frame(s, _)
            | LinkError::Message(s, _)
            | LinkError::Protocol(s, _)
            | LinkError::Timeout(s, _) => Some(*s),
            LinkError::ReplicaSilent(_) => Some(Side::Replica),
            LinkError::Persist(_) => None,
        }
    }

    /// True for errors that mean the peer sent bytes that break the protocol (as opposed to a
    /// socket going away).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            LinkError::Frame(..) | LinkError::Message(..) | LinkError::Protocol(..)
        )
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Io(s, e) => write!(f, "{} connection failed: {e}", s.name()),
            LinkError::Frame(s, e) => write!(f, "malformed frame from the {}: {e}", s.name()),
            LinkError::Message(s, e) => {
                write!(f, "malformed message from the {}: {e}", s.name())
            }
            LinkError::Protocol(s, m) => write!(f, "protocol violation by the {}: {m}", s.name()),
            LinkError::Persist(e) => write!(f, "cannot persist the offset map: {e}"),
            LinkError::ReplicaSilent(d) => write!(
                f,
                "the replica sent no BinlogSync request for {} s, so the master has dropped it",
                d.as_secs()
            ),
            LinkError::Timeout(s, d) => {
                write!(
                    f,
                    "nothing received from the {} for {} s",
                    s.name(),
                    d.as_secs()
                )
            }
        }
    }
}

impl std::error::Error for LinkError {}
