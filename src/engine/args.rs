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
