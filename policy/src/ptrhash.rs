//! Hash sets and maps keyed by node addresses (`usize`), with a multiplicative hash
//! instead of SipHash: the walker records every query, FROM item and name of a
//! statement by address, and SipHash dominated those lookups (the proxy keys its
//! per-session audit members by report address the same way). Addresses are not chosen
//! by clients, so hash flooding resistance buys nothing here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one `usize` by a multiplication with an odd constant (Fx hash).
#[derive(Debug, Default, Clone, Copy)]
pub struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type Build = BuildHasherDefault<PtrHasher>;

/// A set of node addresses.
pub type PtrSet = HashSet<usize, Build>;

/// A map from node addresses.
pub type PtrMap<V> = HashMap<usize, V, Build>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_was_inserted() {
        let mut s = PtrSet::default();
        let xs: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
        for x in &xs {
            s.insert(&**x as *const u64 as usize);
        }
        assert_eq!(s.len(), 1000);
        assert!(xs
            .iter()
            .all(|x| s.contains(&(&**x as *const u64 as usize))));
        assert!(!s.contains(&1));
    }
}
