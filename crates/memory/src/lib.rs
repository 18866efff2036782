//! Keeping a process's memory near what it uses. glibc's malloc gives each busy
//! thread an arena (up to eight per core) and keeps memory freed after bulk work
//! in them, so without this RSS stays near its peak: the query server stayed at
//! 700 MiB after loading 100k chunks with about 300 MiB in use, and even with
//! trimming, the default arenas left 530 MiB. The operator and the query server
//! both use it.

use std::ffi::OsStr;
use std::time::Duration;

/// Arenas when glibc's own `MALLOC_ARENA_MAX` is not set.
pub const DEFAULT_ARENAS: i32 = 2;

/// How often `spawn_release_loop` gives free memory back.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// The arena cap to set, given the value of `MALLOC_ARENA_MAX`: none when the
/// variable is set, since glibc then applies it itself.
pub fn arena_cap(malloc_arena_max: Option<&OsStr>) -> Option<i32> {
    match malloc_arena_max {
        Some(_) => None,
        None => Some(DEFAULT_ARENAS),
    }
}

/// Caps malloc's arenas (see `arena_cap`). Call first thing in `main`, before
/// other threads start.
#[allow(unsafe_code)] // mallopt(3) has no safe wrapper.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(cap) = arena_cap(std::env::var_os("MALLOC_ARENA_MAX").as_deref()) {
        // SAFETY: mallopt only changes allocator settings; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cap);
        }
    }
}

/// Returns free memory at the top of malloc's heaps and in its arenas to the
/// system. Takes a few milliseconds; call after bulk work, not per request.
#[allow(unsafe_code)] // malloc_trim(3) has no safe wrapper.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases unused memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives free memory back every `RELEASE_INTERVAL`, so that memory freed after
/// a burst of work does not stay with the process. Needs a Tokio runtime.
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
    fn the_cap_applies_unless_glibc_is_told_its_own() {
        assert_eq!(arena_cap(None), Some(DEFAULT_ARENAS));
        assert_eq!(arena_cap(Some(OsStr::new("8"))), None);
        assert_eq!(arena_cap(Some(OsStr::new(""))), None);
    }
}
