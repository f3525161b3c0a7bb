//! Redefinitions: a later command on a key that leaves it the same on a late replica as on the
//! master, whatever an earlier entry on it left there.
//!
//! An entry whose look-up was spoiled (a command the answer cannot read past named the key
//! before the answer's position, `written_again`) passes unchanged, and a late replica may end
//! it with another TTL, existence or value than the master. That difference lasts only until
//! both sides apply a command that sets the key whole: DEL or FLUSHDB (gone on both), or, for
//! a string, an unconditional SET-family command (the same value and TTL on both). When such a
//! command is the first after the entry that the answer could not read past, the entry is
//! `superseded`, not `unknown_key`: the replica applies the two one after the other from the
//! same backlog, and holds the master's key from the second on (`docs/rewrites.md#look-ups`).
//!
//! An EXPIRE does not redefine: it gives both sides the same TTL but not the same value, nor
//! the key to a side that has lost it, until that TTL runs out. Pika keeps one value of each
//! type under a name, so a SET redefines only the string under it, while DEL acts on every
//! type; an entry that does not write a string is only superseded by DEL and FLUSH*.

use super::args::Args;
use super::command::{self, Cmd};

/// Whether `later`, a command naming `key` after an entry on `key` decided without knowing its
/// state (`string_entry`: one that [`writes_string`]), leaves `key` with the same TTL on a
/// replica as on the master whatever that entry did on either.
pub fn redefines(later: &dyn Args, key: &[u8], string_entry: bool) -> bool {
    let Some(cmd) = later.get(0).and_then(command::classify) else {
        return false;
    };
    let first_is_key = later.get(1) == Some(key);
    match cmd {
        // Pika 3.5 also takes `FLUSHDB <type>`, which flushes one type (3.5.4: none).
        Cmd::FlushDb | Cmd::FlushAll => whole_flush(later),
        Cmd::Del if is_named(later, b"getdel") => first_is_key && string_entry,
        Cmd::Del => (1..later.count()).any(|i| later.get(i) == Some(key)),
        Cmd::SetEx | Cmd::PSetEx | Cmd::PkSetExAt | Cmd::GetSet => first_is_key && string_entry,
        Cmd::Set => first_is_key && unconditional_set(later) && string_entry,
        Cmd::MSet => {
            string_entry
                && (1..later.count())
                    .step_by(2)
                    .any(|i| later.get(i) == Some(key))
        }
        _ => false,
    }
}

/// Whether `later`, a command naming `key` after an entry on it decided without knowing its
/// state, gives `key` one TTL wherever it exists: a plain EXPIRE-family command (not NX/XX/GT/LT)
/// on it. Not a redefinition (the value, and whether the key exists, may still differ), but what
/// the entry left on a late replica cannot outlive that TTL.
pub fn resets_ttl(later: &dyn Args, key: &[u8]) -> bool {
    matches!(
        later.get(0).and_then(command::classify),
        Some(Cmd::Expire | Cmd::PExpire | Cmd::ExpireAt | Cmd::PExpireAt)
    ) && later.get(1) == Some(key)
        && later.count() == 3
}

/// Whether `entry` writes the string under its key (Pika keeps other types beside it).
pub fn writes_string(entry: &dyn Args) -> bool {
    entry
        .get(0)
        .and_then(command::classify)
        .is_some_and(Cmd::writes_string)
}

/// A SET that writes its value whatever the key held: no NX/XX, and no KEEPTTL (which keeps a
/// TTL the two sides may not share).
fn unconditional_set(set: &dyn Args) -> bool {
    // Only options known to set the key whatever it held: anything else (NX, XX, KEEPTTL,
    // Pika's VX, an option of a later server) is not a redefinition.
    let mut i = 3;
    while i < set.count() {
        let option = set.get(i).unwrap_or_default();
        let is = |name: &[u8]| option.eq_ignore_ascii_case(name);
        if is(b"ex") || is(b"px") || is(b"exat") || is(b"pxat") {
            if i + 1 >= set.count() {
                return false;
            }
            i += 1;
        } else if !is(b"get") {
            return false;
        }
        i += 1;
    }
    true
}

/// A FLUSHDB/FLUSHALL of everything in its scope: no argument, or Redis's ASYNC/SYNC.
pub fn whole_flush(flush: &dyn Args) -> bool {
    (1..flush.count()).all(|i| {
        flush
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"async") || a.eq_ignore_ascii_case(b"sync"))
    })
}

fn is_named(args: &dyn Args, name: &[u8]) -> bool {
    args.get(0).is_some_and(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::{redefines, writes_string};
    use bytes::Bytes;

    fn argv(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn after(later: &str, entry: &str) -> bool {
        redefines(&argv(later), b"k", writes_string(&argv(entry)))
    }

    #[test]
    fn deletes_redefine_any_type() {
        for entry in [
            "hincrby k n 1",
            "rpush k x",
            "sadd k m",
            "zadd k 1 m",
            "incr k",
            "expireat k 5",
        ] {
            assert!(after("del k", entry), "{entry}");
            assert!(after("DEL a k b", entry), "{entry}");
            assert!(after("unlink k", entry), "{entry}");
            assert!(after("flushdb", entry), "{entry}");
            assert!(!after("del other", entry), "{entry}");
        }
    }

    #[test]
    fn expiries_and_persist_do_not() {
        for later in [
            "expire k 10",
            "expireat k 1800000000",
            "pexpireat k 1800000000000",
            "expire k 10 nx",
            "persist k",
        ] {
            assert!(!after(later, "hincrby k n 1"), "{later}");
            assert!(!after(later, "incr k"), "{later}");
        }
    }

    #[test]
    fn plain_expiries_reset_the_ttl() {
        let resets = |later: &str| super::resets_ttl(&argv(later), b"k");
        assert!(resets("expireat k 1800000000"));
        assert!(resets("PEXPIRE k 100"));
        assert!(!resets("expire k 10 nx"));
        assert!(!resets("expire other 10"));
        assert!(!resets("persist k"));
    }

    #[test]
    fn string_sets_redefine_only_strings() {
        for later in [
            "set k v",
            "set k v ex 10",
            "setex k 10 v",
            "pksetexat k 1800000000 v",
            "getset k v",
            "mset a 1 k 2",
            "psetex k 100 v",
        ] {
            assert!(after(later, "incr k"), "{later}");
            assert!(after(later, "append k x"), "{later}");
            assert!(!after(later, "hincrby k n 1"), "{later}");
            assert!(!after(later, "rpush k x"), "{later}");
            assert!(!after(later, "expireat k 5"), "{later}");
        }
        assert!(after("getdel k", "incr k"));
        assert!(!after("getdel k", "sadd k m"));
    }

    #[test]
    fn pika_conditions_and_typed_flushes_do_not() {
        for later in [
            "set k v vx w",
            "set k v ex 10 vx w",
            "set k v ex",
            "flushdb hash",
        ] {
            assert!(!after(later, "incr k"), "{later}");
        }
        assert!(after("set k v ex 10 get", "incr k"));
        assert!(after("flushdb async", "incr k"));
    }

    #[test]
    fn conditional_sets_do_not() {
        for later in [
            "set k v nx",
            "set k v ex 10 XX",
            "set k v keepttl",
            "setnx k v",
            "msetnx k v",
            "mset k1 k v 2",
            "append k x",
            "incr k",
        ] {
            assert!(!after(later, "incr k"), "{later}");
        }
    }
}
