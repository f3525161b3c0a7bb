//! The standby reader: between a relay's start and the return of a replica it relayed before,
//! it follows the master for that replica DB and asks look-ups as the master writes.
//!
//! After a crash a replica comes back when its own timer says so (a real 4.0.1 replica about
//! 10 s after the relay restarts). Until then the master's items for it wait in the master's
//! binlog, and the link, once back, reads them seconds after the master wrote them; a look-up
//! asked then may find the key changed again and decide nothing (`written_again`,
//! `outlived`). So at the relay's start, for each replica DB with a checkpoint, a standby
//! reader opens a session of its own on the master (as a catch-up does, under its own node
//! name) at the checkpoint, runs the items through a table of its own, acks each response at
//! once so the master sends the next as it writes it, and asks the master about a write its
//! table cannot decide as soon as it reads it. An answer is checked exactly as a link's hold
//! checks it ([`Held::verdict`]) and, when usable, appended to the DB's answer journal. The
//! link that opens the DB later stops the reader first; its catch-up and its own stream then
//! decide those items with the journaled answers (`LinkRewriter::set_journaled_answers`).
//!
//! An answer is a fact about the master (the key's TTL just after that item), so it holds
//! whatever table the link decides the item with. The reader stops after [`STANDBY_LIMIT`],
//! when the relay stops, or on any error (logged); nothing else depends on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::answer_journal::{self, Answer, AnswerJournal};
use super::catch_up::{CatchUp, OwnSession};
use super::client_port;
use super::config::{PikaRelayConfig, REPLICATION_PORT_OFFSET, RSYNC_PORT_OFFSET};
use super::link::action::DbId;
use super::link::held::{Held, LookupResult};
use super::link::input::Response;
use super::lookup::{Lookups, Question};
use super::registry::{ParkedTable, PikaRelayShared, StandbyHandle};
use super::rewrite::{LinkRewriter, RewriteStep};
use super::stats;
use crate::engine::PikaRelease;
use crate::families::FamilySwitches;

/// How long a standby reader follows the master for a replica that has not come back.
pub(crate) const STANDBY_LIMIT: Duration = Duration::from_secs(120);

/// How often a waiting look-up is checked for its time limit.
const TICK: Duration = Duration::from_millis(100);

/// What one standby reader needs.
pub(crate) struct StandbyJob {
    /// The session to open (its `from`/`until` are unused: it starts at `checkpoint.at`).
    pub session: CatchUp,
    /// The master's client port P (look-ups).
    pub master_client: SocketAddr,
    pub release: PikaRelease,
    pub families: FamilySwitches,
    pub state_dir: PathBuf,
    pub store_key: String,
    pub checkpoint: ParkedTable,
    /// `binlog-file-size`, for how far an answer is past the items read.
    pub binlog_file_size: u64,
}

/// How a standby reader ended, for the log.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    pub items: u64,
    pub journaled: u64,
    pub undecided: u64,
}

/// Follows the master until `stop`, [`STANDBY_LIMIT`] or an error.
pub(crate) async fn run(job: StandbyJob, stop: CancellationToken) -> Result<Followed, String> {
    let mut journal = AnswerJournal::open(&job.state_dir, &job.store_key)
        .map_err(|e| format!("cannot open the answer journal: {e}"))?;
    let mut session = OwnSession::open(&job.session, job.checkpoint.at).await?;
    tracing::debug!(db_link = %job.store_key, "standby reader streaming");
    let mut reader = Reader {
        rewriter: LinkRewriter::new(
            Arc::clone(&job.checkpoint.table),
            job.checkpoint.state.db,
            job.families.clone(),
        ),
        held: None,
        asked: 0,
        followed: Followed::default(),
        file_size: job.binlog_file_size,
        db_name: String::from_utf8_lossy(&job.session.db_name).into_owned(),
    };
    reader.rewriter.set_stream_state(job.checkpoint.state);
    // The dead link's answers for the backlog after the checkpoint: not asked again.
    reader.rewriter.set_journaled_answers(answer_journal::load(
        &job.state_dir,
        &job.store_key,
        job.checkpoint.at,
    ));
    reader.rewriter.set_pika_release(job.release);
    reader.rewriter.set_look_ups(true);
    reader.rewriter.stop_counting();
    let (lookups, mut replies) =
        Lookups::start(job.master_client, job.session.password.clone(), job.release);
    let deadline = tokio::time::Instant::now() + STANDBY_LIMIT;
    let mut tick = tokio::time::interval(TICK);
    loop {
        let mut answers = Vec::new();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            body = session.next_items() => {
                let body = body?;
                // Acked at once: the master sends the next items as it writes them.
                if let Some((first, last)) = item_range(&body) {
                    session.ack(first, last).await?;
                }
                reader.take(body, &lookups, &mut answers)?;
            }
            Some(reply) = replies.recv() => {
                if let Some(held) = reader.held.as_mut().filter(|h| h.asked == reply.id) {
                    held.answer = Some(reply.answer);
                }
                reader.settle(&lookups, &mut answers)?;
            }
            _ = tick.tick() => reader.settle(&lookups, &mut answers)?,
        }
        for answer in answers {
            journal
                .append(&answer)
                .map_err(|e| format!("cannot journal an answer: {e}"))?;
            reader.followed.journaled += 1;
        }
    }
    Ok(reader.followed)
}

