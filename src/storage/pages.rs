//! Reading verified pages and finding room for new rows.

use super::buffer::{Lock, LockedBuffer};
use super::{rel_name, wal};
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_core::meta::Meta;
use torii_core::page::NO_BLOCK;
use torii_core::{page, page::PageKind};

/// Raises the data-corruption ERROR (SQLSTATE XX001) for a page that failed its check.
///
/// # Safety
/// `rel` must be open.
pub unsafe fn report_corrupt(rel: pg_sys::Relation, blk: u32, err: &page::PageError) -> ! {
    let detail = match err {
        page::PageError::Checksum { stored, computed } => format!(
            "checksum mismatch in block {blk} of relation \"{}\": expected {computed:08X}, found {stored:08X}",
            rel_name(rel)
        ),
        page::PageError::Malformed(why) => format!(
            "invalid page in block {blk} of relation \"{}\": {why}",
            rel_name(rel)
        ),
    };
    ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        format!("torii: {detail}")
    );
    unreachable!()
}

thread_local! {
    /// Pages this backend has verified, by shared buffer: (tablespace, database, relation,
    /// block, checksum). A buffer whose tag and stored checksum are unchanged since it was
    /// verified (or since this backend wrote it) needs no second CRC pass: every change of a
    /// torii page stamps a new checksum. A page this backend reads from disk is always checked.
    static VERIFIED: std::cell::RefCell<Vec<[u32; 5]>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn cache_entry(rel: pg_sys::Relation, blk: u32, p: &[u8]) -> [u32; 5] {
    // SAFETY: rel is open.
    let n = unsafe { (*rel).rd_node };
    [
        n.spcNode.into(),
        n.dbNode.into(),
        n.relNode.into(),
        blk,
        page::read_special(p).crc,
    ]
}

/// Whether the locked buffer's page was verified before in its current state.
fn known_good(rel: pg_sys::Relation, b: &LockedBuffer, p: &[u8]) -> bool {
    let id = b.buffer();
    if id <= 0 || b.from_disk {
        return false;
    }
    let e = cache_entry(rel, b.block(), p);
    VERIFIED.with(|v| v.borrow().get(id as usize - 1) == Some(&e))
}

/// Records that the locked buffer's page is valid in its current state.
pub fn remember_good(rel: pg_sys::Relation, b: &LockedBuffer) {
    remember_written(rel, b.buffer(), b.block());
}

/// Forgets which pages were verified, as a new backend starts out (tests that damage a page
/// in shared memory use it: the cache is there to skip re-checking pages this backend has
/// already checked or written, not to catch corruption made in memory).
#[cfg(any(test, feature = "pg_test"))]
pub fn forget_verified() {
    VERIFIED.with(|v| v.borrow_mut().clear());
}

/// Records a page this backend has just written (still locked) as valid.
pub fn remember_written(rel: pg_sys::Relation, buf: pg_sys::Buffer, blk: u32) {
    if buf <= 0 {
        return;
    }
    // SAFETY: the buffer is pinned and locked by the writer; pages are BLCKSZ.
    let p = unsafe {
        std::slice::from_raw_parts(pg_sys::BufferGetPage(buf) as *const u8, page::BLCKSZ)
    };
    let e = cache_entry(rel, blk, p);
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.is_empty() {
            // SAFETY: NBuffers is fixed for the life of the server.
            v.resize(unsafe { pg_sys::NBuffers } as usize, [0; 5]);
        }
        if let Some(slot) = v.get_mut(buf as usize - 1) {
            *slot = e;
        }
    });
}

/// Checks a page image, raising XX001 when it is damaged. Returns false for a new (all-zero)
/// page, which holds nothing.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn check(rel: pg_sys::Relation, blk: u32, p: &[u8]) -> bool {
    if page::is_new(p) {
        return false;
    }
    if let Err(e) = page::verify(p) {
        // SAFETY: rel is open (the caller holds a buffer of it).
        unsafe { report_corrupt(rel, blk, &e) }
    }
    true
}

