//! This worker's connections that are waiting for a request head, longest-waiting first: what
//! the connection cap closes to make room for a new client (nginx's reusable-connection queue
//! does the same for keep-alive connections).
//!
//! A connection joins the queue's tail when it starts waiting for a head and leaves it when a
//! whole head has arrived, so the head of the queue is the connection that has waited longest:
//! an idle keep-alive connection, or one dribbling its head (slowloris). A connection in the
//! middle of a request is never in the queue, so closing from it never cuts a request short.
//!
//! Why a thread-local: each proxy worker is a current-thread runtime, so every connection
//! task and the accept loop that evicts run on the worker's own thread; the queue needs no
//! lock, and a connection's place in it is an index it carries. The queue is an index-linked
//! list inside a slab: joining, leaving and evicting are O(1), a few stores per request.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::Waker;

use super::spread::Load;

/// No neighbour.
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    prev: u32,
    next: u32,
    /// In the queue (waiting for a head).
    queued: bool,
    /// The cap chose this connection: it closes at its next poll.
    evicted: bool,
    /// Wakes the connection's task to close.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Queue {
    entries: Vec<Entry>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    /// Connections in the queue.
    len: usize,
}

impl Queue {
    const fn new() -> Self {
        Queue {
            entries: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    fn add(&mut self) -> u32 {
        let fresh = Entry {
            prev: NIL,
            next: NIL,
            queued: false,
            evicted: false,
            waker: None,
        };
        if let Some(i) = self.free.pop() {
            self.entries[i as usize] = fresh;
            return i;
        }
        self.entries.push(fresh);
        (self.entries.len() - 1) as u32
    }

    /// Frees `i`'s place; whether the cap had chosen it (it was counted as closing).
    fn remove(&mut self, i: u32) -> bool {
        self.unlink(i);
        let e = &mut self.entries[i as usize];
        e.waker = None;
        let evicted = std::mem::take(&mut e.evicted);
        self.free.push(i);
        if self.free.len() == self.entries.len() {
            // Every connection left (a flood ended): give the slab's memory back.
            self.entries = Vec::new();
            self.free = Vec::new();
        }
        evicted
    }

    fn push_back(&mut self, i: u32) {
        if self.entries[i as usize].queued {
            return;
        }
        let tail = self.tail;
        {
            let e = &mut self.entries[i as usize];
            e.queued = true;
            e.prev = tail;
            e.next = NIL;
        }
        match tail {
            NIL => self.head = i,
            t => self.entries[t as usize].next = i,
        }
        self.tail = i;
        self.len += 1;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let e = &mut self.entries[i as usize];
            if !e.queued {
                return;
            }
            e.queued = false;
            (e.prev, e.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.entries[n as usize].prev = prev,
        }
        self.len -= 1;
    }

    /// Marks up to `n` of the longest-waiting connections for closing; how many it marked.
    fn evict(&mut self, n: usize) -> usize {
        let mut done = 0;
        while done < n && self.head != NIL {
            let i = self.head;
            self.unlink(i);
            let e = &mut self.entries[i as usize];
            e.evicted = true;
            if let Some(w) = e.waker.take() {
                w.wake();
            }
            done += 1;
        }
        done
    }
}

thread_local! {
    static QUEUE: RefCell<Queue> = const { RefCell::new(Queue::new()) };
    /// The balancer's connection counts, where connections chosen to close are counted for
    /// every worker together (`attach`).
    static LOAD: RefCell<Option<Arc<Load>>> = const { RefCell::new(None) };
}

/// Ties this worker thread's queue to the balancer's counts. Why the count of closing
/// connections is shared: the cap is one for all workers, and two workers that each saw only
/// their own closing ones would both make room for the same newcomer, closing more than needed.
pub(crate) fn attach(load: Arc<Load>) {
    LOAD.with(|l| *l.borrow_mut() = Some(load));
}

fn with<R>(f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
    // `try_with`: a task dropped while the thread exits finds the queue gone, and has
    // nothing left to do in it.
    QUEUE.try_with(|q| f(&mut q.borrow_mut())).ok()
}

/// A connection's place in its worker's queue, for as long as its plain loop serves it.
#[derive(Debug)]
pub(crate) struct Place(u32);

impl Place {
    /// A place for a new connection (not yet waiting).
    pub(crate) fn new() -> Self {
        Place(with(Queue::add).unwrap_or(NIL))
    }

    /// The connection waits for a head from now on (no-op if it already does): it joins the
    /// tail.
    pub(crate) fn waiting(&self) {
        with(|q| q.push_back(self.0));
    }

    /// A head arrived: the connection is busy and may not be closed for the cap.
    pub(crate) fn busy(&self) {
        with(|q| q.unlink(self.0));
    }

    /// Whether the cap chose this connection to close. `waker` is kept to wake it when it is
    /// chosen later; the same task's waker is stored once.
    pub(crate) fn evicted(&self, waker: &Waker) -> bool {
        with(|q| {
            let e = &mut q.entries[self.0 as usize];
            if e.evicted {
                return true;
            }
            if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                e.waker = Some(waker.clone());
            }
            false
        })
        .unwrap_or(false)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.0 != NIL && with(|q| q.remove(self.0)) == Some(true) {
            let _ = LOAD.try_with(|l| {
                if let Some(load) = l.borrow().as_ref() {
                    load.closed_one();
                }
            });
        }
    }
}

/// Closes up to `n` of this worker's longest-waiting connections; how many it chose.
pub(crate) fn evict(n: usize) -> usize {
    with(|q| q.evict(n)).unwrap_or(0)
}

/// This worker's connections waiting for a head.
pub(crate) fn waiting() -> usize {
    with(|q| q.len).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(q: &Queue) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = q.head;
        while i != NIL {
            out.push(i);
            i = q.entries[i as usize].next;
        }
        out
    }

    #[test]
    fn the_longest_waiting_connection_is_evicted_first_and_busy_ones_never() {
        let mut q = Queue::new();
        let (a, b, c) = (q.add(), q.add(), q.add());
        q.push_back(b);
        q.push_back(a);
        q.push_back(c);
        q.push_back(a); // already waiting: keeps its place
        assert_eq!(order(&q), [b, a, c]);
        q.unlink(a); // a head arrived
        assert_eq!(order(&q), [b, c]);
        q.push_back(a); // waiting again, now the newest
        assert_eq!(q.evict(2), 2);
        assert_eq!(order(&q), [a]);
        assert!(q.entries[b as usize].evicted && q.entries[c as usize].evicted);
        assert!(!q.entries[a as usize].evicted);
        q.unlink(a);
        assert_eq!(q.evict(5), 0, "nothing waits");
        assert!(q.remove(b), "an evicted connection that closes was closing");
        assert!(!q.remove(a));
    }

    #[test]
    fn a_freed_place_is_reused_and_an_empty_queue_gives_its_memory_back() {
        let mut q = Queue::new();
        let a = q.add();
        let b = q.add();
        q.push_back(a);
        q.remove(a);
        assert_eq!(q.len, 0);
        assert_eq!(q.add(), a, "the freed slot");
        q.remove(a);
        q.remove(b);
        assert_eq!(q.entries.capacity(), 0);
        assert_eq!((q.head, q.tail), (NIL, NIL));
    }
}
