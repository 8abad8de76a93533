//! Random bytes for values that are public once used — trace and span ids, AES-GCM nonces —
//! drawn from the kernel's generator a block at a time per thread, so minting one costs a
//! copy instead of a system call (two `getrandom` calls per ingest request showed in its
//! profile).
//!
//! Every byte handed out comes from the kernel and is handed out once: the block is
//! consumed front to back and refilled only when what is left is too short. Secrets (key
//! material) do not come from here; they are drawn directly, so they never sit in a buffer.
//! A forked child would share its parent's unused bytes; the platform's processes only fork
//! to `exec` at once, which never reaches this code.

use std::cell::RefCell;

/// Bytes drawn from the kernel at a time.
const BLOCK: usize = 4096;

/// Requests larger than this go to the kernel directly (a batch's nonces, say): they are
/// one system call for many values already.
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
    POOL.with_borrow_mut(|pool| {
        if BLOCK - pool.used < out.len() {
            getrandom::fill(pool.bytes.as_mut_slice())?;
            pool.used = 0;
        }
        let taken = &mut pool.bytes[pool.used..pool.used + out.len()];
        out.copy_from_slice(taken);
        // Nothing handed out stays behind to be read again.
        taken.fill(0);
        pool.used += out.len();
        Ok(())
    })
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
            let mut nonce = [0u8; 12];
            fill(&mut nonce).unwrap();
            assert!(seen.insert(nonce), "value {i} repeated");
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
