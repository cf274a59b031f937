//! One seeded generator for the tests and the benchmarks (`benches/common` includes
//! this file by path).

/// A xorshift generator: seeded inputs (damage, fuzz-like mutations, synthetic mail)
/// are the same on every run, so a failure names a case that can be replayed and a
/// benchmark measures the same mail each time.
pub struct Seeded(pub u64);

impl Seeded {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..hi`.
    pub fn within(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    /// A byte to xor with: never 0, so the byte always changes.
    pub fn flip(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }
}