/// The first and last item of a BinlogSync response.
fn item_range(
    body: &Bytes,
) -> Option<(
    crate::pika::messages::LogicalOffset,
    crate::pika::messages::LogicalOffset,
)> {
    let Ok(Response::BinlogSync(resp)) = Response::decode(body) else {
        return None;
    };
    let mut items = resp.records.iter().filter(|r| !r.entry.is_keepalive());
    let first = items.next()?;
    let last = items.next_back().unwrap_or(first);
    Some((
        first.entry.binlog_offset.logical(),
        last.entry.binlog_offset.logical(),
    ))
}

struct Reader {
    rewriter: LinkRewriter,
    /// The response paused at a write whose key was asked about, and those read since.
    held: Option<Held>,
    asked: u64,
    followed: Followed,
    file_size: u64,
    db_name: String,
}

impl Reader {
    /// A response read from the master: queued behind a hold, or run through the table.
    fn take(
        &mut self,
        body: Bytes,
        lookups: &Lookups,
        answers: &mut Vec<Answer>,
    ) -> Result<(), String> {
        match self.held.as_mut() {
            Some(held) => held.queued.push_back(body),
            None => self.rewrite(body, None, lookups)?,
        }
        self.settle(lookups, answers)
    }

    /// Runs `body` (from `resume` within it) through the table; a write it cannot decide holds
    /// the response and is asked about.
    fn rewrite(
        &mut self,
        body: Bytes,
        resume: Option<crate::pika_relay::rewrite::ResponseProgress>,
        lookups: &Lookups,
    ) -> Result<(), String> {
        let Ok(Response::BinlogSync(resp)) = Response::decode(&body) else {
            return Err("a BinlogSync response that does not decode".into());
        };
        let step = self
            .rewriter
            .rewrite_records_from(&body, &resp.records, None, resume)
            .map_err(|e| format!("an item: {e}"))?;
        tracing::trace!(
            items = resp.records.len(),
            paused = matches!(step, RewriteStep::Paused(_)),
            "standby reader: a response"
        );
        match step {
            RewriteStep::Done(done) => {
                self.followed.items += done.forwarded.map_or(0, |f| f.items as u64);
            }
            RewriteStep::Paused(paused) => {
                self.asked += 1;
                lookups.ask(Question {
                    id: self.asked,
                    db_name: self.db_name.clone(),
                    key: Bytes::copy_from_slice(&paused.key),
                });
                self.held = Some(Held {
                    db: DbId(0),
                    body: body.clone(),
                    paused,
                    predict_from: None,
                    queued: Default::default(),
                    since: Instant::now(),
                    answer: None,
                    pre_acked: 0,
                    asked: self.asked,
                    scanned: None,
                });
            }
        }
        Ok(())
    }

