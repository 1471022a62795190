//! One seed drives every random choice of a run, including the ones made inside libraries.
//!
//! Our own code draws from generators seeded by [`crate::rng::stream`]. Three sources are not
//! ours: std's `RandomState` (the iteration order of every `HashMap` and `HashSet`, which
//! async-raft's vote fan-out and chitchat's peer choice follow), chitchat's `rand::rng()`, and
//! async-raft's election timeouts. The first two read the C library's `getrandom`; a binary that
//! runs simulations defines that symbol itself with [`deterministic_getrandom!`], and it then
//! answers from a generator seeded per thread by [`on_fresh_thread`]. std seeds its hash keys
//! once per thread, so each seed runs on a thread of its own. async-raft reads the raw syscall
//! (getrandom 0.1), which no symbol can catch: the harness gives every node a seeded election
//! timeout with `max = min + 1`, so its draw has one possible outcome.
//!
//! Threads that never set a seed (the test harness, fjall's workers) get real randomness.

use std::cell::Cell;

thread_local! {
    /// The state of this thread's deterministic generator; `None`: real randomness.
    static STREAM: Cell<Option<u64>> = const { Cell::new(None) };
    /// Set when the override answered on this thread.
    static ANSWERED: Cell<bool> = const { Cell::new(false) };
}

/// Defines the C symbol `getrandom` in the binary that invokes it (the simulation tool and
/// every test binary that runs simulations), so that std's hash keys and chitchat's generator
/// follow the run's seed. Invoke it once, at the crate root.
#[macro_export]
macro_rules! deterministic_getrandom {
    () => {
        /// The C library's `getrandom(2)` wrapper, answered from the simulation's seeded
        /// generator on simulation threads (see `gregor_simulation::determinism`).
        ///
        /// # Safety
        /// `buf` must be valid for writes of `len` bytes, as for the C function.
        #[no_mangle]
        pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize {
            // SAFETY: the caller's contract is the C function's, which `fill` requires.
            unsafe { $crate::determinism::fill(buf, len, flags) }
        }
    };
}

/// The body of the `getrandom` override.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn fill(buf: *mut u8, len: usize, flags: u32) -> isize {
    // getrandom 0.1 probes with (NULL, 0).
    if len == 0 || buf.is_null() {
        return 0;
    }
    let Some(mut state) = STREAM.try_with(Cell::get).ok().flatten() else {
        // SAFETY: forwarded unchanged to the kernel, which checks `buf` itself.
        return unsafe { libc::syscall(libc::SYS_getrandom, buf, len, flags) as isize };
    };
    // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    for chunk in out.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    let _ = STREAM.try_with(|s| s.set(Some(state)));
    let _ = ANSWERED.try_with(|a| a.set(true));
    len as isize
}

/// One step of splitmix64: a fast, well-mixed sequence from any start.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs `work` on a new thread whose library randomness follows `seed`, and returns its
/// result.
///
/// # Panics
/// If the binary lacks [`deterministic_getrandom!`] (std's hash keys would then be random and
/// the run would not replay), or if `work` panics (the panic is passed on).
pub fn on_fresh_thread<T: Send + 'static>(
    seed: u64,
    name: String,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let handle = std::thread::Builder::new()
        .name(name)
        // Deep async state machines (actors over Raft over storage) need more than 2 MiB in
        // debug builds.
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let mut mixed = seed ^ 0x6765_7472_616e_646f;
            STREAM.with(|s| s.set(Some(splitmix64(&mut mixed))));
            // std draws this thread's hash keys now, through the override if it is linked.
            let _ = std::collections::hash_map::RandomState::new();
            assert!(
                ANSWERED.with(Cell::get),
                "this binary does not override getrandom, so hash map order would not replay: \
                 add `gregor_simulation::deterministic_getrandom!();` at its crate root"
            );
            work()
        })
        .expect("spawning a simulation thread");
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
