//! What look-ups found, kept on disk until a checkpoint of the table covers them, so that a
//! relay restarted after a crash brings its table forward along the master's binlog
//! ([`super::catch_up`]) to exactly the knowledge it had: the catch-up cannot ask the master
//! again (the master is past those items), so without the answers every key a look-up had
//! settled since the checkpoint would be unknown again.
//!
//! One file per replica DB (`<store key>.pika-answers`), a sequence of
//! [`record_log`](crate::relay_core::record_log) records, each naming the master END of the item
//! the answer was for, the key and the answer. An answer is appended (one `write(2)`, in the
//! kernel before the call returns) before the item it decided is sent to the replica, so it
//! survives the proxy being killed at any instant. It is not synced: after a power loss a lost
//! answer leaves its key unknown after the catch-up (looked up again at its next write), never
//! wrong, because an answer is a fact about one item of the master's history, whichever replica
//! or session reads it.
//!
//! When a new checkpoint is taken, the answers for items at or before the older of the two
//! checkpoints kept on disk are dropped (the file is rewritten with the rest): the file holds
//! the look-ups of about two checkpoint intervals.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::engine::{Answered, Between, LookedUp};
use crate::pika::messages::BinlogPosition;
use crate::relay_core::record_log::{self, put_record, Record};
use crate::state_dir::replace_file;

const SUFFIX: &str = ".pika-answers";
/// A record's payload: file number, offset, answer tag, its instant, what came between (flags,
/// then the last write's instant), then the key.
const FIXED_LEN: usize = 4 + 8 + 1 + 8 + 1 + 8;
const LAST_WRITE: u8 = 1;
const REMOVAL: u8 = 2;
const WRITE_AFTER_REMOVAL: u8 = 4;
/// Pika keys are far shorter; a longer length field is corruption.
const MAX_PAYLOAD: usize = FIXED_LEN + 64 * 1024 * 1024;

/// One answer: what the look-up of `key` found after the master item ending at `end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub end: BinlogPosition,
    pub key: Vec<u8>,
    pub answered: Answered,
}

/// The answers a catch-up may use, by the END of the item they were for.
pub(crate) type Answers = HashMap<BinlogPosition, Vec<(Vec<u8>, Answered)>>;

/// The appending side, owned by the replica DB's link.
#[derive(Debug)]
pub(crate) struct AnswerJournal {
    path: PathBuf,
    file: File,
    /// Every answer in the file, in order, encoded as a record.
    kept: Vec<(BinlogPosition, Vec<u8>)>,
}

fn path_of(dir: &Path, store_key: &str) -> PathBuf {
    dir.join(format!("{store_key}{SUFFIX}"))
}

fn encode(answer: &Answer) -> Vec<u8> {
    let (tag, at) = match answer.answered.found {
        LookedUp::NoTtl => (0u8, 0i64),
        LookedUp::Volatile(at) => (1, at),
        LookedUp::ExpiredBy(at) => (2, at),
    };
    let mut payload = Vec::with_capacity(FIXED_LEN + answer.key.len());
    payload.extend_from_slice(&answer.end.filenum.to_le_bytes());
    payload.extend_from_slice(&answer.end.offset.to_le_bytes());
    payload.push(tag);
    payload.extend_from_slice(&at.to_le_bytes());
    let between = answer.answered.between;
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    payload.push(
        flag(between.last_write.is_some(), LAST_WRITE)
            | flag(between.removal, REMOVAL)
            | flag(between.write_after_removal, WRITE_AFTER_REMOVAL),
    );
    payload.extend_from_slice(&between.last_write.unwrap_or_default().to_le_bytes());
    payload.extend_from_slice(&answer.key);
    let mut record = Vec::with_capacity(record_log::RECORD_HEADER_LEN + payload.len());
    put_record(&mut record, &payload);
    record
}

