//! A real WebSocket session through the balancer: a tungstenite client, a tungstenite echo
//! server as the only member, the handshake, data and control frames, and the closing
//! handshake, all through the proxy's upgrade tunnel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Conf, runtime, wait_until};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next frame the client receives, failing the test if none comes within 10 s.
async fn next(ws: &mut Client) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .map(|r| r.expect("a valid frame"))
}

#[test]
fn websocket_messages_echo_through_the_balancer_and_the_session_closes_cleanly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let member = listener.local_addr().unwrap();
    let lb = Conf::new(&[member.to_string()]).start();
    let rt = runtime();
    rt.block_on(async {
        // The member: a tungstenite echo server that reports how each session ended.
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (ended, mut sessions) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ended = ended.clone();
                tokio::spawn(async move {
                    let outcome = async {
                        let (write, read) = tokio_tungstenite::accept_async(stream).await?.split();
                        read.try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
                            .forward(write)
                            .await
                    }
                    .await;
                    let _ = ended.send(outcome.map_err(|e| e.to_string()));
                });
            }
        });

        let url = format!("ws://{}/chat", lb.running.proxy_addr);
        let (mut ws, resp) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket handshake through the balancer");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-upstream"], member.to_string().as_str());

        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let messages = [
            Message::text("hello through the balancer"),
            Message::binary((0..=255u8).collect::<Vec<_>>()),
            Message::text("ünïcödé ✓"),
            Message::binary(large),
        ];
        for m in messages {
            ws.send(m.clone()).await.unwrap();
            assert_eq!(next(&mut ws).await, Some(m));
        }
        // Control frames cross too: the member's tungstenite answers a ping itself.
        ws.send(Message::Ping("are you there".into()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Some(Message::Pong("are you there".into()))
        );

        // While open, the session is one request in flight on its member.
        let m = lb.member(member).unwrap();
        assert_eq!(m.in_flight(), 1);

        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        match next(&mut ws).await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("expected the member's close reply, got {other:?}"),
        }
        assert_eq!(next(&mut ws).await, None, "the stream ends after the close");
        let outcome = tokio::time::timeout(Duration::from_secs(10), sessions.recv()).await;
        assert_eq!(
            outcome.unwrap(),
            Some(Ok(())),
            "the member saw a clean close"
        );
    });
    let m = lb.member(member).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || m.in_flight() == 0
            && lb.running.shared.clients.open() == [0]),
        "the closed session leaves nothing open in the balancer"
    );
}
