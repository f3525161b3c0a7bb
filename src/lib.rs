//! pika-ttl-proxy: a replication proxy that makes key expiry replicate deterministically.
//!
//! Layers, from the wire inwards:
//! - codecs ([`resp`]) turn bytes into commands without copying arguments;
//! - the [`engine`] is a pure function from one entry, its exec time, the [`table`] and the
//!   [`families`] switches to the entries to emit;
//! - the [`model`] is a reference implementation of master and replica semantics used to prove
//!   that the engine's output converges.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod families;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pika;
pub mod pika_relay;
pub mod rdb;
pub mod redis_relay;
pub mod resp;
pub mod table;
