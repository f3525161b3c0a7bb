//! Hash, list, set and sorted-set commands of the model keyspace: a write creates its key, and a
//! removal that empties an aggregate deletes it, as on both servers.

use super::*;

impl Keyspace {
    /// A hash, list, set or sorted-set command of [`Keyspace::exec`].
    pub(super) fn exec_collection(
        &mut self,
        db: u32,
        name: &str,
        argv: &[Bytes],
        now: i64,
    ) -> Exec {
        let n = argv.len();
        let need = |ok: bool| if ok { Ok(()) } else { Err(arity(name)) };
        match name {
            "HSET" | "HMSET" => {
                need(n >= 4 && n % 2 == 0)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let mut added = 0;
                for pair in argv[2..].chunks(2) {
                    if h.insert(pair[0].clone(), pair[1].clone()).is_none() {
                        added += 1;
                    }
                }
                let reply = if name == "HSET" {
                    Reply::Int(added)
                } else {
                    Reply::Ok
                };
                Ok(Effect::new(reply, true))
            }
            "HSETNX" => {
                need(n == 4)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let added = if h.contains_key(&argv[2]) {
                    false
                } else {
                    h.insert(argv[2].clone(), argv[3].clone());
                    true
                };
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(added as i64), added))
            }
            "HINCRBY" | "HINCRBYFLOAT" => {
                need(n == 4)?;
                let float = name == "HINCRBYFLOAT";
                let (by_int, by_float) = if float {
                    (0, float_arg(&argv[3])?)
                } else {
                    (int_arg(&argv[3])?, 0.0)
                };
                // Check the stored data before creating anything, so a failure leaves no trace.
                let current = match self.live(db, &argv[1], now) {
                    None => None,
                    Some(Record {
                        value: Value::Hash(h),
                        ..
                    }) => h.get(&argv[2]).cloned(),
                    Some(_) => return Err(wrong_type()),
                };
                let (text, reply, float_result) = if float {
                    let old = match &current {
                        None => 0.0,
                        Some(v) => parse_f64(v)
                            .ok_or_else(|| Failure::Failed("hash value is not a float".into()))?,
                    };
                    let new = old + by_float;
                    if !new.is_finite() {
                        return Err(Failure::Failed(
                            "increment would produce NaN or Infinity".into(),
                        ));
                    }
                    let text = Bytes::from(format_float(new));
                    (text.clone(), Reply::Bulk(text.clone()), Some(text))
                } else {
                    let old = match &current {
                        None => 0,
                        Some(v) => parse_i64(v).ok_or_else(|| {
                            Failure::Failed("hash value is not an integer".into())
                        })?,
                    };
                    let new = old.checked_add(by_int).ok_or_else(|| {
                        Failure::Failed("increment or decrement would overflow".into())
                    })?;
                    (int_bytes(new), Reply::Int(new), None)
                };
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                if let Value::Hash(h) = &mut rec.value {
                    h.insert(argv[2].clone(), text);
                }
                let mut e = Effect::new(reply, true);
                e.float_result = float_result;
                Ok(e)
            }
            "HDEL" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|f| h.remove(*f).is_some()).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            "HGET" => {
                need(n == 3)?;
                match self.live(db, &argv[1], now) {
                    None => Ok(Effect::new(Reply::Nil, false)),
                    Some(Record {
                        value: Value::Hash(h),
                        ..
                    }) => Ok(Effect::new(
                        h.get(&argv[2])
                            .map_or(Reply::Nil, |v| Reply::Bulk(v.clone())),
                        false,
                    )),
                    Some(_) => Err(wrong_type()),
                }
            }
            "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" => {
                need(n >= 3)?;
                let only_existing = name.ends_with('X');
                if only_existing {
                    match self.live(db, &argv[1], now) {
                        None => return Ok(Effect::new(Reply::Int(0), false)),
                        Some(Record {
                            value: Value::List(_),
                            ..
                        }) => {}
                        Some(_) => return Err(wrong_type()),
                    }
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::List(VecDeque::new()));
                let Value::List(l) = &mut rec.value else {
                    return Err(wrong_type());
                };
                for v in &argv[2..] {
                    if name.starts_with('L') {
                        l.push_front(v.clone());
                    } else {
                        l.push_back(v.clone());
                    }
                }
                Ok(Effect::new(Reply::Int(l.len() as i64), true))
            }
            "LINSERT" => {
                need(n == 5)?;
                let before = if argv[2].eq_ignore_ascii_case(b"BEFORE") {
                    true
                } else if argv[2].eq_ignore_ascii_case(b"AFTER") {
                    false
                } else {
                    return Err(rejected("syntax error"));
                };
                // A missing list stays missing (0), a missing pivot inserts nothing (-1): Redis
                // propagates neither, Pika logs both.
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::List(l) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let Some(at) = l.iter().position(|v| v == &argv[3]) else {
                    return Ok(Effect::new(Reply::Int(-1), false));
                };
                l.insert(if before { at } else { at + 1 }, argv[4].clone());
                Ok(Effect::new(Reply::Int(l.len() as i64), true))
            }
            "LPOP" | "RPOP" => {
                need(n == 2)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Nil, false));
                };
                let Value::List(l) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let popped = if name == "LPOP" {
                    l.pop_front()
                } else {
                    l.pop_back()
                };
                self.drop_if_empty(db, &argv[1]);
                Ok(match popped {
                    Some(v) => Effect::new(Reply::Bulk(v), true),
                    None => Effect::new(Reply::Nil, false),
                })
            }
            "SADD" => {
                need(n >= 3)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Set(BTreeSet::new()));
                let Value::Set(s) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let added = argv[2..].iter().filter(|m| s.insert((*m).clone())).count() as i64;
                Ok(Effect::new(Reply::Int(added), added > 0))
            }
            "SREM" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Set(s) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|m| s.remove(*m)).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            "SMOVE" => {
                need(n == 4)?;
                let (src, dst, member) = (&argv[1], &argv[2], &argv[3]);
                let src_has = match self.live(db, src, now) {
                    None => false,
                    Some(Record {
                        value: Value::Set(s),
                        ..
                    }) => s.contains(member),
                    Some(_) => return Err(wrong_type()),
                };
                match self.live(db, dst, now) {
                    None
                    | Some(Record {
                        value: Value::Set(_),
                        ..
                    }) => {}
                    Some(_) => return Err(wrong_type()),
                }
                if !src_has {
                    return Ok(Effect::new(Reply::Int(0), false));
                }
                if src == dst {
                    return Ok(Effect::new(Reply::Int(1), false));
                }
                if let Some(Record {
                    value: Value::Set(s),
                    ..
                }) = self.live_mut(db, src, now)
                {
                    s.remove(member);
                }
                self.drop_if_empty(db, src);
                let rec = self.live_or_create(db, dst, now, Value::Set(BTreeSet::new()));
                if let Value::Set(s) = &mut rec.value {
                    s.insert(member.clone());
                }
                Ok(Effect::new(Reply::Int(1), true))
            }
            "ZADD" => {
                need(n >= 4 && n % 2 == 0)?;
                let mut pairs = Vec::with_capacity((n - 2) / 2);
                for pair in argv[2..].chunks(2) {
                    pairs.push((float_arg(&pair[0])?, pair[1].clone()));
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::Zset(BTreeMap::new()));
                let Value::Zset(z) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let (mut added, mut changed) = (0, false);
                for (score, member) in pairs {
                    match z.insert(member, score) {
                        None => {
                            added += 1;
                            changed = true;
                        }
                        Some(old) if old != score => changed = true,
                        Some(_) => {}
                    }
                }
                Ok(Effect::new(Reply::Int(added), changed))
            }
            "GEOADD" => {
                need(n >= 5 && (n - 2) % 3 == 0)?;
                let mut pairs = Vec::with_capacity((n - 2) / 3);
                for point in argv[2..].chunks(3) {
                    let score = geohash_score(float_arg(&point[0])?, float_arg(&point[1])?)?;
                    pairs.push((score, point[2].clone()));
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::Zset(BTreeMap::new()));
                let Value::Zset(z) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let mut added = 0;
                for (score, member) in pairs {
                    if z.insert(member, score).is_none() {
                        added += 1;
                    }
                }
                Ok(Effect::new(Reply::Int(added), true))
            }
            "ZINCRBY" => {
                need(n == 4)?;
                let by = float_arg(&argv[2])?;
                let old = match self.live(db, &argv[1], now) {
                    None => None,
                    Some(Record {
                        value: Value::Zset(z),
                        ..
                    }) => z.get(&argv[3]).copied(),
                    Some(_) => return Err(wrong_type()),
                };
                let new = old.unwrap_or(0.0) + by;
                if !new.is_finite() {
                    return Err(Failure::Failed(
                        "resulting score is not a number (NaN)".into(),
                    ));
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::Zset(BTreeMap::new()));
                if let Value::Zset(z) = &mut rec.value {
                    z.insert(argv[3].clone(), new);
                }
                let changed = old != Some(new);
                Ok(Effect::new(
                    Reply::Bulk(Bytes::from(format_float(new))),
                    changed,
                ))
            }
            "ZREM" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Zset(z) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|m| z.remove(*m).is_some()).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            // Unreached: `Keyspace::exec` sends only this family's names here.
            _ => Err(Failure::Unknown(name.to_ascii_lowercase())),
        }
    }
}

/// The score GEOADD stores for a point: its 52-bit geohash (26 bits of longitude and 26 of
/// latitude, interleaved, latitude in the even bits), as both servers compute it.
fn geohash_score(longitude: f64, latitude: f64) -> Result<f64, Failure> {
    const LAT_LIMIT: f64 = 85.051_128_78;
    if !(-180.0..=180.0).contains(&longitude) || !(-LAT_LIMIT..=LAT_LIMIT).contains(&latitude) {
        return Err(rejected("invalid longitude,latitude pair"));
    }
    // The upper bound itself gives 2^26, one bit past the cell numbers, as on the servers.
    let cell = |value: f64, min: f64, max: f64| {
        ((value - min) / (max - min) * f64::from(1u32 << 26)) as u64
    };
    let lon = cell(longitude, -180.0, 180.0);
    let lat = cell(latitude, -LAT_LIMIT, LAT_LIMIT);
    let mut hash = 0u64;
    for bit in 0..27 {
        hash |= ((lat >> bit) & 1) << (2 * bit);
        hash |= ((lon >> bit) & 1) << (2 * bit + 1);
    }
    Ok(hash as f64)
}
