//! pika-ttl-proxy: a replication proxy that makes key expiry replicate deterministically.
//!
//! Layers, from the wire inwards:
//! - codecs ([`resp`], [`pika`], [`rdb`]) turn bytes into commands, frames and keys without
//!   copying payloads;
//! - the [`engine`] is a pure function from one entry, its exec time, the [`table`] and the
//!   [`families`] switches to the entries to emit;
//! - the relays ([`redis_relay`], [`pika_relay`]) run the replication sessions: handshakes,
//!   offset translation, persistence; they move bytes and call the engine;
//! - operations (configuration, the admin API, metrics and per-replica series, logging, the
//!   state directory), wired by [`app`];
//! - the [`model`] is a reference implementation of master and replica semantics used to prove
//!   that the engine's output converges.
//!
//! # Public API
//!
//! The crate is a binary first; the library exists for the binary, the integration tests, the
//! benches and the fuzz targets, and exposes what they use:
//! - [`app::main_entry`], the binary's whole `main`;
//! - the codecs: [`resp`], [`pika`] (framing, protobuf splicer, message views, editors and
//!   builders, binlog items and files) and [`rdb`] (scanner, writer, CRC-64, LZF);
//! - the engine and its inputs: [`engine`], [`table`], [`families`];
//! - the relays' entry points ([`redis_relay::serve_on`], [`pika_relay::serve`], their configs
//!   and shared state) and the per-entry paths the benches measure
//!   ([`redis_relay::stream`], [`pika_relay::rewrite`]);
//! - [`metrics`] (the metric names), [`cli`] (the admin client), the [`model`], and, hidden
//!   from the docs, the captured-fixture reader the tests share (`fixtures`) and the saved
//!   table format (`table_file`, which the convergence proof's crash restarts go through).
//!
//! Modules nothing outside the crate uses are `pub(crate)`.

// Data from the network must never panic the proxy (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub(crate) mod admin;
pub mod app;
pub mod cli;
pub(crate) mod config;
pub mod engine;
pub(crate) mod entry_tally;
pub mod families;
#[doc(hidden)]
pub mod fixtures;
pub(crate) mod hold;
pub(crate) mod logging;
pub mod metrics;
pub mod model;
pub mod pika;
pub mod pika_relay;
pub mod rdb;
pub mod redis_relay;
pub(crate) mod relay_core;
pub mod replica_series;
pub mod resp;
pub(crate) mod state_dir;
pub mod table;
#[doc(hidden)]
pub mod table_file;
