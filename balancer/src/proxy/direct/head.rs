//! A member's response head, parsed off the front of the connection's buffer: status, fields,
//! and how its body is delimited (RFC 9112 6.3), which decides whether the connection can
//! carry another request afterwards.

use bytes::BytesMut;
use http::StatusCode;
use http::header::{self, HeaderMap};

use super::Error;
use super::body::State;
use crate::http1::{self, FieldSpans};

pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) state: State,
    pub(super) keep_alive: bool,
}

pub(super) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) response was skipped: the final one follows.
    Interim,
    /// The final response head.
    Final(Head),
}

/// Parses one response head off the front of `buf`, taking its bytes.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    spans: &mut FieldSpans,
    head_only: bool,
) -> Result<Parsed, Error> {
    let mut slots = http1::slots();
    let (res, len) = match http1::parse_response(buf, &mut slots) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(Parsed::Partial),
        Err(_) => return Err(Error::Invalid),
    };
    let (Some(code), Some(minor)) = (res.code, res.version) else {
        return Err(Error::Invalid);
    };
    if (100..200).contains(&code) {
        // 101 is answered only to an upgrade, and upgrades go through hyper.
        if code == 101 {
            return Err(Error::Invalid);
        }
        drop(buf.split_to(len));
        return Ok(Parsed::Interim);
    }
    spans.record(buf, res.headers);
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid)?;
    let mut headers = spans.map(&head).ok_or(Error::Invalid)?;
    let (state, keep_alive) = framing(status, head_only, minor, &mut headers)?;
    Ok(Parsed::Final(Head {
        status,
        headers,
        state,
        keep_alive,
    }))
}

/// How the body is delimited (RFC 9112 6.3), and whether the connection can carry another
/// request after it.
fn framing(
    status: StatusCode,
    head_only: bool,
    minor: u8,
    headers: &mut HeaderMap,
) -> Result<(State, bool), Error> {
    let mut keep_alive = minor == 1 && !http1::has_token(headers, &header::CONNECTION, b"close");
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((State::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, and a message with both is not trusted
        // to frame the next one.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(if last_coding_is_chunked(headers) {
            (State::Size, keep_alive)
        } else {
            (State::Eof, false)
        });
    }
    Ok(
        match http1::content_length(headers).map_err(|_| Error::Invalid)? {
            Some(n) => (State::Length(n), keep_alive),
            None => (State::Eof, false),
        },
    )
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|v| http1::last_token(v.as_bytes()).eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_only: bool) -> Result<Parsed, Error> {
        parse_head(
            &mut BytesMut::from(text),
            &mut FieldSpans::default(),
            head_only,
        )
    }

    fn final_head(text: &str) -> Head {
        match head(text, false) {
            Ok(Parsed::Final(h)) => h,
            _ => panic!("not a final head: {text:?}"),
        }
    }

    #[test]
    fn content_length_frames_the_body_and_keeps_the_connection() {
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n");
        assert!(matches!(h.state, State::Length(12)));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
    }

    #[test]
    fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
        let h = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(h.state, State::Size));
        assert!(!h.keep_alive);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn conflicting_lengths_are_invalid() {
        let r = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false,
        );
        assert!(matches!(r, Err(Error::Invalid)));
        let r = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", false);
        assert!(matches!(r, Err(Error::Invalid)));
        let r = head("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", false);
        assert!(matches!(r, Err(Error::Invalid)));
    }

    #[test]
    fn no_length_means_read_to_close() {
        let h = final_head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(h.state, State::Eof));
        assert!(!h.keep_alive);
    }

    #[test]
    fn bodiless_statuses_and_head_have_no_body() {
        let h = final_head("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
        assert!(matches!(h.state, State::Length(0)));
        match head("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true) {
            Ok(Parsed::Final(h)) => assert!(matches!(h.state, State::Length(0))),
            _ => panic!("HEAD answer not parsed"),
        }
    }

    #[test]
    fn http_1_0_and_connection_close_are_not_reused() {
        assert!(!final_head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let h = final_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn interim_responses_are_skipped_and_101_is_refused() {
        let mut buf = BytesMut::from("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200");
        let mut spans = FieldSpans::default();
        assert!(matches!(
            parse_head(&mut buf, &mut spans, false),
            Ok(Parsed::Interim)
        ));
        assert_eq!(&buf[..], b"HTTP/1.1 200");
        let r = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            false,
        );
        assert!(matches!(r, Err(Error::Invalid)));
    }

    #[test]
    fn garbage_is_invalid_and_a_partial_head_asks_for_more() {
        assert!(matches!(
            head("SMTP ready\r\n\r\n", false),
            Err(Error::Invalid)
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(Parsed::Partial)
        ));
    }
}
