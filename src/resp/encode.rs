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

/// Appends one bulk string: `$<len>\r\n<bytes>\r\n`.
pub fn put_bulk(out: &mut BytesMut, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
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
    let mut start = end;
    let mut rest = value;
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return start;
        }
    }
}

/// The exact number of bytes [`encode_command`] appends for `args`.
pub fn encoded_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    let header = 1 + decimal_len(args.len()) + 2;
    args.iter().fold(header, |total, arg| {
        let len = arg.as_ref().len();
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
        for value in [0usize, 7, 10, 99, 100, 1_000_000, usize::MAX] {
            let mut out = BytesMut::new();
            put_length_line(&mut out, b'$', value);
            assert_eq!(out, format!("${value}\r\n").as_bytes());
            assert_eq!(decimal_len(value), value.to_string().len());
        }
    }
}