/// Checks a locked page, raising XX001 when it is damaged. Returns false for a new (all-zero)
/// page, which holds nothing.
///
/// # Safety
/// `rel` must be an open relation and `b` a buffer of it.
pub unsafe fn check_locked(rel: pg_sys::Relation, b: &LockedBuffer) -> bool {
    let p = b.page();
    if known_good(rel, b, p) {
        return true;
    }
    if page::is_new(p) {
        return false;
    }
    if let Err(e) = page::verify(p) {
        // SAFETY: rel is open (we hold a buffer of it).
        unsafe { report_corrupt(rel, b.block(), &e) }
    }
    remember_good(rel, b);
    true
}

/// Reads and locks a page and verifies it.
///
/// # Safety
/// `rel` must be open and `blk` inside it.
pub unsafe fn read_verified(
    rel: pg_sys::Relation,
    blk: u32,
    lock: Lock,
    strategy: pg_sys::BufferAccessStrategy,
) -> (LockedBuffer, bool) {
    let b = LockedBuffer::read(rel, blk, lock, strategy);
    let valid = check_locked(rel, &b);
    (b, valid)
}

/// Copies a verified page into `dst` (taking the share lock only for the copy), so that rows
/// can be examined without holding the buffer: in-place updates may change the shared page
/// at any time after the lock is released. Returns the page kind, or None for a new page.
///
/// # Safety
/// `rel` must be open and `blk` inside it.
pub unsafe fn copy_page(
    rel: pg_sys::Relation,
    blk: u32,
    strategy: pg_sys::BufferAccessStrategy,
    dst: &mut [u8],
) -> Option<PageKind> {
    let good = {
        let b = LockedBuffer::read(rel, blk, Lock::Share, strategy);
        dst.copy_from_slice(b.page());
        known_good(rel, &b, dst)
    };
    if good {
        return page::kind(dst);
    }
    if page::is_new(dst) {
        return None;
    }
    if let Err(e) = page::verify(dst) {
        report_corrupt(rel, blk, &e)
    }
    page::kind(dst)
}

/// As [`copy_page`], but when the page was verified before in its current state copies only
/// what rows `offsets` need: the header and line pointers, those rows and the special space
/// (the rest of `dst` keeps whatever it held). Pages not known good are copied whole and
/// verified.
///
/// # Safety
/// `rel` must be open and `blk` inside it.
pub unsafe fn copy_rows(
    rel: pg_sys::Relation,
    blk: u32,
    strategy: pg_sys::BufferAccessStrategy,
    dst: &mut [u8],
    offsets: &[u16],
) -> Option<PageKind> {
    {
        let b = LockedBuffer::read(rel, blk, Lock::Share, strategy);
        let src = b.page();
        if known_good(rel, &b, src) {
            let lower = page::pd_lower(src).min(page::SPECIAL_OFFSET);
            dst[..lower].copy_from_slice(&src[..lower]);
            dst[page::SPECIAL_OFFSET..].copy_from_slice(&src[page::SPECIAL_OFFSET..]);
            let n = page::line_pointer_count(src);
            for &off in offsets {
                if off == 0 || off as usize > n {
                    continue;
                }
                let lp = page::line_pointer(src, off as usize);
                if lp.flags == page::LP_NORMAL && lp.off + lp.len <= page::SPECIAL_OFFSET {
                    dst[lp.off..lp.off + lp.len].copy_from_slice(&src[lp.off..lp.off + lp.len]);
                }
            }
            return page::kind(dst);
        }
    }
    copy_page(rel, blk, strategy, dst)
}

/// Number of blocks of the main fork.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn nblocks(rel: pg_sys::Relation) -> u32 {
    // SAFETY: rel is open.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// A page for a new undo page, with the metapage `meta` exclusively locked by the caller: the
