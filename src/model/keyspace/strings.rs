//! String commands of the model keyspace (SET and its options, SETEX, `pksetexat`, counters,
//! APPEND, SETRANGE, MSET…), with each dialect's limits on TTLs and timestamps.

use super::*;

/// Largest string a SETRANGE may build in the model (keeps replays of odd streams bounded).
const MAX_STRING_LEN: usize = 1 << 20;

/// Pika rejects `pksetexat` timestamps at or above this (int32 seconds).
const PIKA_MAX_TIMESTAMP: i64 = i32::MAX as i64;

/// The expiry option of a SET.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetExpiry {
    None,
    KeepTtl,
    /// An absolute deadline in ms, already computed for this keyspace's precision.
    At(i64),
}

impl Keyspace {
    /// A string command of [`Keyspace::exec`].
    pub(super) fn exec_string(&mut self, db: u32, name: &str, argv: &[Bytes], now: i64) -> Exec {
        let n = argv.len();
        let need = |ok: bool| if ok { Ok(()) } else { Err(arity(name)) };
        match name {
            "SET" => {
                need(n >= 3)?;
                self.set(db, argv, now)
            }
            "SETEX" | "PSETEX" => {
                need(n == 4)?;
                let ttl = int_arg(&argv[2])?;
                let ttl_ms = if name == "SETEX" {
                    ttl.checked_mul(1000)
                        .ok_or_else(|| rejected("invalid expire time"))?
                } else {
                    ttl
                };
                if ttl <= 0 || (self.is_pika() && ttl_ms < 1000) {
                    return Err(rejected(format!(
                        "invalid expire time in '{}' command",
                        name.to_ascii_lowercase()
                    )));
                }
                let deadline = self.relative_deadline(now, ttl_ms)?;
                self.put_string(db, &argv[1], argv[3].clone(), Some(deadline));
                let mut e = Effect::new(Reply::Ok, true);
                e.deadline_ms = Some(deadline);
                Ok(e)
            }
            "PKSETEXAT" => {
                if !self.is_pika() {
                    return Err(Failure::Unknown(name.to_ascii_lowercase()));
                }
                need(n == 4)?;
                let ts = int_arg(&argv[2])?;
                if ts >= PIKA_MAX_TIMESTAMP {
                    return Err(rejected("invalid timestamp (>= INT32_MAX)"));
                }
                let deadline = match ts {
                    0 => None,
                    t if t < 0 => Some(now - 1),
                    // The 4.0 replica's int32 cast: lands already expired.
                    t if self.replica && self.is_pika_4_0() => {
                        Some(pika_4_0_int32_ms(t.saturating_mul(1000)))
                    }
                    t => Some(Self::seconds_to_ms(t)?),
                };
                self.put_string(db, &argv[1], argv[3].clone(), deadline);
                let mut e = Effect::new(Reply::Ok, true);
                e.deadline_ms = deadline;
                Ok(e)
            }
            "SETNX" => {
                need(n == 3)?;
                if self.live(db, &argv[1], now).is_some() {
                    return Ok(Effect::new(Reply::Int(0), false));
                }
                self.put_string(db, &argv[1], argv[2].clone(), None);
                Ok(Effect::new(Reply::Int(1), true))
            }
            "GETSET" => {
                need(n == 3)?;
                let old = self.string_at(db, &argv[1], now)?;
                self.put_string(db, &argv[1], argv[2].clone(), None);
                let reply = old.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v));
                Ok(Effect::new(reply, true))
            }
            "GET" => {
                need(n == 2)?;
                let v = self.string_at(db, &argv[1], now)?;
                Ok(Effect::new(
                    v.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)),
                    false,
                ))
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = match name {
                    "INCR" => {
                        need(n == 2)?;
                        1
                    }
                    "DECR" => {
                        need(n == 2)?;
                        -1
                    }
                    "INCRBY" => {
                        need(n == 3)?;
                        int_arg(&argv[2])?
                    }
                    _ => {
                        need(n == 3)?;
                        int_arg(&argv[2])?
                            .checked_neg()
                            .ok_or_else(|| rejected("decrement would overflow"))?
                    }
                };
                let cur = self.string_at(db, &argv[1], now)?;
                let (old, deadline) = match cur {
                    None => (0, None),
                    Some((v, d)) => (
                        parse_i64(&v).ok_or_else(|| {
                            Failure::Failed("value is not an integer or out of range".into())
                        })?,
                        d,
                    ),
                };
                let new = old.checked_add(by).ok_or_else(|| {
                    Failure::Failed("increment or decrement would overflow".into())
                })?;
                self.put_string(db, &argv[1], int_bytes(new), deadline);
                Ok(Effect::new(Reply::Int(new), true))
            }
            "INCRBYFLOAT" => {
                need(n == 3)?;
                let by = float_arg(&argv[2])?;
                let cur = self.string_at(db, &argv[1], now)?;
                let (old, deadline) = match cur {
                    None => (0.0, None),
                    Some((v, d)) => (
                        parse_f64(&v)
                            .ok_or_else(|| Failure::Failed("value is not a valid float".into()))?,
                        d,
                    ),
                };
                let new = old + by;
                if !new.is_finite() {
                    return Err(Failure::Failed(
                        "increment would produce NaN or Infinity".into(),
                    ));
                }
                let text = Bytes::from(format_float(new));
                self.put_string(db, &argv[1], text.clone(), deadline);
                let mut e = Effect::new(Reply::Bulk(text.clone()), true);
                e.float_result = Some(text);
                Ok(e)
            }
            "APPEND" => {
                need(n == 3)?;
                let cur = self.string_at(db, &argv[1], now)?;
                let (mut buf, deadline) = match cur {
                    None => (Vec::new(), None),
                    Some((v, d)) => (v.to_vec(), d),
                };
                buf.extend_from_slice(&argv[2]);
                if buf.len() > MAX_STRING_LEN {
                    return Err(Failure::Failed(
                        "string exceeds maximum allowed size".into(),
                    ));
                }
                let len = buf.len() as i64;
                self.put_string(db, &argv[1], Bytes::from(buf), deadline);
                Ok(Effect::new(Reply::Int(len), true))
            }
            "SETRANGE" => {
                need(n == 4)?;
                let offset = int_arg(&argv[2])?;
                let offset =
                    usize::try_from(offset).map_err(|_| rejected("offset is out of range"))?;
                let cur = self.string_at(db, &argv[1], now)?;
                let piece = &argv[3];
                let (mut buf, deadline) = match cur {
                    None if piece.is_empty() => return Ok(Effect::new(Reply::Int(0), false)),
                    None => (Vec::new(), None),
                    Some((v, d)) => (v.to_vec(), d),
                };
                if piece.is_empty() {
                    return Ok(Effect::new(Reply::Int(buf.len() as i64), false));
                }
                let end = offset
                    .checked_add(piece.len())
                    .filter(|e| *e <= MAX_STRING_LEN)
                    .ok_or_else(|| Failure::Failed("string exceeds maximum allowed size".into()))?;
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[offset..end].copy_from_slice(piece);
                let len = buf.len() as i64;
                self.put_string(db, &argv[1], Bytes::from(buf), deadline);
                Ok(Effect::new(Reply::Int(len), true))
            }
            "MSET" => {
                need(n >= 3 && n % 2 == 1)?;
                for pair in argv[1..].chunks(2) {
                    self.put_string(db, &pair[0], pair[1].clone(), None);
                }
                Ok(Effect::new(Reply::Ok, true))
            }
            // Unreached: `Keyspace::exec` sends only this family's names here.
            _ => Err(Failure::Unknown(name.to_ascii_lowercase())),
        }
    }

    fn set(&mut self, db: u32, argv: &[Bytes], now: i64) -> Exec {
        let (mut nx, mut xx, mut get) = (false, false, false);
        let mut expiry = SetExpiry::None;
        let mut i = 3;
        while i < argv.len() {
            let opt = argv[i].to_ascii_uppercase();
            let redis_only = matches!(opt.as_slice(), b"EXAT" | b"PXAT" | b"KEEPTTL" | b"GET");
            if redis_only && self.is_pika() {
                return Err(rejected("syntax error"));
            }
            match opt.as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                b"GET" => get = true,
                b"KEEPTTL" if expiry == SetExpiry::None => expiry = SetExpiry::KeepTtl,
                b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry == SetExpiry::None => {
                    let raw = argv
                        .get(i + 1)
                        .ok_or_else(|| rejected("syntax error"))
                        .and_then(|v| int_arg(v))?;
                    i += 1;
                    let invalid = || rejected("invalid expire time in 'set' command");
                    if raw <= 0 {
                        return Err(invalid());
                    }
                    let deadline = match opt.as_slice() {
                        b"EX" => self.relative_deadline(now, Self::seconds_to_ms(raw)?)?,
                        b"PX" => {
                            if self.is_pika() && raw < 1000 {
                                return Err(invalid());
                            }
                            self.relative_deadline(now, raw)?
                        }
                        b"EXAT" => Self::seconds_to_ms(raw)?,
                        _ => self.absolute_ms(raw),
                    };
                    expiry = SetExpiry::At(deadline);
                }
                _ => return Err(rejected("syntax error")),
            }
            i += 1;
        }
        let key = &argv[1];
        let current = if get {
            self.string_at(db, key, now)?
        } else {
            self.live(db, key, now)
                .map(|r| (Bytes::new(), r.deadline_ms))
        };
        let reply_old = |c: &Option<(Bytes, Option<i64>)>| match c {
            Some((v, _)) if get => Reply::Bulk(v.clone()),
            _ if get => Reply::Nil,
            _ => Reply::Ok,
        };
        let exists = current.is_some();
        if (nx && exists) || (xx && !exists) {
            let reply = if get { reply_old(&current) } else { Reply::Nil };
            return Ok(Effect::new(reply, false));
        }
        let deadline = match expiry {
            SetExpiry::None => None,
            SetExpiry::KeepTtl => current.as_ref().and_then(|(_, d)| *d),
            SetExpiry::At(d) => Some(d),
        };
        self.put_string(db, key, argv[2].clone(), deadline);
        let mut e = Effect::new(reply_old(&current), true);
        if let SetExpiry::At(d) = expiry {
            e.deadline_ms = Some(d);
        }
        Ok(e)
    }
}
