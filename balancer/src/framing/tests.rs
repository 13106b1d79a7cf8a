use super::*;

/// Feeds `input` in pieces of `step` bytes; returns the verdict and heads seen.
fn run(input: &str, step: usize) -> (Option<u64>, u64) {
    let v = Arc::new(Verdict::default());
    let mut t = Tracker::new(v.clone());
    for piece in input.as_bytes().chunks(step) {
        t.feed(piece);
    }
    let bad = v.first_bad.load(Ordering::SeqCst);
    ((bad != u64::MAX).then_some(bad), t.heads)
}

fn all_steps(input: &str) -> Vec<(Option<u64>, u64)> {
    [1, 2, 3, 7, 64, 10_000]
        .iter()
        .map(|s| run(input, *s))
        .collect()
}

#[test]
fn follows_keep_alive_requests_with_every_framing() {
    let input = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\
                 POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                 POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
                 \r\nGET /z HTTP/1.1\r\n\r\n";
    for r in all_steps(input) {
        assert_eq!(r, (None, 4));
    }
}

#[test]
fn length_with_chunked_is_flagged_in_either_order() {
    for input in [
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let expect = if input.starts_with("GET") { 1 } else { 0 };
        for (bad, _) in all_steps(input) {
            assert_eq!(bad, Some(expect), "{input:?}");
        }
    }
}

#[test]
fn repeated_lengths_are_flagged_even_when_equal() {
    for (bad, _) in
        all_steps("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello")
    {
        assert_eq!(bad, Some(0));
    }
}

#[test]
fn a_body_that_looks_like_a_request_is_not_a_head() {
    let body = "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    let input = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /next HTTP/1.1\r\n\r\n",
        body.len()
    );
    for r in all_steps(&input) {
        assert_eq!(r, (None, 2));
    }
}

#[test]
fn framing_headers_are_noticed_in_any_case() {
    assert!(mentions_framing(
        b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 1\r\n\r\n"
    ));
    assert!(mentions_framing(
        b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n"
    ));
    assert!(!mentions_framing(
        b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nContent-Type: x\r\nX-Length: 2\r\n\r\n"
    ));
}

#[test]
fn bare_lf_heads_are_followed_too() {
    let input = "GET / HTTP/1.1\nHost: a\n\n\
                 POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
    for r in all_steps(input) {
        assert_eq!(r, (Some(1), 2));
    }
}

#[test]
fn a_trailer_line_ends_at_crlf_only_as_hyper_reads_it() {
    // hyper takes the bare LF as part of a trailer line and reads on to the next empty
    // CRLF line, so the request in between is trailer text to it, not a head.
    let input = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\n\
                 POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    for r in all_steps(input) {
        assert_eq!(r, (None, 2));
    }
}

#[test]
fn a_refused_upgrade_does_not_stop_the_checks() {
    let input = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
                 POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    for r in all_steps(input) {
        assert_eq!(r, (Some(1), 2));
    }
}

#[test]
fn a_tunnel_is_not_followed() {
    let v = Arc::new(Verdict::default());
    let mut t = Tracker::new(v.clone());
    t.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    v.tunnel();
    t.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!((v.first_bad.load(Ordering::SeqCst), t.heads), (u64::MAX, 1));
}
