//! Reference model of master and replica semantics, used to prove that the rewrite engine's
//! output converges (`docs/rewrites.md#convergence`) and to replay recorded streams in the demo.
//!
//! What it owns:
//! - values of the five basic types and keys with an optional absolute deadline in ms; a key
//!   is alive at `now` exactly when it has no deadline or `now <= deadline` (`value`), as on
//!   both real servers;
//! - a [`Master`] per dialect that executes client commands at a time and returns the entries
//!   a real master logs (Pika 3.5.4) or propagates (Redis 7) for them;
//! - a [`Replica`] per dialect that applies stream entries at its own time and expires keys by
//!   its own clock (Pika's behaviour; for the Redis dialect, a target such as kvrocks that does
//!   the same — a real Redis replica waits for the master's DELs and needs no rewriting);
//! - [`State`]: the alive keys of either node at an instant, for comparison and for dumps.
//!
//! Deliberate simplifications:
//! - Pika deadlines are whole seconds. Real Pika 3.5.4 treats a key as stale once its
//!   timestamp is *before* the current second, and Redis expires a key when `now > when`; the
//!   model uses `now <= deadline` for both (in ms; Pika times are whole seconds).
//! - Pika keeps one keyspace per type (a string and a hash may share a name); the model keeps
//!   one record per name. Histories that never reuse a name across types behave the same.
//! - The Pika model has one DB (Pika replicates each DB as its own binlog stream).
//! - Client-side MULTI/EXEC and scripts are not modelled on masters; the Redis master produces
//!   MULTI/EXEC itself where Redis 7 does (expiry DELs together with a command).

mod keyspace;
mod master;
pub(crate) mod replay;
mod replica;
mod value;

pub use keyspace::Reply;
pub use master::{Entry, Executed, Master};
pub use replica::Replica;
pub use value::{format_float, show_argv, show_bytes, DbKey, Record, State, Value};

use bytes::Bytes;
use keyspace::Failure;
use std::fmt;

/// One command's arguments, name first.
pub type Argv = Vec<Bytes>;

/// How a command failed in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The server does not know the command.
    UnknownCommand,
    /// Arity, syntax or range error: the server rejects it before running it. A Pika replica
    /// retries a rejected binlog item forever, so a proxy must never emit one.
    Rejected,
    /// The command ran into the stored data (wrong type, not an integer, overflow) and had no
    /// effect.
    Failed,
}

/// A command the model could not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelError {
    /// What kind of failure.
    pub kind: ModelErrorKind,
    /// The command.
    pub command: Argv,
    /// The server's message.
    pub message: String,
}

impl ModelError {
    fn new(kind: ModelErrorKind, command: &[Bytes], message: impl Into<String>) -> Self {
        ModelError {
            kind,
            command: command.to_vec(),
            message: message.into(),
        }
    }

    fn from_failure(f: Failure, command: &[Bytes]) -> Self {
        match f {
            Failure::Unknown(name) => ModelError::new(
                ModelErrorKind::UnknownCommand,
                command,
                format!("unknown command '{name}'"),
            ),
            Failure::Rejected(msg) => ModelError::new(ModelErrorKind::Rejected, command, msg),
            Failure::Failed(msg) => ModelError::new(ModelErrorKind::Failed, command, msg),
        }
    }

    /// The key the failing command addressed (its first argument), if it has one.
    pub fn key(&self) -> Option<&Bytes> {
        self.command.get(1)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ModelErrorKind::UnknownCommand => "unknown command",
            ModelErrorKind::Rejected => "rejected",
            ModelErrorKind::Failed => "failed",
        };
        write!(
            f,
            "{kind}: `{}`: {}",
            show_argv(&self.command),
            self.message
        )
    }
}

impl std::error::Error for ModelError {}

/// The command name, upper-cased (command names are case-insensitive).
fn upper_name(argv: &[Bytes]) -> Result<String, ModelError> {
    let first = argv
        .first()
        .ok_or_else(|| ModelError::new(ModelErrorKind::Rejected, argv, "empty command"))?;
    Ok(String::from_utf8_lossy(first).to_ascii_uppercase())
}
