//! The look-up worker of one link: asks the master, on its client port P, for a key's TTL and
//! the DB's binlog position after it, one key at a time, on a connection it keeps.
//!
//! The link holds its stream while a look-up runs (`link/held.rs` says when the answer can be
//! used), so the worker answers fast or not at all: every question has a deadline, and a
//! connection that failed is opened again for the next question only.
//!
//! One question is one pipelined round trip: `TIME`, `PTTL key`, (`EXISTS key` on 3.x, which
//! counts the types under the name), `TIME`, `INFO replication`.
//! Pika 3.5 keeps deadlines in whole seconds and answers `PTTL` as whole seconds × 1000 from
//! its clock's second, so the deadline is exact when both `TIME`s fall in the same second
//! (otherwise the question is asked again); Pika 4.0 answers in milliseconds.

use std::net::SocketAddr;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client_port::{clock_ms, parse_binlog_offset, Client};
use super::link::held::LookupAnswer;
use crate::engine::{LookedUp, PikaRelease};

/// How long one question may take, connection included.
const QUESTION_LIMIT: Duration = Duration::from_millis(1500);

/// Times a question is asked while the master's clock keeps turning a second during it.
const TRIES: usize = 3;

/// One question.
#[derive(Debug)]
pub(crate) struct Question {
    /// The look-up's id (`Action::LookUp`), given back with its reply.
    pub id: u64,
    /// `db0`, `db1`…
    pub db_name: String,
    pub key: bytes::Bytes,
}

/// One answer, for the look-up that asked.
#[derive(Debug)]
pub(crate) struct Reply {
    pub id: u64,
    pub answer: LookupAnswer,
}

/// A link's look-up worker: questions in, replies out.
pub(crate) struct Lookups {
    questions: mpsc::UnboundedSender<Question>,
    task: JoinHandle<()>,
}

impl Lookups {
    /// Starts the worker for a master at `master` (its client port P); its replies come on
    /// the receiver, in the order of the questions.
    pub(crate) fn start(
        master: SocketAddr,
        password: Option<String>,
        release: PikaRelease,
    ) -> (Lookups, mpsc::UnboundedReceiver<Reply>) {
        let (questions, mut asked) = mpsc::unbounded_channel::<Question>();
        let (answers, replies) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut conn: Option<(Client, String)> = None;
            while let Some(q) = asked.recv().await {
                let asked = tokio::time::timeout(
                    QUESTION_LIMIT,
                    ask(&mut conn, master, password.as_deref(), release, &q),
                )
                .await;
                let answer = match asked {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => {
                        conn = None;
                        LookupAnswer::Failed(e.to_string())
                    }
                    Err(_) => {
                        conn = None;
                        LookupAnswer::Failed(format!(
                            "no answer within {} ms",
                            QUESTION_LIMIT.as_millis()
                        ))
                    }
                };
                if answers.send(Reply { id: q.id, answer }).is_err() {
                    return;
                }
            }
        });
        (Lookups { questions, task }, replies)
    }

    /// Asks; the reply comes on the receiver [`Self::start`] returned.
    pub(crate) fn ask(&self, question: Question) {
        let _ = self.questions.send(question);
    }
}

impl Drop for Lookups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ask(
    conn: &mut Option<(Client, String)>,
    master: SocketAddr,
    password: Option<&str>,
    release: PikaRelease,
    q: &Question,
) -> std::io::Result<LookupAnswer> {
    if conn.is_none() {
        let mut client = Client::connect(master).await?;
        if let Some(pw) = password {
            client.call(&[b"AUTH", pw.as_bytes()]).await?;
        }
        *conn = Some((client, "db0".to_string()));
    }
    let Some((client, selected)) = conn.as_mut() else {
        return Ok(LookupAnswer::Failed("no connection".into()));
    };
    if *selected != q.db_name {
        let index = q.db_name.strip_prefix("db").unwrap_or("0");
        client.call(&[b"SELECT", index.as_bytes()]).await?;
        selected.clone_from(&q.db_name);
    }
    for _ in 0..TRIES {
        client.queue(&[b"TIME"]);
        client.queue(&[b"PTTL", &q.key]);
        let count_types = release == PikaRelease::V3;
        if count_types {
            client.queue(&[b"EXISTS", &q.key]);
        }
        client.queue(&[b"TIME"]);
        client.queue(&[b"INFO", b"replication"]);
        client.flush().await?;
        let before = clock_ms(&client.reply().await?);
        let ttl = client.reply().await?;
        // A 3.x master keeps a value of each type apart under a name and answers `PTTL` for
        // the first it finds; `EXISTS` counts them.
        let several_types =
            count_types && matches!(client.reply().await?, BytesFrame::Integer(types) if types > 1);
        let after = clock_ms(&client.reply().await?);
        let info = client.reply().await?;
        let (Some(before), Some(after)) = (before, after) else {
            return Ok(LookupAnswer::Failed(
                "the master does not answer TIME".into(),
            ));
        };
        let ttl = match ttl {
            BytesFrame::Integer(ttl) => ttl,
            other => {
                return Ok(LookupAnswer::Failed(format!("PTTL answered {other:?}")));
            }
        };
        let master_at = match &info {
            BytesFrame::BulkString(text) | BytesFrame::SimpleString(text) => {
                parse_binlog_offset(text, &q.db_name)
            }
            _ => None,
        };
        let Some(master_at) = master_at else {
            return Ok(LookupAnswer::Failed(format!(
                "INFO replication names no {}:binlog_offset",
                q.db_name
            )));
        };
        if several_types {
            return Ok(LookupAnswer::SeveralTypes { master_at });
        }
        let found = match ttl {
            -1 => LookedUp::NoTtl,
            -2 => LookedUp::ExpiredBy(after),
            ttl if ttl >= 0 => match release {
                // Whole seconds from the second `PTTL` ran in: exact when it is known.
                PikaRelease::V3 if before / 1000 != after / 1000 => continue,
                PikaRelease::V3 => LookedUp::Volatile(before / 1000 * 1000 + ttl),
                PikaRelease::V4 => LookedUp::Volatile(before + ttl),
            },
            other => return Ok(LookupAnswer::Failed(format!("PTTL answered {other}"))),
        };
        return Ok(LookupAnswer::Found { found, master_at });
    }
    Ok(LookupAnswer::Failed(
        "the master's clock turned a second during every try".into(),
    ))
}
