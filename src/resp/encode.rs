//! The encoder: multibulk commands written straight into a `BytesMut`, lengths formatted on the
//! stack, the exact size reserved first.

use bytes::{BufMut, BytesMut};

/// Appends `args` to `out` as one multibulk command (`*<n>\r\n` then `$<len>\r\n<arg>\r\n` per
/// argument), reserving the exact space first.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.reserve(encoded_len(args));
    put_array_header(out, args.len());
    for arg in args {
        put_bulk(out, arg.as_ref());
    }
}

/// Appends `*<count>\r\n`, the start of a multibulk command of `count` arguments.
pub fn put_array_header(out: &mut BytesMut, count: usize) {
    put_length_line(out, b'*', count);
}

/// Longest argument [`put_bulk`] assembles on the stack first: `$`, two digits, CRLF, the
/// argument and CRLF fill 64 bytes.
const SMALL_BULK: usize = 57;

/// Appends one bulk string: `$<len>\r\n<bytes>\r\n`. A small one (names, keys, deadlines) is
/// assembled on the stack and appended with one copy.
pub fn put_bulk(out: &mut BytesMut, bytes: &[u8]) {
    let len = bytes.len();
    if len <= SMALL_BULK {
        let mut bulk = [0u8; SMALL_BULK + 7];
        bulk[0] = b'$';
        let mut at = 1;
        if len >= 10 {
            bulk[at] = b'0' + (len / 10) as u8;
            at += 1;
        }
        bulk[at] = b'0' + (len % 10) as u8;
        bulk[at + 1..at + 3].copy_from_slice(b"\r\n");
        at += 3;
        bulk[at..at + len].copy_from_slice(bytes);
        at += len;
        bulk[at..at + 2].copy_from_slice(b"\r\n");
        out.extend_from_slice(&bulk[..at + 2]);
        return;
    }
    out.reserve(len + 16);
    put_length_line(out, b'$', bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// Appends `value` in decimal as one bulk string, formatted on the stack.
pub fn put_bulk_int(out: &mut BytesMut, value: i64) {
    // A sign and up to 20 digits.
    let mut text = [0u8; 21];
    let end = text.len();
    let mut start = write_decimal_before(&mut text, end, value.unsigned_abs());
    if value < 0 {
        start -= 1;
        text[start] = b'-';
    }
    put_bulk(out, &text[start..]);
}

/// Writes `value` in decimal so that it ends just before `buf[end]`; returns where it starts.
/// `buf[..end]` must have room for 20 digits.
fn write_decimal_before(buf: &mut [u8], end: usize, value: u64) -> usize {
    // Two digits per division (a deadline has ten).
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut start = end;
    let mut rest = value;
    while rest >= 10 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        if rest == 0 {
            // The last pair taken was at least 10: no leading zero.
            return start;
        }
    }
    start -= 1;
    buf[start] = b'0' + rest as u8;
    start
}

/// The exact number of bytes [`encode_command`] appends for `args`.
pub fn encoded_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    encoded_len_of(args.iter().map(|a| a.as_ref().len()))
}

/// [`encoded_len`] from the arguments' lengths alone.
pub fn encoded_len_of(arg_lens: impl ExactSizeIterator<Item = usize>) -> usize {
    let header = 1 + decimal_len(arg_lens.len()) + 2;
    arg_lens.fold(header, |total, len| {
        total + 1 + decimal_len(len) + 2 + len + 2
    })
}

/// Number of decimal digits of `value`.
fn decimal_len(value: usize) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `prefix`, `value` in decimal and `\r\n`, assembled on the stack so the line costs
/// one copy into `out`.
fn put_length_line(out: &mut BytesMut, prefix: u8, value: usize) {
    // Prefix + up to 20 digits (usize::MAX on 64-bit targets) + CRLF.
    let mut line = [0u8; 23];
    let digits_end = line.len() - 2;
    line[digits_end..].copy_from_slice(b"\r\n");
    let mut start = write_decimal_before(&mut line, digits_end, value as u64);
    start -= 1;
    line[start] = prefix;
    out.put_slice(&line[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_in_decimal() {
        let mut values = vec![0i64, 1, 9, 10, 11, 99, 100, 101, 109, 110, 999, 1000, 1001];
        values.extend([
            1_795_470_054,
            1_795_469_984_000,
            i64::MAX,
            i64::MIN,
            -1,
            -10,
            -100,
        ]);
        values.extend((0..64).map(|bit| 1i64 << bit));
        for value in values {
            let mut out = BytesMut::new();
            put_bulk_int(&mut out, value);
            let text = value.to_string();
            assert_eq!(out, format!("${}\r\n{text}\r\n", text.len()).as_bytes());
        }
    }

    #[test]
    fn encoded_len_is_exact() {
        let boundaries = [0usize, 1, 9, 10, 11, 99, 100, 999, 1000, 12345];
        for &len in &boundaries {
            let arg = vec![b'a'; len];
            let args = vec![arg.clone(); len.min(12)];
            let mut out = BytesMut::new();
            encode_command(&args, &mut out);
            assert_eq!(out.len(), encoded_len(&args));
            let mut expected = format!("*{}\r\n", args.len()).into_bytes();
            for arg in &args {
                expected.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                expected.extend_from_slice(arg);
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(&out[..], &expected[..]);
        }
        for len in 0..=SMALL_BULK + 2 {
            let arg: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut out = BytesMut::from(&b"x"[..]);
            put_bulk(&mut out, &arg);
            let mut expected = format!("x${len}\r\n").into_bytes();
            expected.extend_from_slice(&arg);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(&out[..], &expected[..], "{len}");
        }
        for value in [
            0usize,
            7,
            10,
            99,
            100,
            101,
            1_000_000,
            1_795_470_054,
            usize::MAX,
        ] {
            let mut out = BytesMut::new();
            put_length_line(&mut out, b'$', value);
            assert_eq!(out, format!("${value}\r\n").as_bytes());
            assert_eq!(decimal_len(value), value.to_string().len());
        }
    }
}
