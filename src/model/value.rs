//! Values and keyed records of the reference model, and their readable rendering.
//!
//! The model stores one [`Record`] per `(db, key)`: a typed value plus an optional absolute
//! deadline in milliseconds. A record is alive at `now` exactly when it has no deadline or its
//! deadline is greater than `now`.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// `(db, key)`: where a record lives.
pub type DbKey = (u32, Bytes);

/// A value of one of the five basic types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string (also holds integers and floats as their decimal text).
    Str(Bytes),
    /// A hash: field → value.
    Hash(BTreeMap<Bytes, Bytes>),
    /// A list, head first.
    List(VecDeque<Bytes>),
    /// A set of members.
    Set(BTreeSet<Bytes>),
    /// A sorted set: member → score. Scores are finite (the model rejects NaN and infinities).
    Zset(BTreeMap<Bytes, f64>),
}

impl Value {
    /// True for an aggregate with no element (servers delete such keys).
    pub fn is_empty_aggregate(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::Zset(z) => z.is_empty(),
        }
    }
}

/// A stored key: its value and its absolute deadline (ms), if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The value.
    pub value: Value,
    /// Absolute expiry in ms since the Unix epoch; `None` means no TTL.
    pub deadline_ms: Option<i64>,
}

impl Record {
    /// A record without TTL.
    pub fn persistent(value: Value) -> Self {
        Record {
            value,
            deadline_ms: None,
        }
    }

    /// Whether the record is alive at `now_ms`: no deadline, or the deadline not yet passed.
    /// Both servers keep a key alive *at* its deadline: Redis expires when `now > when`, Pika
    /// 3.5 treats a key as stale when its timestamp is before the current second.
    pub fn is_alive_at(&self, now_ms: i64) -> bool {
        self.deadline_ms.is_none_or(|d| d >= now_ms)
    }
}

/// Render bytes readably: printable ASCII as is, the rest escaped.
pub fn show_bytes(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Render a command line: arguments separated by spaces, quoted when empty or containing spaces.
pub fn show_argv<B: AsRef<[u8]>>(argv: &[B]) -> String {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let a = a.as_ref();
        if a.is_empty() || a.contains(&b' ') {
            out.push('"');
            out.push_str(&show_bytes(a));
            out.push('"');
        } else {
            out.push_str(&show_bytes(a));
        }
    }
    out
}

/// Decimal text for a float result, the way the model writes INCRBYFLOAT/HINCRBYFLOAT/ZINCRBY
/// results: integral values without a fraction, others in the shortest exact form. Master and
/// replica share this function, so the exact spelling only has to be consistent.
pub fn format_float(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "\"{}\"", show_bytes(s)),
            Value::Hash(h) => {
                f.write_str("hash{")?;
                for (i, (k, v)) in h.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: \"{}\"", show_bytes(k), show_bytes(v))?;
                }
                f.write_str("}")
            }
            Value::List(l) => {
                f.write_str("list[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{}\"", show_bytes(v))?;
                }
                f.write_str("]")
            }
            Value::Set(s) => {
                f.write_str("set{")?;
                for (i, v) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{}\"", show_bytes(v))?;
                }
                f.write_str("}")
            }
            Value::Zset(z) => {
                f.write_str("zset{")?;
                for (i, (m, s)) in z.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}", show_bytes(m), format_float(*s))?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.deadline_ms {
            Some(d) => write!(f, "{} (expires at {d} ms)", self.value),
            None => write!(f, "{} (no expiry)", self.value),
        }
    }
}

/// The alive keys of a node at one instant, in `(db, key)` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Alive records.
    pub keys: BTreeMap<DbKey, Record>,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keys.is_empty() {
            return f.write_str("(empty)\n");
        }
        for ((db, key), rec) in &self.keys {
            writeln!(f, "db{db} {} = {rec}", show_bytes(key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_up_to_and_including_the_deadline() {
        let r = Record {
            value: Value::Str(Bytes::from_static(b"1")),
            deadline_ms: Some(1000),
        };
        assert!(r.is_alive_at(999));
        assert!(r.is_alive_at(1000));
        assert!(!r.is_alive_at(1001));
        assert!(Record::persistent(Value::Str(Bytes::new())).is_alive_at(i64::MAX));
    }

    #[test]
    fn floats_render_consistently() {
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(-0.5), "-0.5");
    }

    #[test]
    fn argv_rendering_quotes_awkward_arguments() {
        let argv = [&b"SET"[..], b"a b", b"", b"\x00"];
        assert_eq!(show_argv(&argv), "SET \"a b\" \"\" \\x00");
    }
}