/// head of the free-page list if it can be locked at once (the caller's WAL record then moves
/// the list's head on, see `wal::append_undo`), else a never-initialized page the free space map
/// offers, else a new block. Callers hold other buffer locks, so this never waits for one.
///
/// # Safety
/// `rel` must be open and `meta` its metapage, exclusively locked.
pub unsafe fn free_or_new_page(rel: pg_sys::Relation, meta: &LockedBuffer) -> LockedBuffer {
    let nblocks = nblocks(rel);
    if let Some(b) = try_free_list_head(rel, meta, nblocks) {
        return b;
    }
    let mut blk = pg_sys::GetPageWithFreeSpace(rel, SPECIAL_FREE_MIN);
    // Entries the map has wrong are corrected one per try; the bound only keeps a writer that
    // holds other buffer locks from walking the whole map.
    for _ in 0..64 {
        if blk == pg_sys::InvalidBlockNumber || blk == 0 || blk >= nblocks {
            break;
        }
        // What to tell the map about a page we cannot take: below an empty page's space so
        // it stops offering it for undo (a data page keeps serving inserts), or none for a
        // page that is not a data page; a page we could not lock at once keeps its entry.
        let mut avail = pg_sys::GetRecordedFreeSpace(rel, blk);
        if let Some(b) = LockedBuffer::try_exclusive(rel, blk) {
            let p = b.page();
            if page::is_new(p) {
                // Taken: the map must not offer it again.
                pg_sys::RecordPageWithFreeSpace(rel, blk, 0);
                return b;
            }
            avail = if page::kind(p) == Some(PageKind::Data) {
                page::free_space(p).min(SPECIAL_FREE_MIN - 1)
            } else {
                0
            };
        }
        blk = pg_sys::RecordAndGetPageWithFreeSpace(rel, blk, avail, SPECIAL_FREE_MIN);
    }
    extend(rel, std::ptr::null_mut())
}

/// The head of the free-page list (pages undo discard freed, linked from the metapage's
/// `free_head` through their special space's `next`), exclusively locked, if there is one and
/// it can be locked at once. Free pages are kept out of the free space map, so that inserts
/// fill the room data pages have before they take one, and undo takes them first.
///
/// # Safety
/// `rel` must be open and `meta` its metapage, locked by the caller.
unsafe fn try_free_list_head(
    rel: pg_sys::Relation,
    meta: &LockedBuffer,
    nblocks: u32,
) -> Option<LockedBuffer> {
    let head = Meta::read(meta.page()).free_head;
    if head == NO_BLOCK || head == 0 || head >= nblocks {
        return None;
    }
    let b = LockedBuffer::try_exclusive(rel, head)?;
    let p = b.page();
    (page::kind(p) == Some(PageKind::Free) && page::verify(p).is_ok()).then_some(b)
}

/// Takes the head of the free-page list as an empty data page, in one WAL record with the
/// metapage (so a crash cannot lose the page from the list without it being a data page).
/// None when the list is empty or its head cannot be locked at once.
///
/// # Safety
/// `rel` must be open with a metapage; the caller holds no undo page or metapage lock.
unsafe fn pop_free_page_as_data(rel: pg_sys::Relation) -> Option<LockedBuffer> {
    // Cheap check first, without the exclusive metapage lock every writer may need.
    {
        let (m, _) = read_verified(rel, 0, Lock::Share, std::ptr::null_mut());
        if Meta::read(m.page()).free_head == NO_BLOCK {
            return None;
        }
    }
    let (mb, _) = read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
    let b = try_free_list_head(rel, &mb, nblocks(rel))?;
    let next = page::read_special(b.page()).next;
    wal::edit_pages(rel, &[&b, &mb], |imgs| {
        page::init_page(imgs[0], PageKind::Data);
        let mut m = Meta::read(imgs[1]);
        m.free_head = next;
        m.free_pages = m.free_pages.saturating_sub(1);
        m.write(imgs[1]);
    });
    drop(mb);
    Some(b)
}

/// Free space that only an empty page has.
const SPECIAL_FREE_MIN: usize = page::SPECIAL_OFFSET - page::PAGE_HEADER_SIZE - 64;

/// Extends the relation by one block, returned exclusively locked (to be formatted by the
/// caller's WAL record).
///
/// # Safety
/// `rel` must be open.
pub unsafe fn extend(
    rel: pg_sys::Relation,
    strategy: pg_sys::BufferAccessStrategy,
) -> LockedBuffer {
    pg_sys::LockRelationForExtension(rel, pg_sys::ExclusiveLock as i32);
    let b = extend_locked(rel, strategy);
    pg_sys::UnlockRelationForExtension(rel, pg_sys::ExclusiveLock as i32);
    b
}

