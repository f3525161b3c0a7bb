//! Pika's replication wire protocol, without networking.
//!
//! From the outside in:
//! - [`frame`]: u32 big-endian length + body framing of the P+2000 and P+10001 connections;
//! - [`proto`]: a field-level protobuf reader and splicer that re-encodes messages with a few
//!   fields changed and every other byte (unknown fields included) kept;
//! - [`messages`]: typed views, editors and builders for the `InnerMessage` requests and
//!   responses a proxy reads, rewrites or originates;
//! - [`item`]: the 34-byte binlog item header carried in `binlog_sync[].binlog`;
//! - [`binlog_file`]: the on-disk `write2file<N>` block log and its manifest.
//!
//! See `docs/pika-protocol.md` for the protocol.

pub mod binlog_file;
pub mod frame;
pub mod item;
pub mod messages;
pub mod proto;
