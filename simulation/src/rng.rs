//! Seeded random streams. Each component draws from its own stream, derived from the run seed
//! and a salt naming the component, so adding draws to one does not shift the others (Iggy's
//! simulator salts its streams the same way).

use crate::determinism::splitmix64;
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// The generator of component `salt` in the run of `seed`.
pub fn stream(seed: u64, salt: &str) -> SmallRng {
    SmallRng::seed_from_u64(mix(seed, salt))
}

/// A 64-bit value derived from `seed` and `salt`, well mixed.
pub fn mix(seed: u64, salt: &str) -> u64 {
    // FNV-1a of the salt, then splitmix over both.
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in salt.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut state = seed ^ hash.rotate_left(17);
    splitmix64(&mut state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_depend_on_seed_and_salt_and_replay() {
        let draw = |seed, salt| stream(seed, salt).gen::<u64>();
        assert_eq!(draw(1, "net"), draw(1, "net"));
        assert_ne!(draw(1, "net"), draw(2, "net"));
        assert_ne!(draw(1, "net"), draw(1, "disk"));
    }
}