/// Extends the relation by one block, returned exclusively locked. Called with the extension
/// lock held.
unsafe fn extend_locked(
    rel: pg_sys::Relation,
    strategy: pg_sys::BufferAccessStrategy,
) -> LockedBuffer {
    LockedBuffer::read(rel, pg_sys::InvalidBlockNumber, Lock::Exclusive, strategy)
}

/// Makes sure block 0 is a metapage (tables are created empty; the first writer formats it).
///
/// # Safety
/// `rel` must be open and locked against concurrent DDL.
pub unsafe fn ensure_metapage(rel: pg_sys::Relation) {
    if nblocks(rel) > 0 {
        return;
    }
    pg_sys::LockRelationForExtension(rel, pg_sys::ExclusiveLock as i32);
    // Guard the extension lock so that an ERROR below cannot leave it held past the guard.
    struct ExtLock(pg_sys::Relation);
    impl Drop for ExtLock {
        fn drop(&mut self) {
            // SAFETY: we took the extension lock on this open relation.
            unsafe { pg_sys::UnlockRelationForExtension(self.0, pg_sys::ExclusiveLock as i32) }
        }
    }
    let _ext = ExtLock(rel);
    if nblocks(rel) == 0 {
        let b = extend_locked(rel, std::ptr::null_mut());
        assert_eq!(b.block(), 0);
        wal::init_metapage(rel, &b, 0);
    }
}

/// Largest row a data page takes.
pub const MAX_ROW_SIZE: usize = page::SPECIAL_OFFSET - page::PAGE_HEADER_SIZE - page::ITEM_ID_SIZE;

/// Space a row needs on a page, line pointer included.
pub fn space_needed(len: usize) -> usize {
    len.next_multiple_of(8) + page::ITEM_ID_SIZE
}

/// Whether a data page takes another row of `len` bytes.
pub fn fits(p: &[u8], len: usize) -> bool {
    // The rule of the page operation itself (a reused line pointer costs no pointer room).
    torii_core::pageop::can_add(p, len, Some(page::MAX_ROWS_PER_PAGE)).is_ok()
}

/// Bytes an insert leaves free on a page that already holds rows: the table's `fillfactor`
/// reserve, computed as heap's `RelationGetTargetPageFreeSpace` (in-place updates may then use
/// it). A new page takes its first row whatever the fillfactor.
///
/// # Safety
/// `rel` must be an open table (its rd_options, if any, are heap's StdRdOptions: PostgreSQL 15
/// parses every table AM's reloptions with heap_reloptions).
pub unsafe fn fillfactor_reserve(rel: pg_sys::Relation) -> usize {
    let opts = (*rel).rd_options as *const pg_sys::StdRdOptions;
    let ff = if opts.is_null() {
        100
    } else {
        (*opts).fillfactor.clamp(10, 100) as usize
    };
    page::BLCKSZ * (100 - ff) / 100
}

/// Largest request the free space map takes (`MaxFSMRequestSize`, i.e. heap's
/// MaxHeapTupleSize); a larger one goes straight to a new page, as heap does.
const MAX_FSM_REQUEST: usize = 8160;

/// Whether an undo page takes another record of `len` bytes (no slot limit there).
pub fn fits_undo(p: &[u8], len: usize) -> bool {
    page::pd_upper(p) - page::pd_lower(p) >= space_needed(len)
}

/// An exclusively locked page with room for a row of `len` bytes; `format` says that it is
/// new and must be formatted as a data page by the caller's WAL record.
pub struct Target {
    pub buf: LockedBuffer,
    pub format: bool,
}

