//! Even shares of client connections across the proxy workers.
//!
//! `SO_REUSEPORT` places a new connection on a worker by a hash of its addresses, so the shares
//! are binomial: 64 connections split 36/28 or worse in about four runs out of ten, and the
//! busier worker's clients wait longer (docs/benchmarks.md has the CPU split this gave). Here a
//! worker that already holds two connections more than another hands a connection it accepted
//! to the least-loaded worker, as HAProxy does between its threads. Under light load nothing
//! moves: a handover costs two `epoll_ctl`, a wake-up and one more epoll pass.
//!
//! A connection counts on its worker (a [`Seat`]) for as long as its socket lives, through an
//! upgrade to a tunnel too ([`Seated`]). At shutdown a worker closes its inbox and serves what
//! is still in it, and a worker whose handover is refused serves the connection itself, so no
//! accepted connection is dropped (unless the kernel refuses to move its socket between epoll
//! sets, which is logged).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Open client connections per worker: kept by the workers, read by the admin API; and what
/// the connection cap did about them.
#[derive(Debug)]
pub struct Load {
    open: Box<[Slot]>,
    /// Connections the cap chose to close that have not closed yet, every worker's: they
    /// still count in `open` until their task ends.
    closing: AtomicUsize,
    /// The connection cap's episodes and counts.
    pub cap: super::cap::CapCounters,
}

/// One worker's count, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicUsize);

impl Load {
    /// Counts for `workers` workers (at least one).
    pub(crate) fn new(workers: usize) -> Self {
        Load {
            open: (0..workers.max(1)).map(|_| Slot::default()).collect(),
            closing: AtomicUsize::new(0),
            cap: Default::default(),
        }
    }

    /// Open client connections of `worker`.
    pub fn of(&self, worker: usize) -> usize {
        self.open
            .get(worker)
            .map_or(0, |s| s.0.load(Ordering::Relaxed))
    }

