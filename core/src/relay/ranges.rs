//! A short list of byte ranges of one buffer, written out in one gathered write: the payloads of
//! frames from several TLS records (each opened where it was read), or several sealed records.
//! Positions are `u32` (buffers are far smaller): a session holds three of these, idle or not.

use std::io::IoSlice;

/// Most ranges in one gathered write (within every OS's `IOV_MAX`).
pub const MAX_RANGES: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
pub struct Ranges {
    r: [(u32, u32); MAX_RANGES],
    len: u8,
    /// The first range not fully written.
    head: u8,
}

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.head == self.len
    }

    pub fn is_full(&self) -> bool {
        usize::from(self.len) == MAX_RANGES
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }

    /// Appends `start..end` (non-empty), joined to the last range when they touch.
    pub fn push(&mut self, start: usize, end: usize) {
        debug_assert!(start < end);
        let (start, end) = (start as u32, end as u32);
        match self.len.checked_sub(1).map(|i| &mut self.r[usize::from(i)]) {
            Some(last) if last.1 == start && self.head < self.len => last.1 = end,
            _ => {
                self.r[usize::from(self.len)] = (start, end);
                self.len += 1;
            }
        }
    }

    /// Extends the last range by `n` bytes (bytes were moved right behind it).
    pub fn grow_last(&mut self, n: usize) {
        if let Some(i) = self.len.checked_sub(1) {
            self.r[usize::from(i)].1 += n as u32;
        }
    }

    pub fn first(&self) -> Option<(usize, usize)> {
        if self.is_empty() {
            return None;
        }
        let (s, e) = self.r[usize::from(self.head)];
        Some((s as usize, e as usize))
    }

    pub fn last_end(&self) -> Option<usize> {
        (!self.is_empty()).then(|| self.r[usize::from(self.len) - 1].1 as usize)
    }

    /// Every byte not yet written.
    pub fn total(&self) -> usize {
        self.live().iter().map(|(s, e)| (e - s) as usize).sum()
    }

    /// `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.is_empty() {
            let (s, e) = &mut self.r[usize::from(self.head)];
            let take = n.min((*e - *s) as usize);
            *s += take as u32;
            n -= take;
            if s == e {
                self.head += 1;
            }
        }
        if self.is_empty() {
            self.clear();
        }
    }

    fn live(&self) -> &[(u32, u32)] {
        &self.r[usize::from(self.head)..usize::from(self.len)]
    }

    /// The ranges as slices of `buf`, for one gathered write; returns how many.
    pub fn slices<'a>(&self, buf: &'a [u8], out: &mut [IoSlice<'a>; MAX_RANGES]) -> usize {
        let mut n = 0;
        for &(s, e) in self.live() {
            out[n] = IoSlice::new(&buf[s as usize..e as usize]);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_advance_and_slice() {
        let buf: Vec<u8> = (0..100).collect();
        let mut r = Ranges::default();
        assert!(r.is_empty() && r.first().is_none());
        r.push(0, 10);
        r.push(10, 20);
        r.push(30, 40);
        assert_eq!((r.first(), r.total(), r.last_end()), (Some((0, 20)), 30, Some(40)));
        let mut out = [IoSlice::new(&[]); MAX_RANGES];
        let n = r.slices(&buf, &mut out);
        assert_eq!(n, 2);
        assert_eq!((&*out[0], &*out[1]), (&buf[0..20], &buf[30..40]));
        r.advance(25);
        assert_eq!((r.first(), r.total()), (Some((35, 40)), 5));
        r.advance(5);
        assert!(r.is_empty() && r.first().is_none());
        for i in 0..MAX_RANGES {
            r.push(i * 10, i * 10 + 5);
        }
        assert!(r.is_full());
        r.grow_last(3);
        assert_eq!(r.last_end(), Some((MAX_RANGES - 1) * 10 + 8));
        assert!(std::mem::size_of::<Ranges>() <= 72);
    }
}
