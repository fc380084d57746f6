//! Binary search over page items with a caller-supplied comparator (the comparator knows the
//! operator classes; this module only knows that items are sorted).

use std::cmp::Ordering;

/// The first `i` in `0..n` for which `pred(i)` is true, given that `pred` is false up to some
/// point and true from there on (`n` if it is never true).
pub fn partition_point(n: usize, mut pred: impl FnMut(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// First item `>= key`: `cmp(i)` compares item `i` with the key.
pub fn lower_bound(n: usize, mut cmp: impl FnMut(usize) -> Ordering) -> usize {
    partition_point(n, |i| cmp(i) != Ordering::Less)
}

/// First item `> key`.
pub fn upper_bound(n: usize, mut cmp: impl FnMut(usize) -> Ordering) -> usize {
    partition_point(n, |i| cmp(i) == Ordering::Greater)
}

/// Which child of an internal page to descend into: the last downlink whose key is `< key`
/// (`strict`, to find the leftmost page that can hold `key`) or `<= key` (the rightmost).
/// Item 0 (minus infinity) always qualifies; `cmp(i)` compares pivot `i >= 1` with the key.
pub fn choose_child(n: usize, strict: bool, mut cmp: impl FnMut(usize) -> Ordering) -> usize {
    assert!(n >= 1);
    let first_not = if strict {
        1 + lower_bound(n - 1, |i| cmp(i + 1))
    } else {
        1 + upper_bound(n - 1, |i| cmp(i + 1))
    };
    first_not - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let v = [1, 3, 3, 3, 5, 9];
        for k in 0..11 {
            let lb = lower_bound(v.len(), |i| v[i].cmp(&k));
            let ub = upper_bound(v.len(), |i| v[i].cmp(&k));
            assert_eq!(lb, v.iter().position(|&x| x >= k).unwrap_or(v.len()));
            assert_eq!(ub, v.iter().position(|&x| x > k).unwrap_or(v.len()));
        }
    }

    #[test]
    fn children() {
        // pivots: -inf, 10, 20, 20, 30
        let piv = [i32::MIN, 10, 20, 20, 30];
        let c = |k: i32, strict| choose_child(piv.len(), strict, |i| piv[i].cmp(&k));
        assert_eq!(c(5, true), 0);
        assert_eq!(c(10, true), 0);
        assert_eq!(c(10, false), 1);
        assert_eq!(c(20, true), 1);
        assert_eq!(c(20, false), 3);
        assert_eq!(c(25, true), 3);
        assert_eq!(c(99, true), 4);
    }
}
