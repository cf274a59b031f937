//! The UIDs an IMAP folder run still has to fetch, in fixed-size form: the folder's
//! listing itself (UID and announced size, 8 bytes a message), sorted once, with a bit a
//! message for "settled". A folder of 400,000 messages is held in ~3 MiB, where a map
//! of them took ~25 bytes a message beside the listing it was built from.

use crate::source::imap::session::Listed;

#[derive(Debug, Clone, Default)]
pub(super) struct Pending {
    /// Sorted by UID, each UID once.
    list: Vec<Listed>,
    /// Bit `i` set: `list[i]` is settled (fetched, skipped or gone).
    settled: Vec<u64>,
    left: usize,
}

impl Pending {
    /// The listing, which must hold each UID once; it is sorted here.
    pub(super) fn new(mut list: Vec<Listed>) -> Self {
        list.sort_unstable_by_key(|l| l.uid);
        debug_assert!(list.windows(2).all(|w| w[0].uid < w[1].uid));
        let left = list.len();
        Pending {
            settled: vec![0; list.len().div_ceil(64)],
            list,
            left,
        }
    }

    fn index(&self, uid: u32) -> Option<usize> {
        let i = self.list.binary_search_by_key(&uid, |l| l.uid).ok()?;
        (self.settled[i / 64] & (1 << (i % 64)) == 0).then_some(i)
    }

    pub(super) fn contains(&self, uid: u32) -> bool {
        self.index(uid).is_some()
    }

    /// Settles `uid`; its announced size when it was pending.
    pub(super) fn remove(&mut self, uid: u32) -> Option<u64> {
        let i = self.index(uid)?;
        self.settled[i / 64] |= 1 << (i % 64);
        self.left -= 1;
        Some(u64::from(self.list[i].size))
    }

    pub(super) fn len(&self) -> usize {
        self.left
    }

    pub(super) fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The pending UIDs with their announced sizes, by UID.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.list
            .iter()
            .enumerate()
            .filter(|(i, _)| self.settled[i / 64] & (1 << (i % 64)) == 0)
            .map(|(_, l)| (l.uid, u64::from(l.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(uid: u32, size: u32) -> Listed {
        Listed { uid, size }
    }

    #[test]
    fn settles_each_uid_once_and_iterates_the_rest_by_uid() {
        let mut p = Pending::new((1..=130).rev().map(|u| l(u * 2, u)).collect());
        assert_eq!(p.len(), 130);
        assert!(p.contains(2) && p.contains(260) && !p.contains(3) && !p.contains(0));
        assert_eq!(p.remove(128), Some(64));
        assert_eq!(p.remove(128), None);
        assert_eq!(p.remove(3), None);
        assert_eq!(p.len(), 129);
        for u in (1..=130).filter(|u| *u != 64 && *u != 65) {
            p.remove(u * 2);
        }
        assert_eq!(p.iter().collect::<Vec<_>>(), [(130, 65)]);
        assert!(!p.is_empty());
        p.remove(130);
        assert!(p.is_empty() && p.iter().next().is_none());
        assert!(Pending::default().is_empty());
    }
}