/// Finds a data page with room for `len` bytes: the relation's cached target block, then the
/// free space map, then the free-page list, then a new block.
///
/// # Safety
/// `rel` must be open with at least RowExclusiveLock.
pub unsafe fn find_room(
    rel: pg_sys::Relation,
    len: usize,
    strategy: pg_sys::BufferAccessStrategy,
) -> Target {
    // The cached target block exists (smgr forgets it when the relation is truncated), so no
    // size lookup is needed on this path.
    let smgr = pg_sys::RelationGetSmgr(rel);
    let mut blk = (*smgr).smgr_targblock;
    let mut nblocks = u32::MAX;
    // Pages that hold rows must keep the fillfactor reserve after this one.
    let reserve = fillfactor_reserve(rel);
    let request = space_needed(len) + reserve;
    if request > MAX_FSM_REQUEST {
        ensure_metapage(rel);
        blk = pg_sys::InvalidBlockNumber;
    } else if blk == pg_sys::InvalidBlockNumber || blk == 0 {
        ensure_metapage(rel);
        nblocks = self::nblocks(rel);
        blk = pg_sys::GetPageWithFreeSpace(rel, request);
        // As heap: when the map knows nothing (a small table, or one never vacuumed), try the
        // last pages before extending, or every new session (and every relcache reset) would
        // start a page of its own. The last block is often an undo page, so look a few back.
        if blk == pg_sys::InvalidBlockNumber {
            if let Some(b) = last_data_page_with_room(rel, nblocks, len + reserve, strategy) {
                return target(rel, b, false);
            }
        }
    }
    // Like heap, follow the free space map until it has nothing: every page that turns out
    // too full corrects its entry, so stale entries (pages refilled since their space was
    // recorded) are used up rather than left to make every later insert extend the file.
    // The cap only guards against a map that keeps answering the same page.
    let mut tries = 0;
    while blk != pg_sys::InvalidBlockNumber && blk != 0 && blk < nblocks && tries < 10_000 {
        tries += 1;
        let b = LockedBuffer::read(rel, blk, Lock::Exclusive, strategy);
        let p = b.page();
        if page::is_new(p) {
            return target(rel, b, true);
        }
        check_locked(rel, &b);
        if page::kind(p) == Some(PageKind::Data) && fits(p, len + reserve) {
            return target(rel, b, false);
        }
        // A page whose line pointers are all taken has no room, whatever its free bytes.
        let free = if page::kind(p) == Some(PageKind::Data)
            && (page::line_pointer_count(p) < page::MAX_ROWS_PER_PAGE
                || torii_core::pageop::reusable_pointers(p) > 0)
        {
            page::free_space(p)
        } else {
            0
        };
        drop(b);
        blk = pg_sys::RecordAndGetPageWithFreeSpace(rel, blk, free, request);
        if nblocks == u32::MAX {
            nblocks = self::nblocks(rel);
        }
    }
    // An empty page freed by undo discard, before the file grows.
    if let Some(b) = pop_free_page_as_data(rel) {
        return target(rel, b, false);
    }
    let b = extend(rel, strategy);
    target(rel, b, true)
}

/// The insert target `b`, remembered as the relation's target block for the next insert.
///
/// # Safety
/// `rel` must be open and `b` one of its pages.
unsafe fn target(rel: pg_sys::Relation, b: LockedBuffer, format: bool) -> Target {
    (*pg_sys::RelationGetSmgr(rel)).smgr_targblock = b.block();
    Target { buf: b, format }
}

/// How many blocks from the end [`last_data_page_with_room`] looks at.
const LAST_PAGES_TRIED: u32 = 4;

/// One of the last [`LAST_PAGES_TRIED`] blocks that is a data page with room for `need` bytes,
/// exclusively locked.
///
/// # Safety
/// `rel` must be open with at least RowExclusiveLock; `nblocks` its current size.
unsafe fn last_data_page_with_room(
    rel: pg_sys::Relation,
    nblocks: u32,
    need: usize,
    strategy: pg_sys::BufferAccessStrategy,
) -> Option<LockedBuffer> {
    let first = nblocks.saturating_sub(LAST_PAGES_TRIED).max(1);
    for blk in (first..nblocks).rev() {
        let b = LockedBuffer::read(rel, blk, Lock::Exclusive, strategy);
        if page::is_new(b.page()) {
            continue;
        }
        check_locked(rel, &b);
        if page::kind(b.page()) == Some(PageKind::Data) && fits(b.page(), need) {
            return Some(b);
        }
    }
    None
}

/// Tells the free space map what is left on a page we filled.
///
/// # Safety
/// `rel` must be an open relation and `blk` one of its blocks.
pub unsafe fn record_free(rel: pg_sys::Relation, blk: u32, p: &[u8]) {
    // SAFETY: rel is open.
    unsafe { pg_sys::RecordPageWithFreeSpace(rel, blk, page::free_space(p)) }
}
