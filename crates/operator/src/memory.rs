//! Keeping the operator's memory near what it uses. glibc's malloc gives each busy thread an
//! arena (up to eight per core) and keeps what the reconciles free in them, so a burst of
//! reconciles leaves RSS near its peak. The query server does the same (crates/query).

/// Caps malloc's arenas at two. Call first thing in `main`, before other threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free memory at the top of malloc's heaps and in its arenas to the system.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases unused memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often `spawn_release_loop` gives free memory back.
pub const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives free memory back every `RELEASE_INTERVAL`, so that what a burst of reconciles freed
/// does not stay with the process.
pub fn spawn_release_loop() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(RELEASE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(release_free).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_after_a_burst_of_frees_is_safe_and_repeatable() {
        let burst: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 4096]).collect();
        drop(burst);
        release_free();
        release_free();
    }
}
