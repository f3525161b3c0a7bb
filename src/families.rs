//! Command families that operators switch on and off at run time.
//!
//! A [`FamilySwitches`] handle is cloned into every relay task; reading a switch is one relaxed
//! atomic load, so the hot path pays nothing for the runtime toggles. Switching a family off only
//! stops *rewriting*: the expiry table is maintained whatever is switched off.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One group of commands whose rewriting is switched as a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// INCR, INCRBY, DECR, DECRBY, INCRBYFLOAT.
    StringCounter,
    /// APPEND, SETRANGE, SETBIT.
    StringAppend,
    /// SET NX/XX (with or without EX/PX), SET KEEPTTL, SETNX, GETSET.
    StringSet,
    /// Relative → absolute TTLs: SETEX, PSETEX, SET EX/PX, EXPIRE, PEXPIRE, GETEX.
    Expire,
    /// HSET, HMSET, HSETNX, HINCRBY, HINCRBYFLOAT.
    Hash,
    /// LPUSH, RPUSH, LPUSHX, RPUSHX, LINSERT.
    List,
    /// SADD, SMOVE.
    Set,
    /// ZADD, ZINCRBY.
    Zset,
}

impl Family {
    /// Every family, in the order they are listed to operators.
    pub const ALL: [Family; 8] = [
        Family::StringCounter,
        Family::StringAppend,
        Family::StringSet,
        Family::Expire,
        Family::Hash,
        Family::List,
        Family::Set,
        Family::Zset,
    ];

    /// The operator-facing name (CLI, admin API, config file, metric label).
    pub const fn name(self) -> &'static str {
        match self {
            Family::StringCounter => "string-counter",
            Family::StringAppend => "string-append",
            Family::StringSet => "string-set",
            Family::Expire => "expire",
            Family::Hash => "hash",
            Family::List => "list",
            Family::Set => "set",
            Family::Zset => "zset",
        }
    }

    /// Position in [`Family::ALL`]; used to index per-family arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a family name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFamily(pub String);

impl fmt::Display for UnknownFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        write!(
            f,
            "unknown family '{}' (known: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownFamily {}

impl FromStr for Family {
    type Err = UnknownFamily;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFamily(s.to_string()))
    }
}

/// Shared, cheaply cloneable on/off state of every family.
#[derive(Clone, Debug)]
pub struct FamilySwitches {
    enabled: Arc<[AtomicBool; 8]>,
}

impl FamilySwitches {
    /// Every family on (the documented default).
    pub fn all_on() -> Self {
        Self::with(|_| true)
    }

    /// Every family off: the proxy then forwards the master's bytes unchanged.
    pub fn all_off() -> Self {
        Self::with(|_| false)
    }

    /// Build from a predicate on each family.
    pub fn with(mut on: impl FnMut(Family) -> bool) -> Self {
        let enabled = Family::ALL.map(|f| AtomicBool::new(on(f)));
        FamilySwitches {
            enabled: Arc::new(enabled),
        }
    }

    /// Whether entries of `family` are rewritten right now.
    #[inline]
    pub fn is_enabled(&self, family: Family) -> bool {
        self.enabled[family.index()].load(Ordering::Relaxed)
    }

    /// Switch one family; returns its previous state.
    pub fn set(&self, family: Family, on: bool) -> bool {
        self.enabled[family.index()].swap(on, Ordering::Relaxed)
    }

    /// The state of every family, in [`Family::ALL`] order.
    pub fn snapshot(&self) -> [(Family, bool); 8] {
        Family::ALL.map(|f| (f, self.is_enabled(f)))
    }

    /// True when no family rewrites anything.
    #[cfg(test)]
    pub fn all_disabled(&self) -> bool {
        Family::ALL.iter().all(|f| !self.is_enabled(*f))
    }
}

impl Default for FamilySwitches {
    fn default() -> Self {
        Self::all_on()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>(), Ok(f));
            assert_eq!(Family::ALL[f.index()], f);
        }
        assert!("nope".parse::<Family>().is_err());
        assert_eq!("HASH".parse::<Family>(), Ok(Family::Hash));
    }

    #[test]
    fn switches_are_shared_between_clones() {
        let a = FamilySwitches::all_on();
        let b = a.clone();
        assert!(b.set(Family::Hash, false));
        assert!(!a.is_enabled(Family::Hash));
        assert!(a.is_enabled(Family::List));
        assert!(!FamilySwitches::all_on().all_disabled());
        assert!(FamilySwitches::all_off().all_disabled());
    }
}
