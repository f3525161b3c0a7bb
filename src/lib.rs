//! pika-ttl-proxy: a replication proxy that makes key expiry replicate deterministically.
//!
//! Layers, from the wire inwards:
//! - codecs ([`resp`], [`pika`], [`rdb`]) turn bytes into commands, frames and keys without
//!   copying payloads;
//! - the [`engine`] is a pure function from one entry, its exec time, the [`table`] and the
//!   [`families`] switches to the entries to emit;
//! - the relays ([`redis_relay`], [`pika_relay`]) run the replication sessions: handshakes,
//!   offset translation, persistence; they move bytes and call the engine;
//! - operations: [`config`], [`admin`], [`metrics`], [`replica_series`], [`logging`], [`cli`], wired by [`app`];
//! - the [`model`] is a reference implementation of master and replica semantics used to prove
//!   that the engine's output converges.

// Data from the network must never panic the proxy (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod entry_tally;
pub mod families;
#[doc(hidden)]
pub mod fixtures;
pub mod hold;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pika;
pub mod pika_relay;
pub mod rdb;
pub mod redis_relay;
pub mod replica_series;
pub mod resp;
pub mod state_dir;
pub mod table;
pub mod table_file;
