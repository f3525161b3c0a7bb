//! Test support shared by the integration tests: Pika protocol peers and a relay process.
#![allow(dead_code)]

pub mod pika_captures;
pub mod pika_peer;
pub mod pika_wire_builders;
pub mod prom;
pub mod proxy;

/// A captured fixture file (see `pika_ttl_proxy::fixtures` for where it is looked for).
pub fn fixture(relative: &str) -> Vec<u8> {
    pika_ttl_proxy::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
}
