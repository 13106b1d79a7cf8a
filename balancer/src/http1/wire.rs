//! Bytes of the heads the proxy writes itself: short copies that do not go through the C
//! library's `memcpy`. Plain `std` only, so `docs/perf/moves.rs` can time this very file.

/// Appends `src`, which is usually a few dozen bytes. For copies that short, musl's `memcpy`
/// (byte moves to align, then `rep movsq`) costs more than the bytes; fixed 8-byte pieces
/// compile to plain moves. Every field of every head goes through here twice. Past 64 bytes
/// (eight pieces) the call's fixed cost no longer dominates.
pub(crate) fn put_short(dst: &mut Vec<u8>, src: &[u8]) {
    if src.len() > 64 {
        dst.extend_from_slice(src);
        return;
    }
    let (pieces, mut rest) = src.as_chunks::<8>();
    for piece in pieces {
        dst.extend_from_slice(piece);
    }
    for n in [4, 2, 1] {
        if rest.len() >= n {
            dst.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
}
