//! The machine's events, logged and counted: each [`Event`] becomes its log line and metrics
//! (an ack, the replica's position in its lag tracker). At-risk entries and look-ups that could
//! not decide an entry come in bursts under load, so their warnings are throttled per link (a
//! line counts the ones it stands for).

use super::Link;
use crate::engine::RiskCause;
use crate::pika_relay::error::Side;
use crate::pika_relay::link::action::{DbId, Event};
use crate::pika_relay::link::held::LookupResult;
use crate::pika_relay::registry::lock;
use crate::pika_relay::stats;

impl Link {
    /// Logs and counts one event of the machine.
    pub(super) fn report(&mut self, event: Event) {
        let name = &self.name;
        let key = |db: DbId| self.machine.db(db).key();
        match event {
            Event::StrayAck { db } => tracing::info!(
                replica = %name, db = %db,
                "dropped an ack for a DB the replica has not resumed on this connection (a reconnecting replica's last ack; a Pika master ignores it too)"
            ),
            Event::PredictionEnded { db } => tracing::warn!(
                replica = %name, db = %key(db),
                "a response carries a command the replica rewrites with its own clock, so its binlog position cannot be predicted; until the replica reconnects, a proxy crash costs it a full sync"
            ),
            Event::Mispredicted {
                db,
                predicted,
                acked,
            } => {
                stats::protocol_error(Side::Replica, "replica_layout");
                tracing::warn!(
                    replica = %name, db = %key(db), predicted = %predicted, acked = %acked,
                    "the replica's binlog position differs from the one predicted (a replica binlog-file-size other than --binlog-file-size, or another Pika release?); until it reconnects, a proxy crash costs it a full sync"
                );
            }
            Event::Release(release) => tracing::info!(
                replica = %name, release = %release.name(),
                "master release from its MetaSync answer; rewrites use its forms"
            ),
            Event::PartialSync => stats::partial_sync(),
            Event::UnaskedTrySyncOk { db, phase } => tracing::warn!(
                replica = %name, db = %key(db), phase,
                "a TrySync acceptance the link did not ask for; waiting for the replica's next TrySync"
            ),
            Event::TrySyncRefused { db, code } => tracing::warn!(
                replica = %name, db = %key(db), ?code, "the master refused the TrySync"
            ),
            Event::SnapshotIdentity { db, position } => tracing::info!(
                replica = %name, db = %key(db), position = %position,
                "full sync finished at the snapshot position: replica offsets equal the master's again"
            ),
            Event::TrySyncTranslated {
                db,
                replica,
                master,
            } => tracing::info!(
                replica = %name, db = %key(db), replica_position = %replica, master_position = %master,
                "replica resumes; TrySync translated"
            ),
            Event::AnsweredPurged { db, replica, map } => tracing::warn!(
                replica = %name, db = %key(db), replica_position = %replica, map,
                "the relay cannot map the replica's position to an exact master position; answering kSyncPointBePurged to force a full sync"
            ),
            Event::FullSync { db, reason } => {
                stats::full_sync(reason);
                tracing::info!(replica = %name, db = %key(db), reason, "full sync (DBSync) requested");
            }
            Event::TableReused { db, keys } => tracing::info!(
                replica = %name, db = %key(db), keys,
                "resuming exactly where the previous link stopped: its expiry table is reused"
            ),
            Event::UnparsableItems { db, items } => {
                stats::protocol_error(Side::Master, "item_content");
                tracing::warn!(
                    replica = %name, db = %key(db), items,
                    "items whose content is not RESP were forwarded unchanged"
                );
            }
            Event::AtRisk {
                db,
                families,
                first,
            } => {
                for family in &families {
                    stats::at_risk(*family);
                }
                if let Some(count) = self.risk_log.admit(families.len() as u64) {
                    tracing::warn!(
                        replica = %name, db = %key(db), key = %String::from_utf8_lossy(&first.key),
                        old_deadline_ms = first.old_deadline_ms, cause = first.cause.name(), count,
                        "{} (count: this and the suppressed ones since the last line)",
                        risk_message(first.cause)
                    );
                }
            }
            Event::LookedUp {
                db,
                result,
                key: looked_up,
                waited,
                item_end,
                found,
            } => {
                stats::lookup(result.name());
                let key_text = String::from_utf8_lossy(&looked_up);
                tracing::debug!(
                    replica = %name, db = %key(db), key = %key_text, item_end = %item_end,
                    result = result.name(), ?found, waited_ms = waited.as_millis() as u64,
                    "look-up ended"
                );
                // A superseded write passes too, but leaves nothing the master lacks.
                let undecided =
                    !matches!(result, LookupResult::Resolved | LookupResult::Superseded);
                if let Some(count) = undecided.then(|| self.lookup_log.admit(1)).flatten() {
                    tracing::warn!(
                        replica = %name, db = %key(db), key = %key_text, result = result.name(),
                        waited_ms = waited.as_millis() as u64, count,
                        "a look-up on the master could not decide an entry; it passed as unknown_key (count: this and the suppressed ones since the last line)"
                    );
                }
            }
            Event::LookUpsPaused { for_secs } => tracing::warn!(
                replica = %name, for_secs,
                "a look-up on the master went unanswered; the link decides without look-ups for a while (writes on keys it does not know pass as unknown_key)"
            ),
            Event::FirstRewrite { db, at } => tracing::info!(
                replica = %name, db = %key(db), at = %at,
                "first rewritten item since the last full sync: replica offsets now differ from the master's and are learned from acks"
            ),
            Event::AckDiverged {
                db,
                replica_end,
                master_end,
            } => tracing::warn!(
                replica = %name, db = %key(db), replica_end = %replica_end, master_end = %master_end,
                "the replica wrote unchanged items at a different position than the master (does it re-serialize commands differently?); learning offsets from acks from now on"
            ),
            // Status and lag gauges are refreshed by the tick: publishing per ack counted every
            // shard of the expiry table and formatted the labels on the path the master waits on.
            Event::Acked { db, at } => lock(&self.dbs[db.0].lag).set_acked(at),
        }
    }
}

/// What an at-risk entry means for the operator, by cause.
fn risk_message(cause: RiskCause) -> &'static str {
    match cause {
        RiskCause::TtlChangeAfterDeadline => {
            "a TTL change may reach the replica after the key's old deadline; the replica may have dropped the key"
        }
        RiskCause::ExistenceAmbiguous | RiskCause::ExistenceUntracked => {
            "a write after an EXPIRE on a key the proxy could not tell existed passed unchanged; the replica may keep the key without its TTL"
        }
        RiskCause::ValueLostByMaster => {
            "the Pika 4.0 master logged this write with an empty value (its APPEND/SETRANGE on a missing key); every replica stores \"\" for the key"
        }
        RiskCause::SeveralTypes => {
            "a Pika 3.x name now holds values of several types (a write of another type while one lived); entries on it pass unrewritten until it is deleted, as to a direct replica"
        }
    }
}
