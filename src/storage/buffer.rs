//! Buffer guards. A [`LockedBuffer`] owns one pin and one content lock and gives both back when
//! dropped, so an ERROR (a Rust panic under pgrx, unwinding through the guard) cannot leak them.

use pgrx::pg_sys;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lock {
    Share,
    Exclusive,
}

impl Lock {
    fn mode(self) -> i32 {
        match self {
            Lock::Share => pg_sys::BUFFER_LOCK_SHARE as i32,
            Lock::Exclusive => pg_sys::BUFFER_LOCK_EXCLUSIVE as i32,
        }
    }
}

/// A pinned and content-locked buffer of a relation's main fork.
pub struct LockedBuffer {
    buf: pg_sys::Buffer,
    lock: Lock,
    /// Whether reading it took a read from disk (into shared or local buffers) by this backend.
    pub from_disk: bool,
}

/// Blocks this backend has read from disk so far.
fn blocks_read() -> i64 {
    // SAFETY: a plain read of this backend's counters.
    unsafe { pg_sys::pgBufferUsage.shared_blks_read + pg_sys::pgBufferUsage.local_blks_read }
}

impl LockedBuffer {
    /// Reads block `blk` of `rel` and locks it.
    ///
    /// # Safety
    /// `rel` must be open and `blk` below its size (or `P_NEW` under the extension lock).
    pub unsafe fn read(
        rel: pg_sys::Relation,
        blk: pg_sys::BlockNumber,
        lock: Lock,
        strategy: pg_sys::BufferAccessStrategy,
    ) -> LockedBuffer {
        let before = blocks_read();
        let buf = pg_sys::ReadBufferExtended(
            rel,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            strategy,
        );
        let from_disk = blocks_read() != before;
        // If LockBuffer raises an ERROR, the pin is released by the resource owner at abort.
        pg_sys::LockBuffer(buf, lock.mode());
        LockedBuffer {
            buf,
            lock,
            from_disk,
        }
    }

    /// Reads block `blk` and takes its exclusive lock only if that needs no waiting.
    ///
    /// # Safety
    /// `rel` must be open and `blk` inside it.
    pub unsafe fn try_exclusive(
        rel: pg_sys::Relation,
        blk: pg_sys::BlockNumber,
    ) -> Option<LockedBuffer> {
        let before = blocks_read();
        let buf = pg_sys::ReadBufferExtended(
            rel,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        );
        let from_disk = blocks_read() != before;
        if pg_sys::ConditionalLockBuffer(buf) {
            Some(LockedBuffer {
                buf,
                lock: Lock::Exclusive,
                from_disk,
            })
        } else {
            pg_sys::ReleaseBuffer(buf);
            None
        }
    }

    pub fn buffer(&self) -> pg_sys::Buffer {
        self.buf
    }

    pub fn lock(&self) -> Lock {
        self.lock
    }

    /// Locks a buffer the caller pinned (of any fork); the guard then owns that pin and lock.
    ///
    /// # Safety
    /// `buf` must be a valid buffer pinned once by the caller, who gives that pin up.
    pub unsafe fn lock_pinned(buf: pg_sys::Buffer, lock: Lock) -> LockedBuffer {
        pg_sys::LockBuffer(buf, lock.mode());
        LockedBuffer {
            buf,
            lock,
            from_disk: false,
        }
    }

    pub fn block(&self) -> pg_sys::BlockNumber {
        // SAFETY: the buffer is pinned.
        unsafe { pg_sys::BufferGetBlockNumber(self.buf) }
    }

    /// The page, readable while the lock is held.
    pub fn page(&self) -> &[u8] {
        // SAFETY: the buffer is pinned and locked for as long as `self` lives; pages are BLCKSZ.
        unsafe { std::slice::from_raw_parts(pg_sys::BufferGetPage(self.buf) as *const u8, 8192) }
    }
}

impl Drop for LockedBuffer {
    fn drop(&mut self) {
        // SAFETY: we own exactly one pin and the content lock.
        unsafe { pg_sys::UnlockReleaseBuffer(self.buf) }
    }
}

impl LockedBuffer {
    /// Reads block `blk` of `rel` and takes a cleanup lock on it (exclusive, and no other
    /// backend holds a pin): index VACUUM waits this way for scans that keep a pin on a page.
    ///
    /// # Safety
    /// `rel` must be open and `blk` below its size.
    pub unsafe fn read_for_cleanup(
        rel: pg_sys::Relation,
        blk: pg_sys::BlockNumber,
        strategy: pg_sys::BufferAccessStrategy,
    ) -> LockedBuffer {
        let buf = pg_sys::ReadBufferExtended(
            rel,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            strategy,
        );
        pg_sys::LockBufferForCleanup(buf);
        LockedBuffer {
            buf,
            lock: Lock::Exclusive,
            // Unknown: callers verify the page in full.
            from_disk: true,
        }
    }
}
