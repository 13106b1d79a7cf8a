//! `--healthcheck`: GET our own `/healthz` over plain HTTP/1.1 (scratch images have no curl).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why the health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Could not connect, send or read.
    #[error("cannot reach {addr}")]
    Io {
        /// Address tried.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// The server answered with something other than 200.
    #[error("{addr} answered {status_line:?}")]
    Status {
        /// Address tried.
        addr: SocketAddr,
        /// The response's status line.
        status_line: String,
    },
}

/// The address to probe for a listen address: loopback instead of a wildcard.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `/healthz` on the server listening at `listen`; Ok only on a 200.
pub fn check(listen: SocketAddr, timeout: Duration) -> Result<(), HealthError> {
    let addr = probe_addr(listen);
    let status_line =
        fetch_status_line(addr, timeout).map_err(|source| HealthError::Io { addr, source })?;
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(HealthError::Status { addr, status_line })
    }
}

fn fetch_status_line(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
