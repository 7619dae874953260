//! Relay buffers, pooled per thread (one thread = one core's executor, or the CLI's runtime).
//!
//! Sessions hold a buffer only while data is in flight and give it back as soon as a read would
//! block, so an idle session holds none: memory follows traffic, not the number of open sessions.
//! No locks: a buffer never leaves the thread whose pool lent it.

use std::cell::RefCell;

/// Bytes of free buffers a thread keeps for reuse (32 buffers at the default 256 KiB);
/// beyond this, released buffers are freed.
pub const POOL_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Pool {
    free: Vec<Box<[u8]>>,
    bytes: usize,
    /// Bytes of buffers lent out now (data in flight).
    lent: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Bytes of free buffers this thread's pool holds now.
pub fn pooled_bytes() -> usize {
    POOL.with(|p| p.borrow().bytes)
}

/// Bytes of buffers this thread has lent out now: data in flight.
pub fn lent_bytes() -> usize {
    POOL.with(|p| p.borrow().lent)
}

/// A buffer of a fixed size, borrowed from the thread's pool while needed.
pub struct PooledBuf {
    buf: Option<Box<[u8]>>,
    size: usize,
}

impl PooledBuf {
    pub fn new(size: usize) -> Self {
        PooledBuf { buf: None, size }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_held(&self) -> bool {
        self.buf.is_some()
    }

    /// The buffer, taken from the pool (or allocated) on first use since the last release.
    pub fn get(&mut self) -> &mut [u8] {
        let size = self.size;
        self.buf.get_or_insert_with(|| {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                pool.lent += size;
                match pool.free.iter().rposition(|b| b.len() == size) {
                    Some(i) => {
                        pool.bytes -= size;
                        pool.free.swap_remove(i)
                    }
                    None => vec![0u8; size].into_boxed_slice(),
                }
            })
        })
    }

    /// Gives the buffer back to the pool; its contents are forgotten.
    pub fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                pool.lent = pool.lent.saturating_sub(buf.len());
                if pool.bytes + buf.len() <= POOL_BYTES {
                    pool.bytes += buf.len();
                    pool.free.push(buf);
                }
            });
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.release();
    }
}
