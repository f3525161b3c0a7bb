//! What both relays share below their protocol logic: the durable record log their offset maps
//! are kept in ([`record_log`]) and the registry of live connections ([`registry`]). Also
//! shared, outside this module: metric names and label values (`crate::metrics`), the log
//! throttle of at-risk reports (`crate::logging::Throttle`), per-replica series
//! (`crate::replica_series`) and the saved-table format (`crate::table_file`).

pub mod record_log;
pub mod registry;
