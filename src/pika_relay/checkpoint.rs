//! Checkpoints of each replica DB's expiry table, and rebuilding the table from one after a
//! crash: the newest checkpoint at or before the replica's resume position is brought forward
//! along the master's binlog ([`super::catch_up`]) and parked at that position, where the
//! resuming link takes it over.
//!
//! A checkpoint is encoded on the link's own task, between two responses, so it is exactly the
//! table at the END of the last forwarded item; the file is written on a blocking thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::answer_journal::{self, Answer, AnswerJournal};
use super::catch_up::{self, CatchUp};
use super::config::{PikaRelayConfig, REPLICATION_PORT_OFFSET};
use super::registry::{ParkedTable, PikaRelayShared};
use super::rewrite::LinkRewriter;
use super::table_store;
use crate::engine::PikaRelease;
use crate::metrics::names::STATE_WRITE_BYTES;
use crate::pika::messages::{BinlogPosition, Slot};

/// Encoding slower than this is logged: the link's stream waited for it.
const SLOW_ENCODE_MS: u128 = 50;

/// Checkpoints of one DB link's table, and the journal of what look-ups found since the
/// older of the two kept on disk.
#[derive(Debug)]
pub(super) struct Checkpointing {
    at: BinlogPosition,
    /// When the last one was taken; the first is due as soon as the table is complete.
    taken: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<()>>,
    /// `None` when the file could not be opened (logged): a catch-up then lacks the answers.
    answers: Option<AnswerJournal>,
}

impl Checkpointing {
    pub(super) fn new(answers: Option<AnswerJournal>) -> Self {
        Checkpointing {
            at: BinlogPosition::default(),
            taken: None,
            writing: None,
            answers,
        }
    }

    /// Journals what a look-up found, before the item it decided goes to the replica.
    pub(super) fn journal(&mut self, store_key: &str, answer: &Answer) {
        let Some(journal) = self.answers.as_mut() else {
            return;
        };
        match journal.append(answer) {
            Ok(bytes) => metrics::counter!(STATE_WRITE_BYTES).increment(bytes as u64),
            Err(e) => {
                tracing::warn!(db_link = %store_key, error = %e,
                    "cannot journal a look-up's answer; after a crash its key is unknown until looked up again");
                self.answers = None;
            }
        }
    }

    /// Writes a checkpoint of `rw`'s table at `at` when the interval has passed, the stream
    /// moved on, the table is complete and the last write is done.
    pub(super) fn maybe_take(
        &mut self,
        cfg: &Arc<PikaRelayConfig>,
        store_key: &str,
        rw: &LinkRewriter,
        at: BinlogPosition,
    ) {
        if self.at == at
            || self
                .taken
                .is_some_and(|t| t.elapsed() < cfg.checkpoint_interval)
            || self.writing.as_ref().is_some_and(|w| !w.is_finished())
            || !rw.table().is_complete()
        {
            return;
        }
        let parked = ParkedTable {
            table: rw.table().clone(),
            state: rw.stream_state(),
            at,
            journaled: Default::default(),
        };
        let started = Instant::now();
        let encoded = table_store::encode(store_key, cfg.master, &parked);
        let encode_ms = started.elapsed().as_millis();
        let (dir, key, keys): (PathBuf, String, usize) = (
            cfg.state_dir.clone(),
            store_key.to_string(),
            parked.table.len(),
        );
        // Every checkpoint on disk is at or after the one before this, once this is written.
        let covered = std::mem::replace(&mut self.at, at);
        if let Some(journal) = self.answers.as_mut() {
            if let Err(e) = journal.drop_covered(covered) {
                tracing::warn!(db_link = %store_key, error = %e,
                    "cannot compact the look-up answer journal; after a crash its keys are unknown until looked up again");
                self.answers = None;
            }
        }
        self.taken = Some(Instant::now());
        if encode_ms >= SLOW_ENCODE_MS {
            // The link waited for it: the operator should see what checkpoints cost.
            tracing::info!(db_link = %store_key, %at, keys, encode_ms,
                "checkpoint of a large expiry table held the link while it was encoded");
        }
        self.writing = Some(tokio::task::spawn_blocking(
            move || match table_store::save_checkpoint(&dir, &key, &encoded) {
                Ok(()) => {
                    tracing::debug!(db_link = %key, %at, keys, bytes = encoded.len(), encode_ms,
                    "checkpoint of the expiry table written")
                }
                Err(e) => tracing::warn!(db_link = %key, %at, error = %e,
                    "cannot write a checkpoint of the expiry table; after a crash its keys are unknown until the warm-up"),
            },
        ));
    }
}

