//! Generators for the differential tests: request streams that are mostly well formed, with
//! the odd bytes where parsers tend to disagree.

use proptest::prelude::*;
use proptest::sample::select;

use super::NEXT;

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just("\r\n"), 2 => Just("\n"), 1 => Just("\r"), 1 => Just("\r\r\n")]
}

pub(super) fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..40).prop_map(|n| n.to_string()),
        6 => select(vec![
            "+5", " 5 ", "5, 5", "5,6", "05", "-1", "0x5", "5 5", "", "99999999999999999999",
            "18446744073709551615", "18446744073709551616", "chunked", "gzip, chunked",
            "chunked, gzip", "CHUNKED", "identity", "chunked ", " chunked", "chunked,", "close",
            "keep-alive", "a\0b", "a\x7fb", "a\x01b", "x\r\n y", "x\n\tz", "\u{e9}",
        ])
        .prop_map(str::to_owned),
    ]
}

fn field() -> impl Strategy<Value = String> {
    let name = select(vec![
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Transfer-Encoding",
        "transfer-encoding",
        "Connection",
        "X-A",
        "Content-Length ",
        " Content-Length",
        "Transfer_Encoding",
        "X\0A",
        "Trailer",
        "Host",
    ]);
    let sep = select(vec![":", ": ", ":\t", ":  ", " : "]);
    (name, sep, value(), eol()).prop_map(|(n, s, v, e)| format!("{n}{s}{v}{e}"))
}

/// Mostly `usual`, sometimes one of `odd`.
fn mostly(usual: &'static str, odd: Vec<&'static str>) -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just(usual), 1 => select(odd)]
}

pub(super) fn chunk() -> impl Strategy<Value = String> {
    let size = 1usize..24;
    let odd_repr = vec![
        "X",
        "0x",
        "+",
        " ",
        "0000000000000000",
        "f0000000000000000",
        "",
    ];
    let odd_ext = vec![";a=b", " ;a", "\t", ";a\nb", ";\"q\"", " ", ";a\rb"];
    let offset = prop_oneof![6 => Just(0isize), 1 => Just(-1), 1 => Just(1)];
    let data_end = mostly("\r\n", vec!["\n", "xx", "\r"]);
    let repr = mostly("x", odd_repr);
    (size, repr, mostly("", odd_ext), eol(), offset, data_end).prop_map(|(n, r, x, e, off, d)| {
        let hex = match r {
            "x" => format!("{n:x}"),
            "X" => format!("{n:X}"),
            "0x" => format!("0x{n:x}"),
            other => format!("{other}{n:x}"),
        };
        let len = n.saturating_add_signed(off);
        format!("{hex}{x}{e}{}{d}", "y".repeat(len))
    })
}

fn chunked_body() -> impl Strategy<Value = String> {
    let last = mostly("0", vec!["000", "", "0 ", "0;x", "0\r"]);
    let trailer = (
        mostly("X-T: 1", vec!["X-T:1", "bad", "X-T: a\0", " X: 1"]),
        eol(),
    )
        .prop_map(|(t, e)| format!("{t}{e}"));
    (
        proptest::collection::vec(chunk(), 0..3),
        last,
        eol(),
        proptest::collection::vec(trailer, 0..2),
        eol(),
    )
        .prop_map(|(chunks, last, e, trailers, end)| {
            format!("{}{last}{e}{}{end}", chunks.concat(), trailers.concat())
        })
}

/// A body and the field that frames it (or none), mostly consistent with each other.
fn framed_body() -> impl Strategy<Value = (String, String)> {
    let sep = select(vec![": ", ":", ":\t"]);
    prop_oneof![
        Just((String::new(), String::new())),
        (
            select(vec!["Content-Length", "content-length"]),
            sep.clone(),
            "[a-z]{0,30}",
            -1i64..=1
        )
            .prop_map(|(n, s, body, off)| {
                let len = (body.len() as i64 + off).max(0);
                (format!("{n}{s}{len}\r\n"), body)
            }),
        (
            select(vec!["Transfer-Encoding", "transfer-encoding"]),
            sep,
            select(vec![
                "chunked",
                "CHUNKED",
                "gzip, chunked",
                "chunked, gzip",
                "identity"
            ]),
            chunked_body(),
        )
            .prop_map(|(n, s, v, body)| (format!("{n}{s}{v}\r\n"), body)),
    ]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let lead = select(vec!["", "", "\r\n", "\n", "\r"]);
    let method = select(vec!["GET", "POST", "PUT", "HEAD", "G\0T", "GET "]);
    let version = select(vec![
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1",
    ]);
    (
        (lead, method, version, eol()),
        proptest::collection::vec(field(), 0..3),
        framed_body(),
        proptest::collection::vec(field(), 0..2),
        eol(),
    )
        .prop_map(|((lead, m, v, e), before, (framing, body), after, end)| {
            let (before, after) = (before.concat(), after.concat());
            format!("{lead}{m} /p {v}{e}Host: h{e}{before}{framing}{after}{end}{body}").into_bytes()
        })
}

/// One or two messages, then [`NEXT`]; sometimes one byte overwritten.
pub(super) fn stream() -> impl Strategy<Value = Vec<u8>> {
    let mutation = proptest::option::weighted(
        0.3,
        (
            any::<prop::sample::Index>(),
            select(b"\r\n\0 \t,+:;0\x7f\x80".to_vec()),
        ),
    );
    (proptest::collection::vec(message(), 1..3), mutation).prop_map(|(msgs, mutation)| {
        let mut s = msgs.concat();
        if let Some((at, byte)) = mutation {
            let i = at.index(s.len());
            s[i] = byte;
        }
        s.extend_from_slice(NEXT);
        s
    })
}
