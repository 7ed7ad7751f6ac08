//! Hashing: ahash by default, one hash per operation, split into independent bit fields.
//!
//! The 64-bit hash is cut so that the shard index, the table's group index and the tag byte
//! come from different bits. If the shard and the bucket shared low bits, every shard would
//! use only a fraction of its buckets.
//!
//! - shard: the top `shard_bits` bits of the hash times an odd constant, so a weak user
//!   hasher (the identity on small integers) still spreads over the shards; for a good hash
//!   this is the top bits of a bijection of it, independent of the table's low bits;
//! - group index: the low bits (masked by the table);
//! - tag: 7 bits from bits 32..39 of the same product, with the high bit set to mark "full"
//!   (so a weak hasher does not give every key one tag, which would make every probe compare
//!   the keys of a whole group).

use std::hash::{BuildHasher, Hash};

/// The default hasher: ahash with random keys, resistant to hash flooding.
pub type DefaultHashBuilder = ahash::RandomState;

/// An ahash builder with fixed seeds, for reproducible layouts (tests, loom models, traces).
pub fn fixed_hasher(seed: u64) -> DefaultHashBuilder {
    ahash::RandomState::with_seeds(
        seed ^ 0x243f_6a88_85a3_08d3,
        seed.rotate_left(17) ^ 0x1319_8a2e_0370_7344,
        seed.rotate_left(31) ^ 0xa409_3822_299f_31d0,
        seed.rotate_left(47) ^ 0x082e_fa98_ec4e_6c89,
    )
}

#[inline]
pub(crate) fn hash_one<Q: Hash + ?Sized, S: BuildHasher>(s: &S, key: &Q) -> u64 {
    s.hash_one(key)
}

/// The shard index for `hash` among `1 << shard_bits` shards.
#[inline]
pub(crate) fn shard_index(hash: u64, shard_bits: u32) -> usize {
    if shard_bits == 0 {
        0
    } else {
        (mixed(hash) >> (64 - shard_bits)) as usize
    }
}

/// The hash times an odd constant (a bijection): its high bits depend on every bit of the
/// hash, so they spread even when a weak hasher leaves the hash's own high bits constant.
#[inline]
fn mixed(hash: u64) -> u64 {
    hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The tag byte stored in the table for `hash`: high bit set (full), 7 mixed bits below.
#[inline]
pub(crate) fn tag(hash: u64) -> u8 {
    0x80 | ((mixed(hash) >> 32) as u8 & 0x7f)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn tags_mark_full_and_one_shard_is_shard_zero() {
        for h in [0, 1, u64::MAX, 0xffff_0000_0000_0000] {
            assert!(tag(h) & 0x80 != 0);
            assert_eq!(shard_index(h, 0), 0);
        }
    }

    #[test]
    fn an_identity_hash_of_small_keys_spreads_over_shards_and_tags() {
        let mut shards = [0usize; 16];
        let mut tags = [0usize; 128];
        for k in 0..1000u64 {
            shards[shard_index(k, 4)] += 1;
            tags[usize::from(tag(k) & 0x7f)] += 1;
        }
        assert!(shards.iter().all(|&n| n >= 1000 / 16 / 2), "{shards:?}");
        assert!(tags.iter().filter(|&&n| n > 0).count() > 100, "{tags:?}");
    }

    #[test]
    fn fixed_seeds_are_reproducible() {
        let a = fixed_hasher(7);
        let b = fixed_hasher(7);
        assert_eq!(hash_one(&a, &42u64), hash_one(&b, &42u64));
    }
}
