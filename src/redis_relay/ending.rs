//! Why a Redis replica connection ended: a typed reason ([`EndReason`]) whose [`label`]
//! is the `reason` label of `pika_ttl_proxy_replica_disconnects_total` and of the
//! "replica connection failed/closed" log lines, plus the detail and severity that go with it.
//!
//! [`label`]: EndReason::label

use super::stats::{self, Side};
use super::upstream::UpstreamError;

/// Why a connection ended. Each variant has exactly one metric/log label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The replica closed its connection (or sent QUIT).
    ReplicaClosed,
    /// The relay is stopping.
    Shutdown,
    /// The master closed the link.
    UpstreamClosed,
    /// Reading from or writing to the master failed.
    UpstreamIo,
    /// The master sent something that is not valid at this point.
    UpstreamProtocol,
    /// The master could not be reached for this replica.
    UpstreamUnreachable,
    /// The master refused the sync with an error reply.
    MasterError,
    /// Reading from or writing to the replica failed.
    DownstreamIo,
    /// The replica sent bytes that do not frame as commands.
    DownstreamProtocol,
    /// The replica went quiet during the handshake.
    HandshakeTimeout,
}

impl EndReason {
    /// The label for metrics and logs (the strings the relay has always used).
    pub(crate) fn label(self) -> &'static str {
        match self {
            EndReason::ReplicaClosed => "replica_closed",
            EndReason::Shutdown => "shutdown",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::UpstreamIo => "upstream_io",
            EndReason::UpstreamProtocol => "upstream_protocol",
            EndReason::UpstreamUnreachable => "upstream_unreachable",
            EndReason::MasterError => "master_error",
            EndReason::DownstreamIo => "downstream_io",
            EndReason::DownstreamProtocol => "downstream_protocol",
            EndReason::HandshakeTimeout => "handshake_timeout",
        }
    }

    /// Whether ending this way must forget the replica's stored state: after a malformed
    /// master stream, continuing would replay the same bytes, so the next attempt must be a
    /// full sync.
    pub(crate) fn forgets_state(self) -> bool {
        self == EndReason::UpstreamProtocol
    }
}

/// Why a connection ended, with the detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// What ended it.
    pub reason: EndReason,
    /// Human-readable detail for the log.
    pub detail: String,
    /// Whether this is a failure worth a warning (as opposed to a normal close).
    pub failure: bool,
}

impl Ending {
    /// A normal close, logged at info level.
    pub(crate) fn normal(reason: EndReason) -> Self {
        Ending {
            reason,
            detail: String::new(),
            failure: false,
        }
    }

    /// A failure, logged as a warning with `detail`.
    pub(crate) fn fail(reason: EndReason, detail: impl Into<String>) -> Self {
        Ending {
            reason,
            detail: detail.into(),
            failure: true,
        }
    }

    /// The ending for a failed exchange with the master (counts its protocol errors).
    pub(crate) fn upstream(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Closed => Ending::normal(EndReason::UpstreamClosed),
            UpstreamError::Protocol(p) => {
                stats::protocol_error(Side::Upstream, "reply");
                Ending::fail(EndReason::UpstreamProtocol, p)
            }
            e @ UpstreamError::NotRedis(_) => {
                stats::protocol_error(Side::Upstream, "not_redis");
                Ending::fail(EndReason::UpstreamProtocol, e.to_string())
            }
            other => Ending::fail(EndReason::UpstreamIo, other.to_string()),
        }
    }

    /// The ending for a failed read or write on the replica's socket.
    pub(crate) fn downstream_io(e: std::io::Error) -> Self {
        Ending::fail(EndReason::DownstreamIo, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_metric_labels() {
        let all = [
            EndReason::ReplicaClosed,
            EndReason::Shutdown,
            EndReason::UpstreamClosed,
            EndReason::UpstreamIo,
            EndReason::UpstreamProtocol,
            EndReason::UpstreamUnreachable,
            EndReason::MasterError,
            EndReason::DownstreamIo,
            EndReason::DownstreamProtocol,
            EndReason::HandshakeTimeout,
        ];
        for reason in all {
            assert!(
                crate::metrics::DISCONNECT_REASONS.contains(&reason.label()),
                "{} is not a registered disconnect reason",
                reason.label()
            );
        }
        assert_eq!(EndReason::UpstreamProtocol.label(), "upstream_protocol");
        assert!(EndReason::UpstreamProtocol.forgets_state());
        assert!(!EndReason::UpstreamIo.forgets_state());
    }
}
