//! Fixed-seed randomized test of the page algorithms: a level of leaf pages (a list, like the
//! leaf level linked by right-links) takes random insertions (with posting-list merging and
//! splits) and deletions, and must always hold exactly what a `BTreeMap` model holds, in
//! order, with valid pages.

use std::collections::{BTreeMap, BTreeSet};
use torii_btree::{page, search, split, tuple, Tid};
use torii_core::page::{verify, NO_BLOCK};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(v: i32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[6..8].copy_from_slice(&16u16.to_ne_bytes());
    t[8..12].copy_from_slice(&v.to_ne_bytes());
    t
}
fn val(t: &[u8]) -> i32 {
    i32::from_ne_bytes(t[8..12].try_into().unwrap())
}

fn insert(pages: &mut Vec<Vec<u8>>, k: i32, tid: Tid) {
    // Rightmost page whose high key >= k (the "<=" descent plus move-right).
    let mut pi = 0;
    while let Some(h) = page::high_key(&pages[pi]) {
        if val(h) >= k {
            break;
        }
        pi += 1;
    }
    let p = &mut pages[pi];
    let n = page::nitems(p);
    let ub = search::upper_bound(n, |i| val(page::item(p, i)).cmp(&k));
    // Merge into the posting item of k just before, if there is room.
    if ub > 0 && val(page::item(p, ub - 1)) == k {
        let old = page::item(p, ub - 1).to_vec();
        let mut tids = tuple::tids(&old);
        tuple::merge_tids(&mut tids, &[tid]);
        let new = tuple::leaf_item(&old, &tids);
        if new.len() <= tuple::POSTING_CAP && page::fits_replace(p, ub - 1, new.len()) {
            page::replace_item(p, ub - 1, &new).unwrap();
            return;
        }
    }
    let new = tuple::leaf_item(&key(k), &[tid]);
    if page::fits(p, new.len()) {
        page::insert_item(p, ub, &new).unwrap();
        return;
    }
    // Split.
    let mut items: Vec<Vec<u8>> = (0..n).map(|i| page::item(p, i).to_vec()).collect();
    items.insert(ub, new);
    let lens: Vec<usize> = items.iter().map(|i| i.len()).collect();
    let high = page::high_key(p).map(|h| h.to_vec());
    let append = high.is_none() && ub == n;
    let k_split =
        split::choose_split(&lens, |_| 16, high.as_ref().map_or(0, |h| h.len()), append).unwrap();
    let sep = tuple::plain_with_tid(&items[k_split], Tid { blk: 0, off: 0 });
    let l: Vec<&[u8]> = items[..k_split].iter().map(|v| v.as_slice()).collect();
    let r: Vec<&[u8]> = items[k_split..].iter().map(|v| v.as_slice()).collect();
    let left = page::build(0, NO_BLOCK, 1, Some(&sep), &l).unwrap();
    let right = page::build(0, NO_BLOCK, page::next(p), high.as_deref(), &r).unwrap();
    pages[pi] = left;
    pages.insert(pi + 1, right);
}

fn delete(pages: &mut [Vec<u8>], k: i32, tid: Tid) -> bool {
    for p in pages.iter_mut() {
        let n = page::nitems(p);
        for i in 0..n {
            let it = page::item(p, i).to_vec();
            if val(&it) != k {
                continue;
            }
            let mut tids = tuple::tids(&it);
            if let Some(pos) = tids.iter().position(|t| *t == tid) {
                tids.remove(pos);
                if tids.is_empty() {
                    page::delete_item(p, i);
                } else {
                    page::replace_item(p, i, &tuple::leaf_item(&it, &tids)).unwrap();
                }
                return true;
            }
        }
    }
    false
}

fn contents(pages: &mut [Vec<u8>]) -> BTreeMap<i32, BTreeSet<Tid>> {
    let mut out: BTreeMap<i32, BTreeSet<Tid>> = BTreeMap::new();
    let mut last = i32::MIN;
    for (pi, p) in pages.iter_mut().enumerate() {
        torii_core::page::set_checksum(p);
        assert_eq!(verify(p), Ok(()));
        assert!(
            page::check_structure(p).is_empty(),
            "{:?}",
            page::check_structure(p)
        );
        let high = page::high_key(p).map(val);
        for i in 0..page::nitems(p) {
            let it = page::item(p, i);
            assert!(val(it) >= last, "order broken on page {pi}");
            if let Some(h) = high {
                assert!(val(it) <= h, "key above high key on page {pi}");
            }
            last = val(it);
            let ts = tuple::tids(it);
            assert!(ts.windows(2).all(|w| w[0] < w[1]));
            out.entry(val(it)).or_default().extend(ts);
        }
        if let Some(h) = high {
            last = last.max(h);
        }
    }
    out
}

#[test]
fn random_inserts_and_deletes_match_model() {
    let mut rng = Rng(0x7061_6765_7321);
    let mut pages = vec![page::build(0, NO_BLOCK, NO_BLOCK, None, &[]).unwrap()];
    let mut model: BTreeMap<i32, BTreeSet<Tid>> = BTreeMap::new();
    let mut all: Vec<(i32, Tid)> = Vec::new();
    for step in 0..40_000u32 {
        if rng.below(4) == 0 && !all.is_empty() {
            let i = rng.below(all.len() as u64) as usize;
            let (k, t) = all.swap_remove(i);
            assert!(delete(&mut pages, k, t));
            let s = model.get_mut(&k).unwrap();
            s.remove(&t);
            if s.is_empty() {
                model.remove(&k);
            }
        } else {
            // Few distinct keys: long posting lists, equal keys across pages.
            let k = if rng.below(2) == 0 {
                rng.below(50) as i32
            } else {
                rng.below(100_000) as i32
            };
            let t = Tid {
                blk: step / 50,
                off: (step % 50 + 1) as u16,
            };
            insert(&mut pages, k, t);
            model.entry(k).or_default().insert(t);
            all.push((k, t));
        }
        if step % 5000 == 0 {
            assert_eq!(contents(&mut pages), model);
        }
    }
    assert_eq!(contents(&mut pages), model);
    assert!(pages.len() > 10);
}
