//! The arguments of one entry as the engine reads them.
//!
//! Deciding an entry only reads its arguments; a `Bytes` handle to one (an atomic reference
//! count) is needed only to put it into a replacement command. [`Args`] lets a reader hand the
//! engine the arguments as byte ranges of the frame that carries them ([`FrameArgs`]), so an
//! entry that passes through costs no reference counting, while tests and models keep passing
//! a `Vec<Bytes>`.

use bytes::Bytes;

/// An entry's arguments, the command name first.
pub trait Args {
    /// Number of arguments, the name included.
    fn count(&self) -> usize;

    /// Argument `i`, if there is one.
    fn get(&self, i: usize) -> Option<&[u8]>;

    /// A shared handle to `part`, a slice returned by [`Args::get`] (or a part of one), for a
    /// replacement command. Anything else is copied.
    fn share(&self, part: &[u8]) -> Bytes;
}

impl Args for Vec<Bytes> {
    fn count(&self) -> usize {
        self.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.as_slice().get(i).map(|b| b.as_ref())
    }

    fn share(&self, part: &[u8]) -> Bytes {
        self.iter()
            .find(|arg| contains(arg, part))
            .map_or_else(|| Bytes::copy_from_slice(part), |arg| arg.slice_ref(part))
    }
}

/// Arguments as `(start, end)` ranges of `raw`, the bytes of the frame that carries them.
#[derive(Clone, Copy, Debug)]
pub struct FrameArgs<'a> {
    /// The frame's bytes.
    pub raw: &'a Bytes,
    /// Where each argument lies in `raw`.
    pub spans: &'a [(usize, usize)],
}

impl Args for FrameArgs<'_> {
    fn count(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.spans.get(i)?;
        self.raw.get(start..end)
    }

    fn share(&self, part: &[u8]) -> Bytes {
        if contains(self.raw, part) {
            self.raw.slice_ref(part)
        } else {
            Bytes::copy_from_slice(part)
        }
    }
}

/// An integer argument as `i64::from_str` reads it. Plain digits too short to overflow (every
/// deadline, TTL and count in practice) are summed directly: the parse, with its UTF-8 check
/// and overflow check per digit, cost ~240 instructions per ten-digit deadline (callgrind).
pub(crate) fn arg_i64(arg: &[u8]) -> Option<i64> {
    if (1..=18).contains(&arg.len()) && arg.iter().all(u8::is_ascii_digit) {
        return Some(
            arg.iter()
                .fold(0i64, |n, digit| n * 10 + i64::from(digit - b'0')),
        );
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Whether `part` lies inside `whole`'s memory (what `Bytes::slice_ref` requires).
fn contains(whole: &[u8], part: &[u8]) -> bool {
    let outer = whole.as_ptr_range();
    let inner = part.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arguments_read_as_the_standard_parse_reads_them() {
        let cases: &[&[u8]] = &[
            b"0",
            b"7",
            b"1795469984",
            b"1795469984000",
            b"999999999999999999",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-5",
            b"+5",
            b"007",
            b"",
            b"12a",
            b" 1",
            b"-",
            b"-9223372036854775808",
            b"\xff1",
        ];
        for case in cases {
            let standard = std::str::from_utf8(case)
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            assert_eq!(
                arg_i64(case),
                standard,
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn both_forms_read_and_share_the_same_arguments() {
        let raw = Bytes::from_static(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n");
        let spans = [(8, 12), (18, 19)];
        let framed = FrameArgs {
            raw: &raw,
            spans: &spans,
        };
        let owned: Vec<Bytes> = vec![raw.slice(8..12), raw.slice(18..19)];
        for args in [&framed as &dyn Args, &owned as &dyn Args] {
            assert_eq!(args.count(), 2);
            assert_eq!(args.get(0), Some(&b"INCR"[..]));
            assert_eq!(args.get(1), Some(&b"k"[..]));
            assert_eq!(args.get(2), None);
            let key = args.get(1).unwrap();
            let shared = args.share(key);
            assert_eq!(shared, "k");
            assert_eq!(shared.as_ptr(), key.as_ptr(), "shared, not copied");
            assert_eq!(args.share(b"other"), "other");
        }
    }
}
