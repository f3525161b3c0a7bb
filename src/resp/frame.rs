//! What the parsers hand back: a [`Frame`] (its exact bytes and, for a command, its arguments
//! as slices of them) or, from
//! [`CommandParser::parse_raw`](super::CommandParser::parse_raw), a [`RawFrame`] whose arguments
//! stay ranges.

use bytes::Bytes;

/// One complete unit of the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A multibulk command.
    Command(Command),
    /// An inline command; `raw` is the whole line including its `\n` or `\r\n`.
    Inline(Command),
    /// An empty line: `\n` (a keepalive) or `\r\n`.
    Newline { raw: Bytes },
    /// Bytes Redis consumes without running anything: `*0\r\n`, `*-1\r\n`, or (inline mode) a
    /// line holding only whitespace.
    Empty { raw: Bytes },
}

impl Frame {
    /// The exact bytes this frame occupied in the stream.
    pub fn raw(&self) -> &Bytes {
        match self {
            Frame::Command(command) | Frame::Inline(command) => &command.raw,
            Frame::Newline { raw } | Frame::Empty { raw } => raw,
        }
    }

    /// How many stream bytes this frame occupied.
    #[cfg(test)]
    pub fn wire_len(&self) -> usize {
        self.raw().len()
    }

    /// The command carried by this frame, multibulk or inline.
    pub fn command(&self) -> Option<&Command> {
        match self {
            Frame::Command(command) | Frame::Inline(command) => Some(command),
            Frame::Newline { .. } | Frame::Empty { .. } => None,
        }
    }
}

/// A complete frame from [`CommandParser::parse_raw`](super::CommandParser::parse_raw): its
/// bytes and what it is; a command's arguments are at
/// [`CommandParser::arg_spans`](super::CommandParser::arg_spans).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The exact bytes the frame occupied in the stream.
    pub raw: Bytes,
    /// What the frame is.
    pub kind: FrameKind,
}

/// The kinds of [`Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A multibulk command.
    Command,
    /// An inline command.
    Inline,
    /// An empty line.
    Newline,
    /// `*0`, `*-1` or a blank inline line.
    Empty,
}

/// A parsed command. For commands produced by [`CommandParser`](super::CommandParser), `args`
/// are slices of `raw` and there is at least one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The exact bytes the command occupied in the stream.
    pub raw: Bytes,
    /// The arguments, the command name first; zero-copy slices of `raw`.
    pub args: Vec<Bytes>,
}

impl Command {
    /// The command name as sent (any case); empty if there are no arguments.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |name| &name[..])
    }

    /// Whether the command name equals `name`, ignoring ASCII case (masters propagate script
    /// commands in the case the script used, e.g. `incr`).
    pub fn name_eq_ignore_case(&self, name: &[u8]) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether there are no arguments at all (never true for parsed commands).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `index` (0 is the command name).
    pub fn arg(&self, index: usize) -> Option<&Bytes> {
        self.args.get(index)
    }
}
