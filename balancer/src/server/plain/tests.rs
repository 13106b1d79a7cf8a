use std::io::Write as _;
use std::time::Duration;

use super::*;

/// A server-side connection rebuilt with `from_std`, as an adopted one is: tokio has seen
/// no readiness for it yet. `sent`: wait until the client's bytes are in the socket.
fn adopted(listener: &std::net::TcpListener, sent: bool) -> Conn {
    let (server, _) = listener.accept().unwrap();
    if sent {
        server.peek(&mut [0u8; 1]).unwrap();
    }
    server.set_nonblocking(true).unwrap();
    Conn::new(TcpStream::from_std(server).unwrap(), LIMITS)
}

const LIMITS: ServerLimits = ServerLimits {
    max_header_bytes: 16 * 1024,
    idle_timeout: Duration::from_secs(5),
};

#[tokio::test(flavor = "current_thread")]
async fn at_shutdown_a_request_that_arrived_is_read_and_a_silent_connection_closes() {
    let limits = LIMITS;
    let stop = CancellationToken::new();
    stop.cancel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let mut sent = std::net::TcpStream::connect(addr).unwrap();
    sent.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut conn = adopted(&listener, true);
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    match conn.read_head(limits, cancelled.as_mut()).await {
        Read::Plain(req, _) => assert_eq!(req.uri().path(), "/a"),
        _ => panic!("the request that had arrived was not read"),
    }

    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let mut conn = adopted(&listener, false);
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    assert!(matches!(
        conn.read_head(limits, cancelled.as_mut()).await,
        Read::Closed
    ));
}
