//! Commands on a key whatever its type: EXISTS, DEL, the EXPIRE family with Redis 7's flags,
//! PERSIST and TTL, and when each dialect deletes a key whose new deadline is already over; and
//! FLUSHDB, on every key of the DB.

use super::*;

/// Which flag an EXPIRE-family command carries (Redis 7 only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireFlag {
    None,
    Nx,
    Xx,
    Gt,
    Lt,
}

impl Keyspace {
    /// A command on a key of any type, of [`Keyspace::exec`].
    pub(super) fn exec_key(&mut self, db: u32, name: &str, argv: &[Bytes], now: i64) -> Exec {
        let n = argv.len();
        let need = |ok: bool| if ok { Ok(()) } else { Err(arity(name)) };
        match name {
            "EXISTS" => {
                need(n >= 2)?;
                let count = argv[1..]
                    .iter()
                    .filter(|k| self.live(db, k, now).is_some())
                    .count();
                Ok(Effect::new(Reply::Int(count as i64), false))
            }
            "FLUSHDB" => {
                need(n == 1)?;
                self.records.retain(|(d, _), _| *d != db);
                // Both servers propagate it even on an empty DB.
                Ok(Effect::new(Reply::Ok, true))
            }
            "DEL" | "UNLINK" => {
                need(n >= 2)?;
                let mut deleted = 0;
                for key in &argv[1..] {
                    if self.live_mut(db, key, now).is_some() {
                        self.records.remove(&(db, key.clone()));
                        deleted += 1;
                    }
                }
                Ok(Effect::new(Reply::Int(deleted), deleted > 0))
            }
            "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => self.expire(db, name, argv, now),
            "PERSIST" => {
                need(n == 2)?;
                match self.live_mut(db, &argv[1], now) {
                    Some(r) if r.deadline_ms.is_some() => {
                        r.deadline_ms = None;
                        Ok(Effect::new(Reply::Int(1), true))
                    }
                    _ => Ok(Effect::new(Reply::Int(0), false)),
                }
            }
            "TTL" | "PTTL" => {
                need(n == 2)?;
                let reply = match self.live(db, &argv[1], now) {
                    None => -2,
                    Some(Record {
                        deadline_ms: None, ..
                    }) => -1,
                    Some(Record {
                        deadline_ms: Some(d),
                        ..
                    }) => {
                        let left = d - now;
                        if name == "TTL" {
                            (left + 500) / 1000
                        } else {
                            left
                        }
                    }
                };
                Ok(Effect::new(Reply::Int(reply), false))
            }
            // Unreached: `Keyspace::exec` sends only this family's names here.
            _ => Err(Failure::Unknown(name.to_ascii_lowercase())),
        }
    }

    fn expire(&mut self, db: u32, name: &str, argv: &[Bytes], now: i64) -> Exec {
        let n = argv.len();
        if !(n == 3 || (n == 4 && !self.is_pika())) {
            return Err(if n == 4 {
                rejected("syntax error")
            } else {
                arity(name)
            });
        }
        let flag = match argv.get(3).map(|f| f.to_ascii_uppercase()) {
            None => ExpireFlag::None,
            Some(f) => match f.as_slice() {
                b"NX" => ExpireFlag::Nx,
                b"XX" => ExpireFlag::Xx,
                b"GT" => ExpireFlag::Gt,
                b"LT" => ExpireFlag::Lt,
                _ => return Err(rejected("unsupported option")),
            },
        };
        let raw = int_arg(&argv[2])?;
        let when = match name {
            "EXPIRE" => self.relative_deadline(now, Self::seconds_to_ms(raw)?)?,
            "PEXPIRE" => self.relative_deadline(now, raw)?,
            "EXPIREAT" => Self::seconds_to_ms(raw)?,
            _ if self.is_pika_4_0() => pika_4_0_int32_ms(raw),
            _ => self.absolute_ms(raw),
        };
        let key = &argv[1];
        let pika = self.is_pika();
        let replica = self.replica;
        let Some(rec) = self.live_mut(db, key, now) else {
            return Ok(Effect::new(Reply::Int(0), false));
        };
        let current = rec.deadline_ms;
        let allowed = match flag {
            ExpireFlag::None => true,
            ExpireFlag::Nx => current.is_none(),
            ExpireFlag::Xx => current.is_some(),
            // A key without TTL counts as an infinite TTL.
            ExpireFlag::Gt => current.is_some_and(|c| when > c),
            ExpireFlag::Lt => current.is_none_or(|c| when < c),
        };
        if !allowed {
            return Ok(Effect::new(Reply::Int(0), false));
        }
        // A relative TTL ≤ 0 deletes on both servers, and Redis deletes for an absolute time at
        // or before now (checkAlreadyExpired). Pika deletes for ts ≤ 0 and otherwise stores the
        // timestamp: a key is stale only once its second is over, which no reader can tell
        // from a deleted one.
        let relative = matches!(name, "EXPIRE" | "PEXPIRE");
        let deletes = if relative || (!pika && !replica) {
            when <= now
        } else if !pika {
            when < now
        } else {
            raw <= 0 || when < now
        };
        if deletes {
            self.records.remove(&(db, key.clone()));
            let mut e = Effect::new(Reply::Int(1), true);
            e.deleted_by_expire = true;
            return Ok(e);
        }
        rec.deadline_ms = Some(when);
        let mut e = Effect::new(Reply::Int(1), true);
        e.deadline_ms = Some(when);
        Ok(e)
    }
}
