//! The HTTP/1 wire primitives, strict in one place: request and response heads to field spans,
//! `Content-Length` values, chunk-size lines, token lists, and the writers for status lines,
//! fields, chunk framing and numbers. The plain client loop (`server::plain`), the direct member
//! connection (`proxy::direct`) and the framing guard (`framing`) all read and write HTTP/1
//! through here, so a rule that decides where a message ends exists once.
//!
//! Hand-written rather than hyper's codec because these are the measured hot path: hyper's
//! dispatcher, `HeaderMap` encoding and per-request timers cost more instructions than the rest
//! of the proxy together (docs/benchmarks.md). Heads are still tokenized by httparse (hyper's own
//! parser); what is added on top follows hyper's rules where hyper is stricter than httparse
//! (chunk-size lines) and refuses what either refuses. The `differential` tests feed generated
//! and mutated messages to these functions and to httparse and fail on any disagreement about
//! validity or where a head or message ends.

mod head;
mod values;
pub(crate) mod wire;
mod write;

#[cfg(test)]
mod differential;

pub(crate) use head::{FieldSpans, head_end, parse_request, parse_response, parse_trailers, slots};
pub(crate) use values::{
    Invalid, chunk_size, content_length, has_token, last_token, length_value, lists_token, tokens,
};
pub(crate) use wire::put_short;
pub(crate) use write::{Digits, chunk_size_line, field, hex_fixed, status_line};
