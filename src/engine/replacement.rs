//! The commands the engine emits in place of an entry, and their encoding.
//!
//! A replacement is built for almost every entry on a volatile key, so it must cost next to
//! nothing: its arguments borrow the entry's own bytes ([`Arg::Bytes`]) or are integers written
//! straight into the output ([`Arg::Int`]), each command holds its few arguments inline, and
//! the entry itself is named rather than copied ([`NewCommand::Original`]). The relays encode it
//! into their output buffer ([`Replacement::encode`]); tests and models can ask for owned
//! argument lists ([`Replacement::argvs`]).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::args::Args;
use crate::resp::{put_array_header, put_bulk, put_bulk_int};

/// One argument of a replacement command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A part of the entry, or a literal.
    Bytes(&'a [u8]),
    /// An integer (a deadline), written in decimal.
    Int(i64),
}

/// The most arguments a command the engine writes has (`SET k v PXAT ms`).
const MAX_ARGS: usize = 5;

/// One command of a replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewCommand<'a> {
    /// The entry itself, as a multibulk command.
    Original,
    /// A command the engine wrote: `parts[..len]`, the name first.
    Written { parts: [Arg<'a>; MAX_ARGS], len: u8 },
}

impl<'a> NewCommand<'a> {
    /// A command of `N` (at most five) arguments, the name first.
    pub fn of<const N: usize>(args: [Arg<'a>; N]) -> Self {
        const {
            assert!(
                N >= 1 && N <= MAX_ARGS,
                "a written command has 1 to 5 arguments"
            )
        };
        let mut parts = [Arg::Int(0); MAX_ARGS];
        parts[..N].copy_from_slice(&args);
        NewCommand::Written {
            parts,
            len: N as u8,
        }
    }

    fn written(&self) -> Option<&[Arg<'a>]> {
        match self {
            NewCommand::Original => None,
            NewCommand::Written { parts, len } => Some(&parts[..usize::from(*len)]),
        }
    }
}

/// A command of its name alone.
const fn name_only(name: &'static [u8]) -> NewCommand<'static> {
    let mut parts = [Arg::Int(0); MAX_ARGS];
    parts[0] = Arg::Bytes(name);
    NewCommand::Written { parts, len: 1 }
}

const MULTI: NewCommand<'static> = name_only(b"MULTI");
const EXEC: NewCommand<'static> = name_only(b"EXEC");

/// The most commands a rule emits for one entry (not counting MULTI/EXEC): Pika 4.0's
/// `del k` + `set k v` + `expireat k T`.
const MAX_COMMANDS: usize = 3;

/// The commands a rule emits for one entry, held inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commands<'a> {
    items: [NewCommand<'a>; MAX_COMMANDS],
    len: u8,
}

impl<'a> Commands<'a> {
    /// `N` (one to three) commands, in order.
    pub fn of<const N: usize>(commands: [NewCommand<'a>; N]) -> Self {
        const { assert!(N >= 1 && N <= MAX_COMMANDS, "a rule emits 1 to 3 commands") };
        let mut items = [NewCommand::Original; MAX_COMMANDS];
        items[..N].copy_from_slice(&commands);
        Commands {
            items,
            len: N as u8,
        }
    }

    /// These commands, preceded by `first` when there is one. `self` holds at most two
    /// commands whenever a rule prepends (a `del` before a SET's one or two commands).
    pub fn after(self, first: Option<NewCommand<'a>>) -> Self {
        let Some(first) = first else {
            return self;
        };
        debug_assert!(self.len() < MAX_COMMANDS, "no room to prepend a command");
        let mut items = [NewCommand::Original; MAX_COMMANDS];
        items[0] = first;
        let kept = self.len().min(MAX_COMMANDS - 1);
        items[1..=kept].copy_from_slice(&self.as_slice()[..kept]);
        Commands {
            items,
            len: (kept + 1) as u8,
        }
    }

    fn as_slice(&self) -> &[NewCommand<'a>] {
        &self.items[..usize::from(self.len)]
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An entry's own multibulk frame, for [`Replacement::encode_recording`]: its bytes, its
/// arguments' positions, and where the bytes start in the buffer those positions refer to.
#[derive(Clone, Copy, Debug)]
pub struct OriginalFrame<'f> {
    pub raw: &'f [u8],
    pub spans: &'f [(usize, usize)],
    pub at: usize,
}

/// The commands to send instead of an entry, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement<'a> {
    commands: Commands<'a>,
    /// Sent between MULTI and EXEC (Redis, several commands, outside an upstream MULTI).
    in_multi_exec: bool,
}

impl<'a> Replacement<'a> {
    /// `commands`, sent as they are or wrapped in MULTI/EXEC.
    pub fn new(commands: Commands<'a>, in_multi_exec: bool) -> Self {
        Replacement {
            commands,
            in_multi_exec,
        }
    }

    /// Every command in order, MULTI and EXEC included.
    pub fn commands(&self) -> impl Iterator<Item = &NewCommand<'a>> {
        let (open, close) = if self.in_multi_exec {
            (Some(&MULTI), Some(&EXEC))
        } else {
            (None, None)
        };
        open.into_iter()
            .chain(self.commands.as_slice())
            .chain(close)
    }

    /// Number of commands, MULTI and EXEC included.
    pub fn len(&self) -> usize {
        self.commands.len() + if self.in_multi_exec { 2 } else { 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends every command to `out` as a multibulk; `entry` is the entry the replacement was
    /// made for (what [`NewCommand::Original`] stands for). Returns the bytes appended.
    pub fn encode(&self, entry: &dyn Args, out: &mut BytesMut) -> usize {
        self.encode_with_original(entry, None, out)
    }

    /// [`Self::encode`], with `original` the entry's own multibulk bytes when the caller has
    /// them: [`NewCommand::Original`] is then copied in one piece rather than encoded again
    /// (a strict multibulk frame has a single encoding, so the bytes are the same).
    pub fn encode_with_original(
        &self,
        entry: &dyn Args,
        original: Option<&[u8]>,
        out: &mut BytesMut,
    ) -> usize {
        let before = out.len();
        for command in self.commands() {
            match (command.written(), original) {
                (Some(parts), _) => {
                    put_array_header(out, parts.len());
                    for part in parts {
                        match *part {
                            Arg::Bytes(bytes) => put_bulk(out, bytes),
                            Arg::Int(value) => put_bulk_int(out, value),
                        }
                    }
                }
                (None, Some(raw)) => out.extend_from_slice(raw),
                (None, None) => {
                    let count = entry.count();
                    put_array_header(out, count);
                    for arg in (0..count).filter_map(|i| entry.get(i)) {
                        put_bulk(out, arg);
                    }
                }
            }
        }
        out.len() - before
    }

    /// [`Self::encode_with_original`], also recording where each command it writes lies in
    /// `out`: its arguments' positions are pushed onto `spans`, and the range of `spans` they
    /// take onto `commands` (so the caller need not parse what it just wrote). `original` is
    /// the entry's own frame with its arguments' positions, relative to the buffer the frame
    /// lies in at `original_at`.
    pub fn encode_recording(
        &self,
        entry: &dyn Args,
        original: Option<OriginalFrame<'_>>,
        out: &mut BytesMut,
        spans: &mut Vec<(usize, usize)>,
        commands: &mut Vec<Range<usize>>,
    ) -> usize {
        let before = out.len();
        // A bulk string just written ends with its bytes and CRLF.
        let ends = |out: &BytesMut, len: usize| (out.len() - 2 - len, out.len() - 2);
        for command in self.commands() {
            let first = spans.len();
            match (command.written(), original) {
                (Some(parts), _) => {
                    put_array_header(out, parts.len());
                    for part in parts {
                        match *part {
                            Arg::Bytes(bytes) => {
                                put_bulk(out, bytes);
                                spans.push(ends(out, bytes.len()));
                            }
                            Arg::Int(value) => {
                                put_bulk_int(out, value);
                                // Its digits follow the length line's LF.
                                let end = out.len() - 2;
                                let start = out[..end]
                                    .iter()
                                    .rposition(|&b| b == b'\n')
                                    .map_or(end, |lf| lf + 1);
                                spans.push((start, end));
                            }
                        }
                    }
                }
                (None, Some(frame)) => {
                    let at = out.len();
                    out.extend_from_slice(frame.raw);
                    spans.extend(
                        frame
                            .spans
                            .iter()
                            .map(|&(s, e)| (s - frame.at + at, e - frame.at + at)),
                    );
                }
                (None, None) => {
                    let count = entry.count();
                    put_array_header(out, count);
                    for arg in (0..count).filter_map(|i| entry.get(i)) {
                        put_bulk(out, arg);
                        spans.push(ends(out, arg.len()));
                    }
                }
            }
            commands.push(first..spans.len());
        }
        out.len() - before
    }

    /// Every command as an owned argument list (for tests and models).
    pub fn argvs(&self, entry: &dyn Args) -> Vec<Vec<Bytes>> {
        self.commands()
            .map(|command| match command.written() {
                Some(parts) => parts
                    .iter()
                    .map(|part| match *part {
                        Arg::Bytes(bytes) => Bytes::copy_from_slice(bytes),
                        Arg::Int(value) => Bytes::from(value.to_string()),
                    })
                    .collect(),
                None => (0..entry.count())
                    .filter_map(|i| entry.get(i))
                    .map(Bytes::copy_from_slice)
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::encode_command;

    #[test]
    fn encoding_matches_the_argument_lists() {
        let entry: Vec<Bytes> = vec![Bytes::from_static(b"INCR"), Bytes::from_static(b"k")];
        let key = entry[1].clone();
        for (commands, wrapped) in [
            (Commands::of([NewCommand::Original]), false),
            (
                Commands::of([NewCommand::of([
                    Arg::Int(0),
                    Arg::Int(i64::MIN),
                    Arg::Int(9),
                    Arg::Int(10),
                ])]),
                false,
            ),
            (
                Commands::of([
                    NewCommand::Original,
                    NewCommand::of([Arg::Bytes(b"PEXPIREAT"), Arg::Bytes(&key), Arg::Int(-7)]),
                ]),
                true,
            ),
            (
                Commands::of([NewCommand::of([
                    Arg::Bytes(b"SET"),
                    Arg::Bytes(b""),
                    Arg::Bytes(b"v"),
                    Arg::Bytes(b"PXAT"),
                    Arg::Int(i64::MAX),
                ])]),
                false,
            ),
        ] {
            let replacement = Replacement::new(commands, wrapped);
            let argvs = replacement.argvs(&entry);
            assert_eq!(argvs.len(), replacement.len());
            let mut expected = BytesMut::new();
            for argv in &argvs {
                encode_command(argv, &mut expected);
            }
            let mut encoded = BytesMut::from(&b"before"[..]);
            let appended = replacement.encode(&entry, &mut encoded);
            assert_eq!(&encoded[6..], &expected[..]);
            assert_eq!(appended, expected.len());
            let mut original = BytesMut::new();
            encode_command(&entry, &mut original);
            let mut copied = BytesMut::new();
            replacement.encode_with_original(&entry, Some(&original), &mut copied);
            assert_eq!(
                copied, expected,
                "the original frame copied, not encoded again"
            );
        }
    }

    #[test]
    fn multi_exec_wraps_the_commands() {
        let entry: Vec<Bytes> = vec![Bytes::from_static(b"INCR")];
        let replacement = Replacement::new(Commands::of([NewCommand::Original]), true);
        let names: Vec<Bytes> = replacement
            .argvs(&entry)
            .into_iter()
            .map(|argv| argv[0].clone())
            .collect();
        assert_eq!(names, ["MULTI", "INCR", "EXEC"]);
    }
}
