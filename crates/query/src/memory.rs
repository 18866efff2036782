//! Keeping the process's memory near what it uses: glibc's malloc keeps memory
//! freed after bulk work (ingest, index builds, index loads) in its arenas, so
//! without this a pod's RSS stays near its peak (700 MiB after loading 100k
//! chunks, with about 300 MiB in use), and with its default of eight arenas
//! per core even trimming left 530 MiB.

/// Caps malloc's arenas at two, unless glibc's own `MALLOC_ARENA_MAX` is set
/// (then that applies). Call first thing in `main`, before other threads start.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free memory at the top of malloc's heaps and in its arenas to the
/// system. Takes a few milliseconds; call after bulk work, not per request.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases unused memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often `spawn_release_loop` gives free memory back.
pub const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives free memory back every `RELEASE_INTERVAL`, so memory freed after a
/// burst of searches does not stay with the process.
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
