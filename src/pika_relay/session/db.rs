//! What the driver keeps per DB beside the machine's state, and how a DB joins the link: its
//! offset map and look-up answer journal are opened on a blocking thread (both read the state
//! directory), and its lag tracker is the one a previous link of the replica left, if any, so
//! the lag of a replica the master dropped keeps counting when it comes back.

use super::Link;
use crate::pika::messages::{Node, Slot};
use crate::pika_relay::answer_journal::AnswerJournal;
use crate::pika_relay::checkpoint::Checkpointing;
use crate::pika_relay::error::LinkError;
use crate::pika_relay::link::db_key;
use crate::pika_relay::map_commit::CommittedMap;
use crate::pika_relay::map_store::Loaded;
use crate::pika_relay::tip::Tracker;

/// What the driver keeps per DB beside the machine's state (same [`DbId`](crate::pika_relay::link::action::DbId)).
pub(super) struct DbResources {
    /// The DB's offset map writer.
    pub(super) store: CommittedMap,
    /// The last checkpoint of the table: where and when, and its write if still running.
    pub(super) checkpoint: Checkpointing,
    /// This replica's lag tracker for the DB, shared with the tip poller (it outlives the link
    /// so a dropped replica's lag keeps growing).
    pub(super) lag: Tracker,
}

/// A file-name-safe key for one replica's DB.
fn store_key(node: &Node<'_>, db: &str) -> String {
    let ip: String = String::from_utf8_lossy(node.ip)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let db: String = db
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{ip}_{}_{db}", node.port)
}

impl Link {
    /// Opens the offset map of the DB `slot` and adds the DB to the machine.
    pub(super) async fn open_db(
        &mut self,
        node: &Node<'_>,
        slot: &Slot<'_>,
    ) -> Result<(), LinkError> {
        let key = db_key(slot.db_name, slot.slot_id);
        let skey = store_key(node, &key);
        let shared = self.setup.shared.clone();
        let dir = self.setup.cfg.state_dir.clone();
        let skey2 = skey.clone();
        let link = self.id;
        // Its answers must all be in the journal before this link reads it.
        self.setup.shared.stop_standby(&skey).await;
        let (store, loaded, map, answers) = tokio::task::spawn_blocking(move || {
            let (store, loaded, map) = shared.map_store(&dir, &skey2, link)?;
            let answers = AnswerJournal::open(&dir, &skey2);
            Ok::<_, std::io::Error>((store, loaded, map, answers))
        })
        .await
        .map_err(|e| LinkError::Persist(std::io::Error::other(e)))?
        .map_err(LinkError::Persist)?;
        let answers = answers
            .inspect_err(|e| tracing::warn!(replica = %self.name, db = %key, error = %e,
                "cannot open the look-up answer journal; after a crash the keys look-ups settled are unknown until looked up again"))
            .ok();
        match loaded {
            Some(Loaded::Missing) => tracing::info!(
                replica = %self.name, db = %key,
                "no offset map yet: the replica's first resume through the relay will be a full sync"
            ),
            Some(Loaded::Corrupt(why)) => tracing::warn!(
                replica = %self.name, db = %key,
                "the offset map is corrupt ({why}); it was reset and the replica's next resume will be a full sync"
            ),
            Some(Loaded::State(ref s, torn)) => tracing::info!(
                replica = %self.name, db = %key, map = s.name(), points = s.points(), torn_bytes = torn,
                "offset map loaded"
            ),
            None => {}
        }
        let lag = self.setup.shared.lag.tracker(&self.name, &key);
        let id = self.machine.add_db(slot, skey, map);
        debug_assert_eq!(id.0, self.dbs.len());
        self.dbs.push(DbResources {
            store,
            checkpoint: Checkpointing::new(answers),
            lag,
        });
        Ok(())
    }
}
