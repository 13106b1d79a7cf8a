// What the C library's memcpy costs the balancer, on its own binary's libc:
//   rustc -O --edition 2024 --target x86_64-unknown-linux-musl docs/perf/moves.rs -o /tmp/moves && /tmp/moves
//   rustc -O --edition 2024 docs/perf/moves.rs -o /tmp/moves-glibc && /tmp/moves-glibc
// 1. Moves of N-byte values: LLVM calls memcpy for moves over 128 bytes on baseline x86-64.
// 2. Short copies (field names and values) with extend_from_slice, which calls memcpy, against
//    the fixed-size pieces of the balancer's own `proxy::wire::put_short` (this file includes it).
use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy)]
struct Value<const N: usize>([u64; N]);

#[inline(never)]
fn move_out<const N: usize>(v: &Value<N>) -> Value<N> {
    *black_box(v)
}

fn moves<const N: usize>() {
    let v = Value::<N>([7; N]);
    let n = 5_000_000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(move_out(black_box(&v)));
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("move of {:>5} bytes: {ns:6.2} ns", N * 8);
}

#[inline(never)]
fn extend(dst: &mut Vec<u8>, src: &[u8]) {
    dst.extend_from_slice(src);
}

#[path = "../../balancer/src/http1/wire.rs"]
mod wire;

#[inline(never)]
fn put_short(dst: &mut Vec<u8>, src: &[u8]) {
    wire::put_short(dst, src);
}

fn copies(name: &str, copy: fn(&mut Vec<u8>, &[u8])) {
    let fields = [
        "host", "127.0.0.1:18080", "server", "nginx/1.22.1", "date",
        "Sun, 22 Nov 2026 05:30:57 GMT", "content-type", "application/json", "x-request-id",
        "5f3c2a1b9d8e7f6a0000000000001234", "x-forwarded-for", "127.0.0.1", "OK", "200", "GET",
        "/api/student",
    ];
    let mut out = Vec::with_capacity(4096);
    let n = 2_000_000;
    let t = Instant::now();
    for _ in 0..n {
        out.clear();
        // One byte first, as after a status line: the copies start unaligned.
        out.push(b'x');
        for f in &fields {
            copy(black_box(&mut out), black_box(f.as_bytes()));
        }
        black_box(&out);
    }
    let ns = t.elapsed().as_nanos() as f64 / (n * fields.len()) as f64;
    println!("short copy, {name:>17}: {ns:6.2} ns");
}

fn main() {
    for _ in 0..2 {
        moves::<16>();
        moves::<29>();
        moves::<48>();
        moves::<232>();
        moves::<528>();
        copies("extend_from_slice", extend);
        copies("put_short", put_short);
    }
}
