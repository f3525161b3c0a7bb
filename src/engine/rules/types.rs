//! Pika 3.x names and the types under them. That release keeps a string, a hash, a list, a
//! set and a zset apart under one name, each with its own TTL (`TTL`/`TYPE` answer for the
//! first found; `EXPIRE`, `DEL` and `expireat` reach them all; 4.0 and Redis refuse a second
//! type). The table holds one state per name, and the `expireat`/`del` a rewrite adds reach
//! every type on the replica, so a rule may only add them while the name is known to hold the
//! type it writes and nothing else. These rules keep that known
//! ([`ExpiryTable::set_type`]), and mark a name that comes to hold a second type shared
//! ([`ExpiryTable::mark_shared`]): entries on it then pass unchanged until it is removed whole.

use super::*;
use crate::table::{NameTypes, ValueType};

impl<'a> Cx<'a, '_> {
    /// Whether this stream's names may hold several types (Pika 3.x).
    pub(super) fn tracks_types(&self) -> bool {
        if self.pika() && !self.pika_4_0() {
            self.table.track_types();
            true
        } else {
            false
        }
    }

    /// Whether the entry names first a key [`ExpiryTable::mark_shared`] holds as several types
    /// under one name, and is not a command that removes the name whole.
    pub(super) fn on_shared_name(&self, cmd: Cmd) -> bool {
        self.pika()
            && !removes_names_whole(cmd)
            && self
                .args
                .get(1)
                .is_some_and(|key| self.table.is_shared(self.db, key))
    }

    /// An entry on a name that holds several types: a deadline the table could hold would be
    /// one type's, and the `expireat`/`del` a rewrite adds would reach every type on the
    /// replica (the lists, hashes and sets under a string's name lost with it, seen on real
    /// 3.5.4). Such entries pass unchanged, as to a direct replica, except that an absolute
    /// form still replaces a relative or millisecond TTL (the master's `EXPIRE` reaches every
    /// type too, `pksetexat` only the string). The name stays shared until removed whole.
    pub(super) fn shared_name(&mut self, spec: Spec, state: &mut StreamState) -> Proposal<'a> {
        let key = self.arg(1);
        match spec.cmd {
            Cmd::Expire | Cmd::PExpire | Cmd::ExpireAt | Cmd::PExpireAt | Cmd::PkSetExAt => {
                let proposal = self.apply(spec, state);
                // An EXPIRE that deleted the name (a past deadline) removed every type.
                let removed = spec.cmd != Cmd::PkSetExAt
                    && self.table.lookup(self.db, key, self.now) == KeyKnowledge::Absent;
                if !removed {
                    self.table.mark_shared(self.db, key);
                }
                proposal
            }
            cmd => {
                // The other key it names (RENAME's destination, a move's) may have changed.
                if matches!(
                    cmd,
                    Cmd::Rename | Cmd::RenameNx | Cmd::Copy | Cmd::SetMove | Cmd::PopPush
                ) {
                    if let Some(other) = self.args.get(2) {
                        self.table.forget(self.db, other);
                    }
                }
                Proposal::unknown_key(cmd.family())
            }
        }
    }

    /// [`Self::apply`] on Pika 3.x, with one read of the name's entry: an entry on a shared
    /// name passes ([`Self::shared_name`]); a write of one type on a name that holds another
    /// (alive) marks it shared and passes; otherwise the rule runs, and a name that held the
    /// written type only, or nothing, holds that type after it (the table's own updates keep a
    /// type they do not change).
    pub(super) fn apply_typed(&mut self, spec: Spec, state: &mut StreamState) -> Proposal<'a> {
        if removes_names_whole(spec.cmd) {
            return self.apply(spec, state);
        }
        if matches!(spec.cmd, Cmd::MSet | Cmd::MSetNx) {
            return self.apply_typed_mset(spec, state);
        }
        let Some(key) = self.args.get(1) else {
            return self.apply(spec, state);
        };
        let entry = self.table.entry(self.db, key);
        let before = self.table.name_types_of(entry, self.now);
        if before == NameTypes::Several {
            return self.shared_name(spec, state);
        }
        if let Some(moved) = self.move_into_another_type(spec) {
            return moved;
        }
        let Some((written, removal)) = value_type(spec.cmd, self.args.get(0).unwrap_or_default())
        else {
            return self.apply(spec, state);
        };
        let alone = match before {
            NameTypes::Only { of, alive: true } if of != written => {
                if removal || creates_nothing_when_missing(spec.cmd, self.args) {
                    // Nothing of that type is there: the master changed nothing.
                    return spec
                        .cmd
                        .family()
                        .map_or_else(Proposal::pass, Proposal::passed);
                }
                self.table.mark_shared(self.db, key);
                let risk = self.risk(key, i64::MIN, RiskCause::SeveralTypes);
                return self.shared_name(spec, state).with_risk(risk);
            }
            // Already so: the rule's updates keep the type.
            NameTypes::Only { alive: true, .. } => false,
            NameTypes::Only { alive: false, .. } | NameTypes::Nothing => true,
            // A deadline of unknown type: the rule would add an `expireat` or a `del` for
            // it. The master tells whether the name holds this type only (a look-up asks
            // `EXISTS` beside `PTTL`; [`record_single_type`] notes the answer).
            NameTypes::Untyped if self.policy.pause_on_unknown && spec.cmd.keeps_ttl() => {
                return Proposal {
                    needs_lookup: Some(LookupKind::KeepsTtl),
                    ..Proposal::unknown_key(spec.cmd.family())
                };
            }
            NameTypes::Untyped | NameTypes::Unknown | NameTypes::Several => false,
        };
        if reads_key_first(spec.cmd) {
            self.first_entry.set(Some(entry));
        }
        let proposal = self.apply(spec, state);
        self.first_entry.set(None);
        if alone {
            self.table.set_type(self.db, key, written);
        }
        proposal
    }

    /// SMOVE/RPOPLPUSH/LMOVE into a name that holds another type (alive) or several: the
    /// destination is marked shared and the move passes unchanged, its source forgotten (a
    /// 3.x master logs moves as their removal and add, so its streams never carry one).
    fn move_into_another_type(&mut self, spec: Spec) -> Option<Proposal<'a>> {
        let moved = match spec.cmd {
            Cmd::SetMove => ValueType::Set,
            Cmd::PopPush => ValueType::List,
            _ => return None,
        };
        let dst = self.args.get(2)?;
        match self.table.name_types(self.db, dst, self.now) {
            NameTypes::Only { of, alive: true } if of != moved => {}
            NameTypes::Several => {}
            _ => return None,
        }
        self.table.mark_shared(self.db, dst);
        if let Some(src) = self.args.get(1) {
            self.table.forget(self.db, src);
        }
        let risk = self.risk(dst, i64::MIN, RiskCause::SeveralTypes);
        Some(Proposal::unknown_key(spec.cmd.family()).with_risk(risk))
    }

    /// MSET/MSETNX write strings under every other argument.
    fn apply_typed_mset(&mut self, spec: Spec, state: &mut StreamState) -> Proposal<'a> {
        let keys: Vec<(&'a [u8], NameTypes)> = (1..self.args.count())
            .step_by(2)
            .filter_map(|i| self.args.get(i))
            .map(|key| (key, self.table.name_types(self.db, key, self.now)))
            .collect();
        let proposal = self.apply(spec, state);
        for (key, before) in keys {
            match before {
                NameTypes::Only {
                    of: ValueType::String,
                    ..
                }
                | NameTypes::Only { alive: false, .. }
                | NameTypes::Nothing => self.table.set_type(self.db, key, ValueType::String),
                NameTypes::Only { .. } | NameTypes::Several => self.table.mark_shared(self.db, key),
                NameTypes::Unknown | NameTypes::Untyped => {}
            }
        }
        proposal
    }
}

