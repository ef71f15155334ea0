//! The one seeded PRNG every simulation uses, and seed plumbing for tests.
//!
//! Everything random in `oxblob-sim` (crash images, corrupted bytes) is drawn from
//! [`SmallRng::seed_from_u64`], so the same seed always gives the same bytes on every machine.
//! Tests print the seed in every failure message; set `OXBLOB_SEED` to replay one.

pub use rand::rngs::SmallRng;
use rand::SeedableRng;

/// A PRNG seeded from `seed`.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// The seed for a test run: `OXBLOB_SEED` (decimal or `0x` hex) if it is set and valid, else
/// `default`. Print it in every failure message.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("OXBLOB_SEED")
        .ok()
        .and_then(|s| parse_seed(&s))
        .unwrap_or(default)
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// SplitMix64: a fast, well-mixed bijection on `u64`, used to derive per-block keys.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = (0..16)
            .map(|_| 0)
            .scan(rng(7), |r, _: u64| Some(r.gen()))
            .collect();
        let b: Vec<u64> = (0..16)
            .map(|_| 0)
            .scan(rng(7), |r, _: u64| Some(r.gen()))
            .collect();
        let c: Vec<u64> = (0..16)
            .map(|_| 0)
            .scan(rng(8), |r, _: u64| Some(r.gen()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("nope"), None);
    }
}