    /// Decides the held write once its answer is usable (or given up), then goes on with the
    /// responses read meanwhile, until they are all through or one pauses again.
    fn settle(&mut self, lookups: &Lookups, answers: &mut Vec<Answer>) -> Result<(), String> {
        loop {
            let Some(held) = self.held.as_mut() else {
                return Ok(());
            };
            let Some((found, result)) =
                held.verdict(&mut self.rewriter, Instant::now(), self.file_size)
            else {
                return Ok(());
            };
            let Some(mut held) = self.held.take() else {
                return Ok(());
            };
            match result {
                LookupResult::Behind => {
                    if let Some(at) = held.answered_at() {
                        self.rewriter.skip_look_ups_until(at);
                    }
                }
                // A master that cannot answer: the rest is followed without look-ups.
                LookupResult::Timeout | LookupResult::Failed => self.rewriter.set_look_ups(false),
                _ => {}
            }
            let (result, journal) = held.decide(&mut self.rewriter, found, result);
            answers.extend(journal);
            if result != LookupResult::Resolved {
                self.followed.undecided += 1;
            }
            stats::lookup(result.name());
            tracing::debug!(item_end = %held.paused.end, result = result.name(), found = ?found.map(|a| a.found),
                "standby reader: look-up ended");
            self.rewrite(held.body, Some(held.paused.progress), lookups)?;
            let mut queued = held.queued;
            while let Some(body) = queued.pop_front() {
                if let Some(again) = self.held.as_mut() {
                    again.queued.push_back(body);
                    continue;
                }
                self.rewrite(body, None, lookups)?;
            }
        }
    }
}

/// DB name and slot from a store key (`<ip>_<port>_<db>`, `db0` or `db0-<slot>`).
fn db_of(store_key: &str) -> Option<(Vec<u8>, u32)> {
    let (_, db) = store_key.rsplit_once('_')?;
    match db.split_once('-') {
        Some((name, slot)) => Some((name.as_bytes().to_vec(), slot.parse().ok()?)),
        None => Some((db.as_bytes().to_vec(), 0)),
    }
}

/// Starts a standby reader for every replica DB with a checkpoint, one at a time on the
/// master (they share a node name: the relay's rsync port, which no replica can have).
pub(crate) fn start_all(
    cfg: &Arc<PikaRelayConfig>,
    shared: &PikaRelayShared,
    checkpoints: Vec<(String, ParkedTable)>,
    relay_stops: &CancellationToken,
) {
    if !cfg.look_ups {
        return;
    }
    let (Some(repl), Some(own)) = (
        PikaRelayConfig::shifted(cfg.master, REPLICATION_PORT_OFFSET),
        PikaRelayConfig::shifted(cfg.listen, RSYNC_PORT_OFFSET),
    ) else {
        return;
    };
    for (store_key, checkpoint) in checkpoints {
        let Some((db_name, slot_id)) = db_of(&store_key) else {
            continue;
        };
        let job = StandbyJob {
            session: CatchUp {
                master: repl,
                password: cfg.master_password.clone(),
                node_ip: match cfg.listen.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                    ip => ip.to_string(),
                },
                node_port: own.port(),
                db_name,
                slot_id,
                from: checkpoint.at,
                until: checkpoint.at,
            },
            master_client: cfg.master,
            release: PikaRelease::default(),
            families: shared.families.clone(),
            state_dir: cfg.state_dir.clone(),
            store_key: store_key.clone(),
            checkpoint,
            binlog_file_size: cfg.binlog_file_size,
        };
        let stop = relay_stops.child_token();
        let node = Arc::clone(&shared.standby_node);
        let key = store_key.clone();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut job = job;
            let _one_at_a_time = tokio::select! {
                held = node.lock_owned() => held,
                _ = stopped.cancelled() => return,
            };
            let asked = tokio::time::timeout(
                Duration::from_secs(2),
                client_port::master_release(job.master_client, job.session.password.as_deref()),
            )
            .await;
            job.release = match asked {
                Ok(Ok(Some(Ok(release)))) => release,
                _ => {
                    tracing::info!(db_link = %key, "no standby reader: the master's release is not known yet");
                    return;
                }
            };
            let from = job.checkpoint.at;
            tracing::info!(db_link = %key, %from,
                "standby reader following the master from the checkpoint until the replica comes back (look-ups asked as the master writes)");
            match run(job, stopped).await {
                Ok(f) => {
                    tracing::info!(db_link = %key, items = f.items, journaled = f.journaled, undecided = f.undecided,
                    "standby reader stopped")
                }
                Err(why) => tracing::warn!(db_link = %key,
                    "standby reader stopped: {why}; the replica's backlog is looked up when it comes back"),
            }
        });
        shared.add_standby(&store_key, StandbyHandle { stop, task });
    }
}
