//! Choosing where to split a page, and building leaf pages bottom-up for index builds.

use crate::page::{self, BODY_SIZE};

/// Fill factor of leaf pages made by a sorted build, and of the left half when the rightmost
/// page splits at its end (ascending insertions), like btree's default of 90.
pub const FILL_FACTOR: f64 = 0.90;

/// Chooses the split point of a page whose items (the new one included, in order) have the
/// given lengths: items `..k` stay left, `k..` go right. `pivot_len(k)` is the length of the
/// high key the left page gets when split at `k`; `right_high_len` the length of the page's
/// current high key (kept by the right half; 0 if rightmost).
///
/// Balances the two halves' bytes, except when the new item is the last of the rightmost
/// page (`append`), where the left page is left [`FILL_FACTOR`] full. Returns `None` if no split
/// point makes both halves fit (cannot happen with items of at most
/// [`page::MAX_ITEM_SIZE`]).
pub fn choose_split(
    lens: &[usize],
    pivot_len: impl Fn(usize) -> usize,
    right_high_len: usize,
    append: bool,
) -> Option<usize> {
    let n = lens.len();
    if n < 2 {
        return None;
    }
    let total: usize = lens.iter().map(|&l| crate::tuple::maxalign(l) + 4).sum();
    let mut best: Option<(usize, f64)> = None;
    let mut left_items = 0usize;
    for k in 1..n {
        left_items += crate::tuple::maxalign(lens[k - 1]) + 4;
        let left = page::needed(pivot_len(k), std::iter::empty()) + left_items;
        let right = page::needed(right_high_len, std::iter::empty()) + (total - left_items);
        if left > BODY_SIZE || right > BODY_SIZE {
            continue;
        }
        let score = if append {
            (left as f64 - FILL_FACTOR * BODY_SIZE as f64).abs()
        } else {
            (left as f64 - right as f64).abs()
        };
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((k, score));
        }
    }
    best.map(|(k, _)| k)
}

/// Groups items (in order, with their lengths) into pages for a bottom-up build: each page
/// takes items while it stays under `fill` of the body (and always at least one), given the
/// high key each page would get (`pivot_len(first item of the next page)`).
pub fn pack(
    lens: &[usize],
    pivot_len: impl Fn(usize) -> usize,
    fill: f64,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let limit = (fill * BODY_SIZE as f64) as usize;
    let mut start = 0;
    while start < lens.len() {
        let mut end = start;
        let mut used = 0usize;
        while end < lens.len() {
            let add = crate::tuple::maxalign(lens[end]) + 4;
            let high = if end + 1 < lens.len() {
                pivot_len(end + 1)
            } else {
                0
            };
            if end > start && page::needed(high, std::iter::empty()) + used + add > limit {
                break;
            }
            used += add;
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_split() {
        let lens = vec![16; 400];
        let k = choose_split(&lens, |_| 16, 16, false).unwrap();
        assert!((199..=201).contains(&k), "{k}");
        let k = choose_split(&lens, |_| 16, 0, true).unwrap();
        assert!(k > 340, "{k}");
    }

    #[test]
    fn big_items_split() {
        let lens = vec![2600, 2600, 2600];
        let k = choose_split(&lens, |_| 2600, 2600, false).unwrap();
        assert!(k == 1 || k == 2);
    }

    #[test]
    fn packing() {
        let lens = vec![16; 1000];
        let pages = pack(&lens, |_| 16, FILL_FACTOR);
        assert_eq!(pages.iter().map(|r| r.len()).sum::<usize>(), 1000);
        assert!(pages.len() == 3, "{pages:?}");
        assert_eq!(pages[0].start, 0);
        for w in pages.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }
}
