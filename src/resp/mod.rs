//! RESP2 command codec for the replication path: a strict, resumable parser for the commands a
//! master streams to its replicas (and a replica sends back), and an allocation-free encoder.
//!
//! # Why not a general RESP library
//!
//! The replication stream is counted in bytes: every byte the master sends after the RDB payload
//! advances the replication offset, and a replica that mis-frames even two bytes silently
//! diverges. So this parser:
//!
//! * validates every `\r\n` (general decoders often accept any two bytes after a bulk payload,
//!   which lets a corrupt frame swallow the start of the next command);
//! * keeps its place between reads, so a large argument arriving in small reads is scanned once
//!   (O(n) in total) instead of being re-parsed from the start on every read;
//! * hands back the exact bytes of each frame ([`Command::raw`]) so offsets can be summed and
//!   frames forwarded unchanged, with arguments as zero-copy slices of those bytes.
//!
//! # What it accepts
//!
//! * Multibulk commands `*<n>\r\n` followed by `n` bulk strings `$<len>\r\n<len bytes>\r\n`.
//!   Lengths follow the rules of Redis's own integer parser: decimal digits, no `+`, no leading
//!   zero (`0` alone is fine), no `-0`.
//! * `*0\r\n` and `*-1\r\n`, which Redis skips without running anything: [`Frame::Empty`], so the
//!   caller can still count their bytes. Redis also skips other negative counts (`*-10`); no
//!   master emits those, so here they are an error (a sign of desync).
//! * A bare `\n` or `\r\n`: [`Frame::Newline`]. Masters send `\n` as a keepalive before an RDB
//!   payload, and a loading replica sends `\n` to its master once a second.
//! * Inline commands (space-separated words ending in `\n` or `\r\n`) only when
//!   [`ParserLimits::allow_inline`] is set, which suits the replica→proxy direction. A Redis
//!   replica treats any non-multibulk data from its master other than an empty line as a protocol
//!   error ("Master using the inline protocol. Desync?"), so the master→proxy direction should
//!   leave it off. Inline words are split on ASCII whitespace like Redis does; quoting (`"…"`,
//!   `'…'`) would need unescaping, which cannot be zero-copy, so a line containing a quote
//!   character is rejected. Replicas never send quoted inline commands.
//!
//! # Errors
//!
//! Every [`ProtocolError`] names what was wrong and the stream offset of the offending byte,
//! counted from the first byte this parser ever saw. After an error the byte stream is
//! unusable: there is no way to find the next frame boundary in a stream that broke framing. The
//! parser remembers the error, returns it again on every later call, and leaves the caller's
//! buffer untouched so it can be logged; the caller should drop the connection (for a master
//! link, that means a full resync).
//!
//! # Layout
//!
//! [`ParserLimits`] (`limits`), the frame types (`frame`), [`ProtocolError`] (`error`), the
//! length-line reader shared by both parsers (`length`), the parsers (`parser`: the resumable
//! [`CommandParser`] and the single-pass [`whole_command`]) and the encoder (`encode`). Their
//! items are re-exported here: `resp::CommandParser` and the like are the paths to use.

mod encode;
mod error;
mod frame;
mod length;
mod limits;
mod parser;

pub use encode::*;
pub use error::*;
pub use frame::*;
pub use limits::*;
pub use parser::*;
