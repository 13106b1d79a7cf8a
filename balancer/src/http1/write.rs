//! Writers for the heads and chunk framing the proxy sends itself, and integers as ASCII
//! without going through `fmt` (every request writes several).

use http::StatusCode;

use super::wire::put_short;

/// Writes one `name: value` field line.
pub(crate) fn field(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 4);
    put_short(dst, name);
    dst.extend_from_slice(b": ");
    put_short(dst, value);
    dst.extend_from_slice(b"\r\n");
}

/// Writes the HTTP/1.1 status line for `status`, with its canonical reason.
pub(crate) fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_short(out, status.as_str().as_bytes());
    out.push(b' ');
    put_short(out, status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the line that opens a chunk of `len` bytes.
pub(crate) fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(Digits::hex(len as u64).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An integer in ASCII, on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    /// `n` in decimal.
    #[inline]
    pub(crate) fn decimal(n: u64) -> Self {
        Self::radix::<10>(n)
    }

    /// `n` in lowercase hex, without leading zeros.
    #[inline]
    pub(crate) fn hex(n: u64) -> Self {
        Self::radix::<16>(n)
    }

    /// A constant radix, so the divisions compile to multiplications.
    #[inline]
    fn radix<const RADIX: u64>(mut n: u64) -> Self {
        let mut d = Digits {
            buf: [0; 20],
            start: 20,
        };
        loop {
            d.start -= 1;
            d.buf[d.start] = b"0123456789abcdef"[(n % RADIX) as usize];
            n /= RADIX;
            if n == 0 {
                return d;
            }
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Fills `out` with the low bits of `v` in lowercase hex, zero-padded to `out`'s length.
pub(crate) fn hex_fixed(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_fmt_would() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            255,
            4096,
            65535,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(Digits::decimal(n).as_bytes(), n.to_string().as_bytes());
            assert_eq!(Digits::hex(n).as_bytes(), format!("{n:x}").as_bytes());
        }
        let mut out = [0u8; 16];
        hex_fixed(&mut out, 0xab);
        assert_eq!(&out, b"00000000000000ab");
    }

    #[test]
    fn a_field_line_is_written_whole_at_every_length() {
        // Lengths around the 8-byte pieces and the 64-byte cut-over, into a buffer that
        // already holds bytes (so the copy starts unaligned).
        for n in 0..=140usize {
            let name: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let value: Vec<u8> = (0..n).map(|i| b'0' + (i % 10) as u8).collect();
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            field(&mut out, &name, &value);
            let mut want = b"HTTP/1.1 200 OK\r\n".to_vec();
            want.extend_from_slice(&name);
            want.extend_from_slice(b": ");
            want.extend_from_slice(&value);
            want.extend_from_slice(b"\r\n");
            assert_eq!(out, want, "length {n}");
        }
    }
}
