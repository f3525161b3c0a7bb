//! Test support shared by the integration tests: Pika protocol peers and a relay process.
#![allow(dead_code)]

pub mod pika_peer;
pub mod proxy;
