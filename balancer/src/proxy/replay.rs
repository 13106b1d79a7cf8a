//! A second chance for an idempotent request with a small body (a PUT of some JSON): its head
//! and the body frames it streamed are kept, so when the member fails it (reset before any
//! response byte, or a timeout) the request can go to another member, as nginx and HAProxy
//! do with the bodies they buffer.
//!
//! The body still streams to the first member as it arrives; what is kept are the same
//! `Bytes` frames (reference counts, not copies), up to [`REPLAY_LIMIT`]. A body that is
//! larger, carries trailers, or had not fully arrived when the attempt failed is not replayed:
//! that request fails as before, since only the client has the rest of it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};

use super::request_body::ReqBody;

/// Largest body kept for a replay (HAProxy's buffer is 16 KiB, nginx's in-memory body 8–16 KiB
/// before it spills to disk; a lab's PUTs are well under this).
pub(super) const REPLAY_LIMIT: u64 = 64 * 1024;

/// The body frames of one upload, published once the whole body has gone through. They are
/// slices of the connection's read buffer, so they pin it until the request is answered.
#[derive(Debug, Default)]
pub(super) struct Kept(OnceLock<Vec<Bytes>>);

/// What an upload gathers on its way to the first member.
#[derive(Debug)]
pub(crate) struct Keeper {
    frames: Vec<Bytes>,
    len: u64,
    into: Arc<Kept>,
}

impl Keeper {
    /// Keeps `data`; false once the body outgrew [`REPLAY_LIMIT`] (the keeper should go).
    pub(crate) fn keep(&mut self, data: &Bytes) -> bool {
        self.len += data.len() as u64;
        if self.len > REPLAY_LIMIT {
            return false;
        }
        if !data.is_empty() {
            self.frames.push(data.clone());
        }
        true
    }

    /// The body has ended: its frames may now be replayed.
    pub(crate) fn finish(self) {
        let _ = self.into.0.set(self.frames);
    }
}

/// An idempotent request with a body, kept until it is answered.
#[derive(Debug)]
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Arc<Kept>,
}

impl Replay {
    /// Keeps the head of a request about to be sent (its header rewrites already done), and
    /// returns the keeper its body feeds; `None` when a declared length is over the limit.
    /// Boxed: it lives across the request's awaits, and every request's future would carry
    /// its ~220 bytes otherwise.
    pub(super) fn of(
        req: &Request<ReqBody>,
        declared: Option<u64>,
    ) -> Option<(Box<Replay>, Keeper)> {
        if declared.is_some_and(|n| n > REPLAY_LIMIT) {
            return None;
        }
        let body = Arc::new(Kept::default());
        let keeper = Keeper {
            frames: Vec::new(),
            len: 0,
            into: Arc::clone(&body),
        };
        let replay = Box::new(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        });
        Some((replay, keeper))
    }

    /// The request again, when its whole body was kept.
    pub(super) fn request(&self) -> Option<Box<Request<ReqBody>>> {
        let frames = self.body.0.get()?.clone();
        let mut req = Request::new(ReqBody::replayed(frames));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(Box::new(req))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn put() -> Request<ReqBody> {
        let mut req = Request::new(ReqBody::Empty);
        *req.method_mut() = Method::PUT;
        req
    }

    #[tokio::test]
    async fn a_whole_small_body_is_replayed_frame_for_frame() {
        let (replay, mut keeper) = Replay::of(&put(), None).unwrap();
        assert!(
            replay.request().is_none(),
            "nothing to replay before the end"
        );
        assert!(keeper.keep(&Bytes::from_static(b"hello ")));
        assert!(keeper.keep(&Bytes::from_static(b"world")));
        keeper.finish();
        for _ in 0..2 {
            let req = replay.request().unwrap();
            assert_eq!(req.method(), Method::PUT);
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello world");
        }
    }

    #[test]
    fn a_body_over_the_limit_is_not_kept() {
        assert!(Replay::of(&put(), Some(REPLAY_LIMIT + 1)).is_none());
        let (_, mut keeper) = Replay::of(&put(), None).unwrap();
        let big = Bytes::from(vec![0u8; REPLAY_LIMIT as usize]);
        assert!(keeper.keep(&big), "exactly the limit is kept");
        assert!(!keeper.keep(&Bytes::from_static(b"x")));
    }
}
