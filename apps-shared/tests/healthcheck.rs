//! The `--healthcheck` client against real sockets: a 200 passes, anything else fails naming
//! what answered, a wildcard listen address is probed on loopback.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use apps_shared::errors::describe;
use apps_shared::healthcheck::{HealthError, check};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Answers one connection with `response` and hands back the request it read.
fn answer_once(response: &'static str) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let task = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 512];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(response.as_bytes()).unwrap();
        String::from_utf8(request).unwrap()
    });
    (addr, task)
}

#[test]
fn a_200_from_healthz_is_healthy() {
    let (addr, server) = answer_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    check(addr, TIMEOUT).unwrap();
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );
}

#[test]
fn a_wildcard_listen_address_is_probed_on_loopback() {
    let (addr, server) = answer_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let wildcard = SocketAddr::from(([0, 0, 0, 0], addr.port()));
    check(wildcard, TIMEOUT).unwrap();
    server.join().unwrap();
}

#[test]
fn any_other_status_is_unhealthy_and_quoted() {
    let (addr, server) = answer_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
    let err = check(addr, TIMEOUT).unwrap_err();
    assert!(matches!(err, HealthError::Status { .. }), "{err:?}");
    let text = describe(&err);
    assert_eq!(
        text,
        format!("{addr} answered \"HTTP/1.1 503 Service Unavailable\"")
    );
    server.join().unwrap();
}

#[test]
fn nothing_listening_is_unhealthy_with_the_cause() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = check(addr, TIMEOUT).unwrap_err();
    let text = describe(&err);
    assert!(
        text.starts_with(&format!("cannot reach {addr}: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