/// Commands whose rule reads their first key before it writes the table
/// ([`Cx::know_first`]): the read made before the rule serves it.
fn reads_key_first(cmd: Cmd) -> bool {
    cmd.keeps_ttl() || matches!(cmd, Cmd::Set | Cmd::GetSet | Cmd::PkSetExAt)
}

/// After a look-up found one type under `key` on a Pika 3.x master (no other command on the
/// key between `entry` and the answer), the name holds the type `entry` writes.
pub fn record_single_type(table: &ExpiryTable, db: u32, key: &[u8], entry: &dyn Args) {
    let name = entry.get(0).unwrap_or_default();
    let Some(cmd) = spec(name).map(|s| s.cmd) else {
        return;
    };
    // A write that may have done nothing tells nothing of the type that is there.
    if creates_nothing_when_missing(cmd, entry) {
        return;
    }
    if let Some((written, false)) = value_type(cmd, name) {
        table.set_type(db, key, written);
    }
}

/// Writes that leave a missing value missing (LPUSHX, LINSERT without its pivot, `ZADD … XX`,
/// an empty SETRANGE, `SET … XX`, GETEX): on a name that holds another type they do nothing.
fn creates_nothing_when_missing(cmd: Cmd, entry: &dyn Args) -> bool {
    let has_xx =
        || (3..entry.count()).any(|i| entry.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"xx")));
    matches!(cmd, Cmd::ListPushIfExists | Cmd::GetEx)
        || (cmd == Cmd::Set && has_xx())
        || crate::engine::may_leave_missing(entry)
}

/// Commands that remove a name with every type under it, or name no key.
fn removes_names_whole(cmd: Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Del
            | Cmd::FlushDb
            | Cmd::FlushAll
            | Cmd::SwapDb
            | Cmd::Select
            | Cmd::Multi
            | Cmd::Exec
            | Cmd::Discard
            | Cmd::NoOp
    )
}

/// The type of value `cmd` (called `name`) writes under its first key on Pika 3.x, and
/// whether it only removes from it; `None` for commands that reach every type under a name
/// or whose type is not told by them (moves, RESTORE, DEL…).
fn value_type(cmd: Cmd, name: &[u8]) -> Option<(ValueType, bool)> {
    let first = name.first().map(u8::to_ascii_lowercase);
    Some(match cmd {
        cmd if cmd.writes_string() => (ValueType::String, false),
        Cmd::HashWrite => (ValueType::Hash, false),
        Cmd::ListPush | Cmd::ListPushIfExists => (ValueType::List, false),
        Cmd::SetAdd => (ValueType::Set, false),
        Cmd::ZsetWrite => (ValueType::Zset, false),
        Cmd::Removal => match first {
            Some(b'h') => (ValueType::Hash, true),
            Some(b'l' | b'r') => (ValueType::List, true),
            Some(b's') => (ValueType::Set, true),
            Some(b'z') => (ValueType::Zset, true),
            _ => return None,
        },
        Cmd::StoreInto => match first {
            Some(b's') => (ValueType::Set, false),
            Some(b'z') => (ValueType::Zset, false),
            _ => return None,
        },
        _ => return None,
    })
}
