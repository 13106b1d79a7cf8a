//! Field values that decide framing and connection reuse: `Content-Length`, chunk-size lines
//! and comma-separated token lists.

use http::header::{self, HeaderMap, HeaderName};

/// Not valid HTTP/1: the message cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Longest chunk-size line (with extensions) followed; past it the body is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// One `Content-Length` value: ASCII digits only (no sign, space or `+`), refused when it
/// overflows `u64`; leading zeros are fine. hyper's `from_digits` exactly: `str::parse` would
/// take a `+`.
pub(crate) fn length_value(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The message's `Content-Length`: every field and list element must be a valid value and all
/// must agree (RFC 9110 8.6), as hyper reads a response's.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Invalid> {
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in tokens(v.as_bytes()) {
            let n = length_value(part).ok_or(Invalid)?;
            if length.is_some_and(|l| l != n) {
                return Err(Invalid);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Parses a chunk-size line off the front of `buf`: `(bytes used, size)`, or `None` until the
/// line is whole. httparse's rules (at most 16 hex digits, optional spaces or tabs, `;` and
/// extensions, CRLF) plus hyper's stricter ones: a size must have a digit (an empty line is not
/// the last chunk) and no bare LF may come before the CRLF, extensions included.
pub(crate) fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err("chunk-size line too long");
        }
        // A line already wrong (a CR not before the LF, a bad digit) is refused now rather
        // than waited on.
        if buf.first().is_some_and(|b| !b.is_ascii_hexdigit())
            || httparse::parse_chunk_size(buf).is_err()
        {
            return Err("invalid chunk size");
        }
        return Ok(None);
    };
    if !buf[0].is_ascii_hexdigit() {
        return Err("chunk size without a digit");
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("chunk-size line not ended by CRLF");
    }
    match httparse::parse_chunk_size(&buf[..=lf]) {
        Ok(httparse::Status::Complete((used, size))) if used == lf + 1 => Ok(Some((used, size))),
        _ => Err("invalid chunk size"),
    }
}

/// The elements of one comma-separated field value, trimmed of spaces and tabs.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Whether one comma-separated field value lists `token` (case-insensitive).
pub(crate) fn lists_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether any `name` field lists `token` (comma-separated, case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| lists_token(v.as_bytes(), token))
}

/// The last element of a comma-separated value (the coding applied last, for
/// `Transfer-Encoding`).
pub(crate) fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only_and_refuse_overflow() {
        assert_eq!(length_value(b"0"), Some(0));
        assert_eq!(length_value(b"0000000000000000000000012"), Some(12));
        assert_eq!(length_value(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"0x5",
            b"5,5",
        ] {
            assert_eq!(
                length_value(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_sizes_need_a_digit_and_a_crlf() {
        assert_eq!(chunk_size(b"1a\r\nxyz"), Ok(Some((4, 26))));
        assert_eq!(chunk_size(b"5;name=v\r\n"), Ok(Some((10, 5))));
        assert_eq!(chunk_size(b"0\r\n"), Ok(Some((3, 0))));
        assert_eq!(chunk_size(b"5;ext"), Ok(None));
        assert_eq!(chunk_size(b""), Ok(None));
        assert!(chunk_size(b"1\ry").is_err());
        for bad in [
            &b"\r\n"[..],
            b" \r\n",
            b";ext\r\n",
            b"5\n",
            b"5;a\nb\r\n",
            b"zz\r\n",
            b"+5\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(
                chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(chunk_size(&[b'1'; MAX_CHUNK_LINE + 1]).is_err());
    }

    #[test]
    fn token_lists_are_split_and_trimmed() {
        assert!(lists_token(b"keep-alive, Close", b"close"));
        assert!(!lists_token(b"closed", b"close"));
        assert_eq!(last_token(b"gzip , chunked "), b"chunked");
        assert_eq!(
            tokens(b" a,,b ").collect::<Vec<_>>(),
            [&b"a"[..], b"", b"b"]
        );
    }
}
