//! Pika protocol peers for the relay's tests: a fake master and a fake replica that speak the
//! P+2000 / P+10001 protocols as Pika 3.5.4 does, plus their wire helpers.

pub mod fake_master;
pub mod fake_replica;
pub mod net;
pub mod wire;
