//! The rewrite engine: a pure function from one replication entry to the entries to emit.
//!
//! Inputs are the entry's arguments, the master's execution time, the per-stream state (selected
//! DB, MULTI), the [`ExpiryTable`](crate::table::ExpiryTable) and the [`Policy`] (dialect and family switches). The engine
//! does no I/O; it maintains the table as a side effect so the next entry sees the master's state.
//! See `docs/rewrites.md` for the contract every rule implements.

pub mod args;
pub mod command;
pub mod replacement;
mod rules;

use crate::families::{Family, FamilySwitches};

use bytes::Bytes;

pub use replacement::{Arg, Commands, NewCommand, Replacement};
pub use rules::{rewrite, PIKA_MAX_TIMESTAMP_SECS};

/// How absolute expiries are written downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `pksetexat k <sec> v`, `expireat k <sec>`; several commands share one binlog item.
    Pika,
    /// `SET k v PXAT <ms>`, `PEXPIREAT k <ms>`; expansions wrapped in MULTI/EXEC.
    Redis,
}

/// What the engine may do, shared by every stream of one proxy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Output dialect.
    pub dialect: Dialect,
    /// Runtime family switches.
    pub families: FamilySwitches,
}

impl Policy {
    /// A policy with every family on.
    pub fn new(dialect: Dialect) -> Self {
        Policy {
            dialect,
            families: FamilySwitches::all_on(),
        }
    }

    /// Whether string keys' existence is tracked in the table (needed to resolve Pika's
    /// conditional writes, which Pika logs even when they did nothing).
    pub fn tracks_existence(&self) -> bool {
        self.dialect == Dialect::Pika
    }
}

/// Per-stream state the engine reads and updates: the selected DB and whether the stream is
/// inside an upstream MULTI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// DB the next keyed command applies to.
    pub db: u32,
    /// True between an upstream MULTI and its EXEC/DISCARD.
    pub in_multi: bool,
}

/// What to send downstream for one entry; a replacement borrows the entry's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emit<'a> {
    /// Forward the entry's original bytes unchanged.
    Forward,
    /// Send these commands instead, in order (already wrapped in MULTI/EXEC when the dialect
    /// requires it).
    Replace(Replacement<'a>),
}

/// Why an entry left the engine the way it did; drives the `entries_total` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// No rule applies (the command does not depend on expiry, or the key is not volatile).
    Passed,
    /// A rule applied and the entry was rewritten.
    Rewritten,
    /// A rule would apply but its family is switched off.
    Disabled,
    /// A rule might apply but the key's expiry is unknown to the proxy; passed through.
    UnknownKey,
    /// The command is not one the engine knows; passed through (table untouched).
    UnknownCommand,
    /// The entry is malformed (wrong arity, bad number); passed through and counted so the
    /// operator can see the master sent something odd.
    Malformed,
}

impl Outcome {
    /// Metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Rewritten => "rewritten",
            Outcome::Disabled => "disabled",
            Outcome::UnknownKey => "unknown_key",
            Outcome::UnknownCommand => "unknown_command",
            Outcome::Malformed => "malformed",
        }
    }
}

/// A command that extends or removes a TTL of a volatile key whose value the proxy cannot restore:
/// if a replica applies it after the old deadline, the replica has already dropped the key and the
/// master keeps it (`docs/rewrites.md#at-risk`). The relay compares `old_deadline_ms` with the
/// replica's lag to decide whether to count and log it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtRisk {
    /// DB of the key.
    pub db: u32,
    /// The key.
    pub key: Bytes,
    /// Deadline the key had before this entry (ms).
    pub old_deadline_ms: i64,
}

/// The engine's answer for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What to send.
    pub emit: Emit<'a>,
    /// The family whose rule matched, if any.
    pub family: Option<Family>,
    /// Why.
    pub outcome: Outcome,
    /// Set when the entry extends or removes the TTL of a volatile key it cannot repair.
    pub at_risk: Option<AtRisk>,
}

impl Decision<'_> {
    /// Forward unchanged with the given outcome.
    pub fn forward(outcome: Outcome, family: Option<Family>) -> Self {
        Decision {
            emit: Emit::Forward,
            family,
            outcome,
            at_risk: None,
        }
    }
}

#[cfg(test)]
mod tests;
