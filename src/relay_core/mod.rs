//! What both relays share below their protocol logic. Today: the durable record log their
//! offset maps are kept in ([`record_log`]).

pub mod record_log;