/// What rebuilding one DB link's table needs.
pub(super) struct Restore<'a> {
    pub cfg: &'a Arc<PikaRelayConfig>,
    pub shared: &'a PikaRelayShared,
    pub release: PikaRelease,
    pub replica: &'a str,
    pub db: &'a str,
    pub store_key: &'a str,
    pub slot: Slot<'a>,
}

impl Restore<'_> {
    /// Parks the table at `master` rebuilt from the newest usable checkpoint; without one (none
    /// at or before `master`, or a catch-up that fails) nothing is parked and the log says why:
    /// the link then starts as before (warm-up).
    pub(super) async fn at(&self, master: BinlogPosition) {
        let (cfg, shared) = (self.cfg, self.shared);
        let (dir, key, master_addr) = (
            cfg.state_dir.clone(),
            self.store_key.to_string(),
            cfg.master,
        );
        let found = tokio::task::spawn_blocking(move || {
            table_store::load_checkpoint(&dir, &key, master_addr, master)
        })
        .await
        .ok()
        .flatten();
        let Some(checkpoint) = found else {
            return;
        };
        let mut rw = LinkRewriter::new(
            checkpoint.table.clone(),
            checkpoint.state.db,
            shared.families.clone(),
        );
        rw.set_stream_state(checkpoint.state);
        rw.set_pika_release(self.release);
        // What look-ups found after the checkpoint (the dead link's, and a standby reader's
        // since the restart): the catch-up decides its items with them, and the link the rest.
        let (dir, key, after) = (
            cfg.state_dir.clone(),
            self.store_key.to_string(),
            checkpoint.at,
        );
        let answers = tokio::task::spawn_blocking(move || answer_journal::load(&dir, &key, after))
            .await
            .unwrap_or_default();
        rw.set_journaled_answers(answers);
        if checkpoint.at < master {
            let Some(repl) = PikaRelayConfig::shifted(cfg.master, REPLICATION_PORT_OFFSET) else {
                return;
            };
            let job = CatchUp {
                master: repl,
                password: cfg.master_password.clone(),
                node_ip: match cfg.listen.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                    ip => ip.to_string(),
                },
                node_port: cfg.listen.port(),
                db_name: self.slot.db_name.to_vec(),
                slot_id: self.slot.slot_id,
                from: checkpoint.at,
                until: master,
            };
            // One at a time: they share the relay's node name on the master.
            let _one_at_a_time = shared.catch_up.lock().await;
            match catch_up::run(&job, &mut rw, cfg.catch_up_limit).await {
                Ok(caught) => tracing::info!(
                    replica = %self.replica, db = %self.db, from = %checkpoint.at, to = %master,
                    items = caught.items, took_ms = caught.took.as_millis() as u64,
                    "expiry table brought from its checkpoint to the resume position along the master's binlog"
                ),
                Err(why) => {
                    tracing::warn!(
                        replica = %self.replica, db = %self.db, from = %checkpoint.at, to = %master,
                        "cannot bring the expiry table's checkpoint to the resume position: {why}; starting without it (warm-up)"
                    );
                    return;
                }
            }
        } else {
            tracing::info!(replica = %self.replica, db = %self.db, at = %master,
                "resuming exactly at the expiry table's checkpoint");
        }
        shared.park_for_resume(
            self.store_key,
            ParkedTable {
                table: rw.table().clone(),
                state: rw.stream_state(),
                at: master,
                journaled: rw.take_journaled_answers(),
            },
        );
    }
}
