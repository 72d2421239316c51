//! Giving freed heap back to the system once the proxy has gone quiet.
//!
//! glibc's allocator keeps memory freed by a finished burst of connections
//! (their buffers, the upstream exchanges) for reuse, and the RSS stays at
//! the burst's peak until the next burst, though little of it is live:
//! measured, 28 MiB after 256 connections at 2 threads, of which about
//! 7 MiB is live (BENCHMARKS.md). The same goes for the parse of a large
//! `routes.json` at start. `malloc_trim` hands such free pages back; it
//! walks the allocator's arenas, so it runs only when the proxy has just
//! become quieter, never on the request path.

/// Hands the allocator's free pages back to the system (glibc only: other
/// allocators return memory on their own terms).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes a size and only releases free memory the
    // allocator owns; it is thread-safe (it locks each arena it trims).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Watches the count of open connections, sampled now and then, and says
/// when to give memory back: once when serving starts (after the start-up
/// work), and when the count has fallen below half of the highest count
/// seen since the last time, if that high was a burst worth trimming after.
#[derive(Debug, Default)]
pub struct QuietWatch {
    peak: usize,
    started: bool,
}

/// Below this many connections at its peak a burst leaves too little to
/// be worth a walk of the arenas.
const BURST: usize = 16;

impl QuietWatch {
    /// Takes one sample; `true` when memory should be given back now.
    pub fn sample(&mut self, open: usize) -> bool {
        if !self.started {
            self.started = true;
            return true;
        }
        self.peak = self.peak.max(open);
        if self.peak >= BURST && open <= self.peak / 2 {
            self.peak = open;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_that_ends_gives_back_once() {
        let mut w = QuietWatch::default();
        assert!(w.sample(0), "after the start-up");
        assert!(!w.sample(0));
        assert!(!w.sample(200), "busy: nothing to give back");
        assert!(!w.sample(180), "still busy");
        assert!(w.sample(3), "the burst ended");
        assert!(!w.sample(0), "once per burst");
        assert!(!w.sample(0));
    }

    #[test]
    fn small_ups_and_downs_give_nothing_back() {
        let mut w = QuietWatch::default();
        w.sample(0);
        for open in [4, 10, 2, 12, 0, 8, 1] {
            assert!(!w.sample(open));
        }
    }

    #[test]
    fn trimming_is_harmless() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 1000 + i]).collect();
        drop(v);
        give_back();
        give_back();
    }
}
