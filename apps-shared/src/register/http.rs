//! One HTTP/1.1 request over a fresh TCP connection, enough for the balancer's admin API.
//!
//! Hand-written rather than a client crate: the apps ship as ~1.5 MB static binaries and
//! need exactly two bodiless requests to one plain-HTTP endpoint (`Connection: close`, so the
//! response ends at EOF and no framing has to be parsed).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response we read; the admin API answers with a few dozen bytes of JSON.
const MAX_RESPONSE: usize = 8 * 1024;

/// A response: its status and the start of its body (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    /// Status code.
    pub status: u16,
    /// The body, lossily decoded and cut to a log-friendly length.
    pub body: String,
}

/// Sends `method target` with an empty body to `addr` and reads the whole response.
/// No timeout here: the caller bounds the whole exchange.
pub(super) async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    token: &str,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         User-Agent: lab-stack-register\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    (&mut stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut buf)
        .await?;
    parse(&buf)
}

/// Parses `HTTP/1.x NNN reason\r\n...\r\n\r\nbody`.
fn parse(buf: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(buf);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.x response");
    let mut parts = text.lines().next().ok_or_else(bad)?.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad());
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().chars().take(200).collect())
        .unwrap_or_default();
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_body_are_read() {
        let r = parse(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 24\r\n\r\n{\"error\":\"wrong token\"}",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.body, "{\"error\":\"wrong token\"}");
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().status,
            204
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    }
}
