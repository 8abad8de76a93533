//! Random bytes for ids whose repetition is harmless — trace and span ids — drawn from the
//! kernel's generator a block at a time per thread, so minting one costs a copy instead of
//! a system call (a `getrandom` call per request showed in the ingest profile).
//!
//! Every byte handed out comes from the kernel and is handed out once by this process:
//! the block is consumed front to back and refilled only when what is left is too short.
//! A copy of the process (a fork, a VM snapshot restored twice) would hand out the same
//! bytes again, which is why nothing that must never repeat (AES-GCM nonces) or stay secret
//! (key material) comes from here.

use std::cell::RefCell;

/// Bytes drawn from the kernel at a time.
const BLOCK: usize = 4096;

/// Requests larger than this go to the kernel directly: they are one system call for many
/// values already.
const LARGEST_POOLED: usize = BLOCK / 8;

struct Pool {
    bytes: Box<[u8; BLOCK]>,
    /// Bytes from the front already handed out.
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { bytes: Box::new([0; BLOCK]), used: BLOCK });
}

/// Fills `out` with random bytes from the kernel's generator.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > LARGEST_POOLED {
        return getrandom::fill(out);
    }
    let pooled = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if BLOCK - pool.used < out.len() {
            getrandom::fill(pool.bytes.as_mut_slice())?;
            pool.used = 0;
        }
        let used = pool.used;
        let taken = &mut pool.bytes[used..used + out.len()];
        out.copy_from_slice(taken);
        // Nothing handed out stays behind to be read again.
        taken.fill(0);
        pool.used += out.len();
        Ok(())
    });
    // While the thread's locals are torn down (an id minted in another's destructor), the
    // kernel directly.
    pooled.unwrap_or_else(|_| getrandom::fill(out))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn values_are_never_repeated_across_refills() {
        // Several blocks' worth of 12-byte values, with sizes that do not divide the block.
        let mut seen = HashSet::new();
        for i in 0..2_000 {
            let mut id = [0u8; 12];
            fill(&mut id).unwrap();
            assert!(seen.insert(id), "value {i} repeated");
            let mut odd = [0u8; 7];
            fill(&mut odd).unwrap();
            assert_ne!(odd, [0u8; 7]);
        }
    }

    #[test]
    fn large_requests_are_filled_too() {
        let mut big = vec![0u8; LARGEST_POOLED + 1];
        fill(&mut big).unwrap();
        // 513 zero bytes from the kernel would be a broken generator.
        assert!(big.iter().any(|&b| b != 0));
        let mut exact = vec![0u8; LARGEST_POOLED];
        fill(&mut exact).unwrap();
        assert!(exact.iter().any(|&b| b != 0));
    }

    #[test]
    fn threads_draw_distinct_values() {
        let draw = || {
            let mut v = [0u8; 16];
            fill(&mut v).unwrap();
            v
        };
        let other = std::thread::spawn(draw).join().unwrap();
        assert_ne!(draw(), other);
    }
}
