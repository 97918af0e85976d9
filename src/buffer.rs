//! Per-connection I/O buffers and the pool they are lent from.
//!
//! An idle keep-alive connection owns no buffer: the server takes one from the `BufferPool` when
//! bytes arrive and gives it back when the connection goes idle, so ten thousand idle connections
//! cost ten thousand slab entries, not ten thousand buffers.
//!
//! Invariants: `input[start..end]` are the bytes read and not yet consumed, and `input` is fully
//! initialised up to its length, so a read goes straight into `input[end..]` with no zeroing per
//! read; `output[sent..]` are the bytes serialised and not yet written. A buffer in the pool is
//! empty (both ranges empty) and no larger than `POOLED_MAX_BYTES`. The pool's `lent_bytes` is
//! the sum of `accounted` over the buffers lent out, and its `free_bytes` the capacity of the
//! pooled ones, so `/stats` reports both without walking anything; each lent buffer is re-accounted after it is used
//! (`BufferPool::reaccount`), so a buffer that grew is counted at its new size.

use std::io::{self, Read};

/// The first read of a connection gets this much room; a request head that needs more grows it.
const INITIAL_INPUT_BYTES: usize = 4096;
/// A grown buffer is shrunk back before it is pooled, so one large request does not pin memory.
const POOLED_MAX_BYTES: usize = 64 * 1024;
/// Buffers kept for reuse; beyond this they are freed (a burst does not pin its peak).
const POOL_MAX_BUFFERS: usize = 256;

#[derive(Debug, Default)]
pub struct Buffers {
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    sent: usize,
    /// The capacity last added to the pool's `lent_bytes` for this buffer.
    accounted: usize,
}

