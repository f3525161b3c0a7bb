//! Per-command rules (filled in next).
use super::{Decision, Outcome, Policy, StreamState};
use crate::table::ExpiryTable;
use bytes::Bytes;

/// Decide what to emit for one entry; see the module docs of [`crate::engine`].
pub fn rewrite(
    _args: &[Bytes],
    _exec_ms: i64,
    _state: &mut StreamState,
    _table: &ExpiryTable,
    _policy: &Policy,
) -> Decision {
    Decision::forward(Outcome::Passed, None)
}
