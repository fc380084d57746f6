//! Comparing keys: the operator classes' comparison functions (support function 1, btree's
//! own `btint4cmp`, `bttextcmp`, …) applied column by column, with DESC and NULLS FIRST/LAST.

use pgrx::pg_sys;
use std::cmp::Ordering;
use torii_btree::tuple;

/// `INDOPTION_DESC`, `INDOPTION_NULLS_FIRST`.
const INDOPTION_DESC: i16 = 1;
const INDOPTION_NULLS_FIRST: i16 = 2;

/// How one key column sorts.
#[derive(Clone, Copy)]
pub struct ColOrder {
    pub desc: bool,
    pub nulls_first: bool,
}

/// The key columns of an index.
pub struct KeyDesc {
    pub tupdesc: pg_sys::TupleDesc,
    pub nkeys: usize,
    pub natts: usize,
    pub procs: Vec<*mut pg_sys::FmgrInfo>,
    pub colls: Vec<pg_sys::Oid>,
    pub order: Vec<ColOrder>,
    pub nulls_not_distinct: bool,
}

impl KeyDesc {
    /// # Safety
    /// `rel` must be an open torii_btree index; the result lives as long as it stays open.
    pub unsafe fn new(rel: pg_sys::Relation) -> KeyDesc {
        let index = (*rel).rd_index;
        let nkeys = (*index).indnkeyatts as usize;
        let natts = (*index).indnatts as usize;
        let mut procs = Vec::with_capacity(nkeys);
        let mut colls = Vec::with_capacity(nkeys);
        let mut order = Vec::with_capacity(nkeys);
        for i in 0..nkeys {
            procs.push(pg_sys::index_getprocinfo(rel, (i + 1) as i16, 1));
            colls.push(*(*rel).rd_indcollation.add(i));
            let opt = *(*rel).rd_indoption.add(i);
            order.push(ColOrder {
                desc: opt & INDOPTION_DESC != 0,
                nulls_first: opt & INDOPTION_NULLS_FIRST != 0,
            });
        }
        KeyDesc {
            tupdesc: (*rel).rd_att,
            nkeys,
            natts,
            procs,
            colls,
            order,
            nulls_not_distinct: (*index).indnullsnotdistinct,
        }
    }

    /// Compares the first `ncols` key columns of two index tuples.
    ///
    /// # Safety
    /// Both must point to 8-aligned index tuples of this index.
    pub unsafe fn cmp_tuples(&self, a: *const u8, b: *const u8, ncols: usize) -> Ordering {
        for i in 0..ncols {
            let x = getattr(a, i + 1, self.tupdesc);
            let y = getattr(b, i + 1, self.tupdesc);
            let c = cmp_values(self.procs[i], self.colls[i], self.order[i], x, y);
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    }

    /// True if a key column of the tuple is NULL.
    ///
    /// # Safety
    /// `t` must point to an 8-aligned index tuple of this index.
    pub unsafe fn has_null_key(&self, t: *const u8) -> bool {
        (0..self.nkeys).any(|i| getattr(t, i + 1, self.tupdesc).1)
    }
}

/// Compares an index value `a` with `b` (a key value of the comparison function's right-hand
/// type), in index order.
///
/// # Safety
/// `proc_` must be a valid comparison function for the values' types.
pub unsafe fn cmp_values(
    proc_: *mut pg_sys::FmgrInfo,
    coll: pg_sys::Oid,
    order: ColOrder,
    a: (pg_sys::Datum, bool),
    b: (pg_sys::Datum, bool),
) -> Ordering {
    match (a.1, b.1) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if order.nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if order.nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, false) => {
            let r = pg_sys::FunctionCall2Coll(proc_, coll, a.0, b.0).value() as i32;
            let o = r.cmp(&0);
            if order.desc {
                o.reverse()
            } else {
                o
            }
        }
    }
}

/// Attribute `attno` (1-based) of the index tuple at `t`, like `index_getattr`.
///
/// # Safety
/// `t` must point to an 8-aligned index tuple described by `desc` with at least `attno`
/// attributes.
pub unsafe fn getattr(
    t: *const u8,
    attno: usize,
    desc: pg_sys::TupleDesc,
) -> (pg_sys::Datum, bool) {
    let info = u16::from_ne_bytes([*t.add(6), *t.add(7)]);
    let att = (*desc).attrs.as_ptr().add(attno - 1);
    if info & tuple::NULL_BIT == 0 {
        let off = (*att).attcacheoff;
        if off >= 0 {
            return (fetch_att(t.add(8 + off as usize), att), false);
        }
    } else {
        let bits = t.add(8);
        if *bits.add((attno - 1) >> 3) & (1 << ((attno - 1) & 7)) == 0 {
            return (pg_sys::Datum::from(0usize), true);
        }
    }
    (
        pg_sys::nocache_index_getattr(t as pg_sys::IndexTuple, attno as i32, desc),
        false,
    )
}

unsafe fn fetch_att(p: *const u8, att: *const pg_sys::FormData_pg_attribute) -> pg_sys::Datum {
    if (*att).attbyval {
        match (*att).attlen {
            1 => pg_sys::Datum::from(*(p as *const i8) as isize),
            2 => pg_sys::Datum::from((p as *const i16).read_unaligned() as isize),
            4 => pg_sys::Datum::from((p as *const i32).read_unaligned() as isize),
            _ => pg_sys::Datum::from((p as *const usize).read_unaligned()),
        }
    } else {
        pg_sys::Datum::from(p)
    }
}

/// One column of a search key: a value and the function comparing index values with it.
pub struct KeyCol {
    pub value: pg_sys::Datum,
    pub isnull: bool,
    pub proc_: *mut pg_sys::FmgrInfo,
    pub coll: pg_sys::Oid,
    pub order: ColOrder,
}

/// A search key over the first `cols.len()` key columns.
pub struct SearchKey {
    pub cols: Vec<KeyCol>,
}

impl SearchKey {
    /// The key of an index tuple (which must outlive the key), all key columns.
    ///
    /// # Safety
    /// `t` must point to an 8-aligned index tuple of the index `kd` describes.
    pub unsafe fn from_tuple(kd: &KeyDesc, t: *const u8) -> SearchKey {
        let cols = (0..kd.nkeys)
            .map(|i| {
                let (value, isnull) = getattr(t, i + 1, kd.tupdesc);
                KeyCol {
                    value,
                    isnull,
                    proc_: kd.procs[i],
                    coll: kd.colls[i],
                    order: kd.order[i],
                }
            })
            .collect();
        SearchKey { cols }
    }

    /// Compares item (or pivot) `t` with the key: Less if the item sorts before it.
    ///
    /// # Safety
    /// `t` must point to an 8-aligned index tuple of the index `desc` describes.
    pub unsafe fn cmp_item(&self, t: &[u8], desc: pg_sys::TupleDesc) -> Ordering {
        if tuple::is_minus_inf(t) {
            return Ordering::Less;
        }
        for (i, c) in self.cols.iter().enumerate() {
            let v = getattr(t.as_ptr(), i + 1, desc);
            let o = cmp_values(c.proc_, c.coll, c.order, v, (c.value, c.isnull));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

/// True if two items have byte-identical key parts (so that they can share a posting list:
/// equal by the operator class is not enough, index-only scans return the stored bytes).
pub fn same_key_bytes(a: &[u8], b: &[u8]) -> bool {
    let (la, lb) = (tuple::key_len(a), tuple::key_len(b));
    la == lb
        && tuple::info(a) & tuple::NULL_BIT == tuple::info(b) & tuple::NULL_BIT
        && a[8..la] == b[8..lb]
}