impl Buffers {
    /// The bytes read and not yet consumed by the parser.
    pub fn unread(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    /// The unread input and the output, borrowed together: a parsed request borrows the input
    /// while its response is appended to the output.
    pub fn split(&mut self) -> (&[u8], &mut Vec<u8>) {
        (&self.input[self.start..self.end], &mut self.output)
    }

    /// `split`, with the input writable: a WebSocket frame is unmasked where it lies.
    pub fn split_mut(&mut self) -> (&mut [u8], &mut Vec<u8>) {
        (&mut self.input[self.start..self.end], &mut self.output)
    }

    /// Drops `n` parsed bytes from the front of the input.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops all unread input (after a framing error nothing more can be trusted).
    pub fn discard_input(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// One `read` into the free room after the unread bytes, growing the buffer up to `cap`
    /// bytes of unread input. Returns what `read` returned; `Ok(0)` is end of stream.
    /// The caller never calls this with `cap` bytes already unread.
    pub fn read_from(&mut self, source: &mut impl Read, cap: usize) -> io::Result<usize> {
        debug_assert!(self.end - self.start < cap);
        if self.end == self.input.len() {
            self.make_room(cap);
        }
        let n = source.read(&mut self.input[self.end..])?;
        self.end += n;
        Ok(n)
    }

    fn make_room(&mut self, cap: usize) {
        let unread = self.end - self.start;
        if self.start > 0 {
            // Move the partial request to the front instead of growing: pipelined clients
            // leave a tail behind after every batch.
            self.input.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = unread;
        }
        if self.end == self.input.len() {
            let grown = (self.input.len() * 2).clamp(INITIAL_INPUT_BYTES, cap.max(INITIAL_INPUT_BYTES));
            self.input.resize(grown, 0);
        }
    }

    /// The last read filled all the room there was: the socket may hold more.
    pub fn is_full(&self) -> bool {
        self.end == self.input.len()
    }

    /// Empties both directions (the connection is closing; nothing more will be sent).
    pub fn clear(&mut self) {
        self.discard_input();
        self.output.clear();
        self.sent = 0;
    }

    pub fn unread_len(&self) -> usize {
        self.end - self.start
    }

    /// Where responses are serialised.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// The serialised bytes the socket has not taken yet.
    pub fn pending_output(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// Records that the socket took `n` more bytes of output.
    pub fn advance_output(&mut self, n: usize) {
        self.sent += n;
        debug_assert!(self.sent <= self.output.len());
        if self.sent >= self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end && self.sent == self.output.len()
    }

    /// Heap bytes this pair of buffers holds.
    pub fn capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }
}

/// Empty buffers waiting for a connection that has bytes to read or write.
#[derive(Debug, Default)]
pub struct BufferPool {
    // Boxed because connections hold `Option<Box<Buffers>>` (8 bytes in the slab entry, not
    // 64), and a box moves between pool and connection without copying or reallocating.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Buffers>>,
    /// Heap bytes of the buffers lent out, as last accounted.
    lent_bytes: usize,
    /// Heap bytes of the buffers in `free`.
    free_bytes: usize,
}

impl BufferPool {
    pub fn take(&mut self) -> Box<Buffers> {
        let buffers = self.free.pop().unwrap_or_default();
        self.free_bytes -= buffers.capacity();
        buffers
    }

    /// Takes back a connection's buffers; they must be empty.
    pub fn give(&mut self, mut buffers: Box<Buffers>) {
        debug_assert!(buffers.is_empty());
        self.lent_bytes -= std::mem::take(&mut buffers.accounted);
        if self.free.len() >= POOL_MAX_BUFFERS {
            return;
        }
        buffers.clear();
        if buffers.input.len() > POOLED_MAX_BYTES {
            buffers.input = Vec::new();
        }
        if buffers.output.capacity() > POOLED_MAX_BYTES {
            buffers.output = Vec::new();
        }
        self.free_bytes += buffers.capacity();
        self.free.push(buffers);
    }

    /// Heap bytes held by pooled buffers.
    pub fn capacity(&self) -> usize {
        self.free_bytes
    }

    /// Brings `lent_bytes` up to date with a lent buffer's current size (it grows while a
    /// connection reads a large request or queues output for a slow reader).
    pub fn reaccount(&mut self, buffers: &mut Buffers) {
        let now = buffers.capacity();
        self.lent_bytes = self.lent_bytes - buffers.accounted + now;
        buffers.accounted = now;
    }

    /// Heap bytes held by the buffers lent to connections, as last accounted.
    pub fn lent_bytes(&self) -> usize {
        self.lent_bytes
    }

    /// What one lent buffer contributes to `lent_bytes` (for the server's invariant checks).
    pub fn accounted(buffers: &Buffers) -> usize {
        buffers.accounted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumes_and_compacts() {
        let mut buffers = Buffers::default();
        let mut source: &[u8] = b"GET / HTTP/1.1\r\n\r\nGET /x";
        assert_eq!(buffers.read_from(&mut source, 1024).unwrap(), 24);
        assert_eq!(buffers.input.len(), INITIAL_INPUT_BYTES);
        buffers.consume(18);
        assert_eq!(buffers.unread(), b"GET /x");
        buffers.consume(6);
        assert!(buffers.is_empty());
        assert_eq!((buffers.start, buffers.end), (0, 0));
    }

    #[test]
    fn grows_up_to_the_cap_and_moves_a_tail_to_the_front() {
        let mut buffers = Buffers::default();
        let big = vec![b'a'; 10_000];
        let mut source: &[u8] = &big;
        while buffers.unread_len() < 10_000 {
            buffers.read_from(&mut source, 10_000).unwrap();
        }
        assert!(buffers.input.len() >= 10_000 && buffers.input.len() <= 16_384);
        buffers.consume(9_000);
        let len_before = buffers.input.len();
        let mut more: &[u8] = &big[..len_before - 10_000 + 1];
        buffers.read_from(&mut more, 20_000).unwrap(); // fills the tail exactly
        let mut last: &[u8] = b"z";
        buffers.read_from(&mut last, 20_000).unwrap(); // needs room: compacts, does not grow
        assert_eq!(buffers.input.len(), len_before);
        assert_eq!(buffers.start, 0);
        assert_eq!(buffers.unread().last(), Some(&b'z'));
    }

    #[test]
    fn output_is_cleared_once_fully_sent() {
        let mut buffers = Buffers::default();
        buffers.output().extend_from_slice(b"hello");
        buffers.advance_output(2);
        assert_eq!(buffers.pending_output(), b"llo");
        buffers.advance_output(3);
        assert!(buffers.pending_output().is_empty());
        assert!(buffers.is_empty());
    }

    #[test]
    fn pool_reuses_and_shrinks() {
        let mut pool = BufferPool::default();
        let mut buffers = pool.take();
        buffers.output().resize(POOLED_MAX_BYTES + 1, 0);
        let len = buffers.output.len();
        buffers.advance_output(len);
        pool.reaccount(&mut buffers);
        assert_eq!(pool.lent_bytes(), buffers.capacity());
        pool.give(buffers);
        assert_eq!(pool.capacity(), 0, "an oversized buffer is not kept");
        assert_eq!(pool.lent_bytes(), 0, "given back: no longer lent");
        let buffers = pool.take();
        assert!(buffers.is_empty());
    }

    #[test]
    fn lent_bytes_follow_growth_and_returns() {
        let mut pool = BufferPool::default();
        let (mut a, mut b) = (pool.take(), pool.take());
        let mut source: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        a.read_from(&mut source, 1024).unwrap();
        pool.reaccount(&mut a);
        pool.reaccount(&mut b);
        assert_eq!(pool.lent_bytes(), INITIAL_INPUT_BYTES);
        b.output().extend_from_slice(&[0; 10_000]);
        pool.reaccount(&mut b);
        pool.reaccount(&mut b); // twice counts once
        assert_eq!(pool.lent_bytes(), INITIAL_INPUT_BYTES + b.capacity());
        a.consume(a.unread_len());
        pool.give(a);
        assert_eq!(pool.lent_bytes(), b.capacity());
        assert_eq!(pool.capacity(), INITIAL_INPUT_BYTES, "the pooled bytes are counted, not summed");
        let b_bytes = b.capacity();
        b.clear();
        pool.give(b);
        assert_eq!(pool.lent_bytes(), 0);
        assert_eq!(pool.capacity(), INITIAL_INPUT_BYTES + b_bytes);
        let taken = pool.take();
        assert_eq!(pool.capacity(), INITIAL_INPUT_BYTES + b_bytes - taken.capacity());
    }
}