    /// Open client connections of every worker together.
    pub fn total(&self) -> usize {
        self.open.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    /// Connections chosen to close and still open, every worker's.
    pub(crate) fn closing(&self) -> usize {
        self.closing.load(Ordering::Relaxed)
    }

    /// Reserves the closing of the connections over `max`, counting those already closing
    /// (`excess` from [`super::cap::to_close`]); how many this caller must now close. Two
    /// workers that make room at once reserve in turn, so they never close the same excess
    /// twice.
    pub(crate) fn reserve_closing(&self, max: usize) -> usize {
        let mut closing = self.closing.load(Ordering::Relaxed);
        loop {
            let excess = super::cap::to_close(self.total(), closing, max);
            if excess == 0 {
                return 0;
            }
            match self.closing.compare_exchange_weak(
                closing,
                closing + excess,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return excess,
                Err(now) => closing = now,
            }
        }
    }

    /// `n` of a reservation found nothing to close after all.
    pub(crate) fn unreserve(&self, n: usize) {
        self.closing.fetch_sub(n, Ordering::Relaxed);
    }

    /// A connection chosen to close has closed.
    pub(crate) fn closed_one(&self) {
        self.closing.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open client connections of each worker.
    pub fn open(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker that should serve a connection `me` accepted: `me`, unless a worker for
    /// which `open` holds has at least two connections fewer (a margin, so churn of short
    /// connections does not bounce between workers).
    pub(crate) fn pick(&self, me: usize, open: impl Fn(usize) -> bool) -> usize {
        let count = |i: usize| {
            self.open
                .get(i)
                .map_or(usize::MAX, |s| s.0.load(Ordering::Relaxed))
        };
        let mine = count(me);
        let (least, fewest) = (0..self.open.len())
            .filter(|&i| i == me || open(i))
            .map(|i| (i, count(i)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        if fewest.saturating_add(1) < mine {
            least
        } else {
            me
        }
    }
}

/// A connection counted on a worker until this drops.
#[derive(Debug)]
pub(crate) struct Seat {
    load: Arc<Load>,
    worker: usize,
}

impl Seat {
    /// Counts one connection on `worker`.
    pub(crate) fn take(load: &Arc<Load>, worker: usize) -> Self {
        if let Some(s) = load.open.get(worker) {
            s.0.fetch_add(1, Ordering::Relaxed);
        }
        Seat {
            load: Arc::clone(load),
            worker,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(s) = self.load.open.get(self.worker) {
            s.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An accepted connection on its way to the worker that serves it.
#[derive(Debug)]
pub(crate) struct Handed {
    /// The client's socket, out of the accepting worker's reactor.
    pub(crate) stream: std::net::TcpStream,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Its count on the receiving worker.
    pub(crate) seat: Seat,
}

/// The workers' inboxes and their load.
#[derive(Debug)]
pub(crate) struct Spread {
    load: Arc<Load>,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

impl Spread {
    /// One inbox per worker `load` counts; the receivers go to the workers in order.
    pub(crate) fn new(load: Arc<Load>) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (inboxes, receivers) = load.open.iter().map(|_| mpsc::unbounded_channel()).unzip();
        (Arc::new(Spread { load, inboxes }), receivers)
    }

    /// Places a connection worker `me` accepted: returned with its seat when `me` serves it,
    /// `None` when another worker took it.
    pub(crate) fn place(
        &self,
        me: usize,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TcpStream, Seat)> {
        // A worker that stopped (or never started) has closed its inbox: it is not a choice.
        let to = self.load.pick(me, |i| {
            self.inboxes.get(i).is_some_and(|tx| !tx.is_closed())
        });
        let Some(inbox) = self.inboxes.get(to).filter(|_| to != me) else {
            return Some((stream, Seat::take(&self.load, me)));
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand a connection over; it is closed");
                return None;
            }
        };
        let seat = Seat::take(&self.load, to);
        match inbox.send(Handed { stream, peer, seat }) {
            Ok(()) => None,
            // That worker closed its inbox since: serve it here.
            Err(mpsc::error::SendError(h)) => {
                drop(h.seat);
                match TcpStream::from_std(h.stream) {
                    Ok(stream) => Some((stream, Seat::take(&self.load, me))),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot take a connection back; it is closed");
                        None
                    }
                }
            }
        }
    }
}

/// A client connection's socket holding its [`Seat`]: an upgraded connection (WebSocket,
/// CONNECT) outlives the task that accepted it, and still counts until it closes.
#[derive(Debug)]
pub(crate) struct Seated<T> {
    io: T,
    _seat: Seat,
}

impl<T> Seated<T> {
    /// `io`, counted by `seat` until it drops.
    pub(crate) fn new(io: T, seat: Seat) -> Self {
        Seated { io, _seat: seat }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Seated<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Seated<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_making_room_at_once_reserve_the_excess_only_once() {
        let load = Arc::new(Load::new(2));
        let _a: Vec<Seat> = (0..11).map(|_| Seat::take(&load, 0)).collect();
        let _b: Vec<Seat> = (0..11).map(|_| Seat::take(&load, 1)).collect();
        assert_eq!(
            load.reserve_closing(20),
            2,
            "the first worker takes the excess"
        );
        assert_eq!(load.reserve_closing(20), 0, "the second finds it taken");
        load.unreserve(1);
        assert_eq!(load.closing(), 1, "one of the two had nothing to close");
        load.closed_one();
        assert_eq!(load.closing(), 0);
    }

    #[test]
    fn a_worker_keeps_its_connection_unless_another_holds_two_fewer() {
        let load = Arc::new(Load::new(3));
        let seats: Vec<Seat> = (0..3).map(|_| Seat::take(&load, 0)).collect();
        let one = Seat::take(&load, 1);
        let _two = Seat::take(&load, 2);
        assert_eq!(load.open(), vec![3, 1, 1]);
        let all = |_| true;
        assert_eq!(
            load.pick(0, all),
            1,
            "the least-loaded, lowest index on a tie"
        );
        assert_eq!(
            load.pick(0, |i| i != 1),
            2,
            "a closed worker is passed over"
        );
        assert_eq!(load.pick(0, |_| false), 0, "none open: keep it");
        assert_eq!(load.pick(1, all), 1);
        drop(seats);
        assert_eq!(load.open(), vec![0, 1, 1]);
        assert_eq!(
            load.pick(1, all),
            1,
            "one more than another is within the margin"
        );
        drop(one);
        assert_eq!(load.open(), vec![0, 0, 1]);
    }

    #[test]
    fn one_worker_always_keeps_its_connections() {
        let load = Arc::new(Load::new(1));
        let _seats: Vec<Seat> = (0..5).map(|_| Seat::take(&load, 0)).collect();
        assert_eq!(load.pick(0, |_| true), 0);
    }
}