fn decode(payload: &[u8]) -> Option<Answer> {
    let i64_at = |at: usize| {
        Some(i64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let filenum = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let offset = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
    let at = i64_at(13)?;
    let found = match payload.get(12)? {
        0 => LookedUp::NoTtl,
        1 => LookedUp::Volatile(at),
        2 => LookedUp::ExpiredBy(at),
        _ => return None,
    };
    let flags = *payload.get(21)?;
    if flags & !(LAST_WRITE | REMOVAL | WRITE_AFTER_REMOVAL) != 0 {
        return None;
    }
    let between = Between {
        last_write: if flags & LAST_WRITE != 0 {
            Some(i64_at(22)?)
        } else {
            None
        },
        removal: flags & REMOVAL != 0,
        write_after_removal: flags & WRITE_AFTER_REMOVAL != 0,
    };
    Some(Answer {
        end: BinlogPosition::new(filenum, offset),
        key: payload.get(FIXED_LEN..)?.to_vec(),
        answered: Answered { found, between },
    })
}

/// Every whole answer in `bytes`, in order; reading stops at a torn or damaged record.
fn read(bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    for record in record_log::records(bytes, MAX_PAYLOAD) {
        match record {
            Record::Valid { payload, .. } => match decode(payload) {
                Some(answer) => answers.push(answer),
                None => break,
            },
            Record::Torn { .. } | Record::Corrupt { .. } => break,
        }
    }
    answers
}

/// The answers on disk for items after `after` (the checkpoint a catch-up starts from).
pub(crate) fn load(dir: &Path, store_key: &str, after: BinlogPosition) -> Answers {
    let mut answers = Answers::new();
    let Ok(bytes) = std::fs::read(path_of(dir, store_key)) else {
        return answers;
    };
    for answer in read(&bytes).into_iter().filter(|a| a.end > after) {
        answers
            .entry(answer.end)
            .or_default()
            .push((answer.key, answer.answered));
    }
    answers
}

impl AnswerJournal {
    /// Opens the journal of `store_key`, keeping the whole answers already in it (a catch-up
    /// after a crash reads them) and dropping a torn tail.
    pub(crate) fn open(dir: &Path, store_key: &str) -> io::Result<AnswerJournal> {
        let path = path_of(dir, store_key);
        let old = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let kept: Vec<(BinlogPosition, Vec<u8>)> =
            read(&old).iter().map(|a| (a.end, encode(a))).collect();
        let whole: usize = kept.iter().map(|(_, r)| r.len()).sum();
        if whole != old.len() {
            let whole_records: Vec<u8> = kept.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            replace_file(&path, &whole_records)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AnswerJournal { path, file, kept })
    }

    /// Appends `answer`; it is in the kernel when this returns.
    pub(crate) fn append(&mut self, answer: &Answer) -> io::Result<usize> {
        let record = encode(answer);
        self.file.write_all(&record)?;
        let len = record.len();
        self.kept.push((answer.end, record));
        Ok(len)
    }

    /// Drops the answers for items at or before `covered` (every checkpoint still on disk is
    /// at or after it); rewrites the file only when that drops something.
    pub(crate) fn drop_covered(&mut self, covered: BinlogPosition) -> io::Result<()> {
        let before = self.kept.len();
        self.kept.retain(|(end, _)| *end > covered);
        if self.kept.len() == before {
            return Ok(());
        }
        let rest: Vec<u8> = self
            .kept
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
        replace_file(&self.path, &rest)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }

    /// Answers in the file.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(offset: u64, key: &[u8], found: LookedUp) -> Answer {
        Answer {
            end: BinlogPosition::new(1, offset),
            key: key.to_vec(),
            answered: answered(found),
        }
    }

    fn answered(found: LookedUp) -> Answered {
        Answered {
            found,
            between: Between {
                last_write: (found == LookedUp::NoTtl).then_some(1_796_000_000_000),
                removal: found == LookedUp::NoTtl,
                write_after_removal: false,
            },
        }
    }

    #[test]
    fn answers_come_back_after_a_reopen_and_only_past_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = AnswerJournal::open(dir.path(), "r_db0").unwrap();
        journal.append(&answer(100, b"a", LookedUp::NoTtl)).unwrap();
        journal
            .append(&answer(200, b"b", LookedUp::Volatile(5_000)))
            .unwrap();
        journal
            .append(&answer(200, b"c", LookedUp::ExpiredBy(-7)))
            .unwrap();
        drop(journal);

        let loaded = load(dir.path(), "r_db0", BinlogPosition::new(1, 100));
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[&BinlogPosition::new(1, 200)],
            vec![
                (b"b".to_vec(), answered(LookedUp::Volatile(5_000))),
                (b"c".to_vec(), answered(LookedUp::ExpiredBy(-7)))
            ]
        );
        assert!(load(dir.path(), "other_db0", BinlogPosition::default()).is_empty());

        let mut reopened = AnswerJournal::open(dir.path(), "r_db0").unwrap();
        assert_eq!(reopened.len(), 3, "a reopen keeps what a catch-up needs");
        reopened.drop_covered(BinlogPosition::new(1, 150)).unwrap();
        reopened
            .append(&answer(300, b"d", LookedUp::NoTtl))
            .unwrap();
        let all = load(dir.path(), "r_db0", BinlogPosition::default());
        let mut ends: Vec<_> = all.keys().map(|p| p.offset).collect();
        ends.sort();
        assert_eq!(ends, [200, 300]);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = AnswerJournal::open(dir.path(), "r_db0").unwrap();
        journal.append(&answer(100, b"a", LookedUp::NoTtl)).unwrap();
        drop(journal);
        let path = path_of(dir.path(), "r_db0");
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&encode(&answer(200, b"b", LookedUp::NoTtl))[..10]);
        std::fs::write(&path, &bytes).unwrap();

        let mut journal = AnswerJournal::open(dir.path(), "r_db0").unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
        journal.append(&answer(300, b"c", LookedUp::NoTtl)).unwrap();
        let all = load(dir.path(), "r_db0", BinlogPosition::default());
        assert_eq!(all.len(), 2, "an append after a torn tail is readable");
    }
}
