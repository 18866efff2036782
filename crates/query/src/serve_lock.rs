//! A lock file in a local data directory: every `serve` process holds it
//! shared (several servers may share one table), `restore` needs it exclusive,
//! so a restore never runs under a live server. The OS releases it when the
//! process exits, even on SIGKILL. Object storage has no such file; there the
//! operator must stop the servers first (see docs/query-api.md).

use std::fs::{File, TryLockError};
use std::path::Path;

use anyhow::{Context, bail};

use crate::store::is_object_store;

pub const LOCK_FILE: &str = ".kbeast-serve.lock";

/// Held for as long as the value lives; None on object storage.
pub struct ServeLock(#[allow(dead_code)] Option<File>);

impl ServeLock {
    /// For `serve`: shared with other servers.
    pub fn shared(data: &str) -> anyhow::Result<Self> {
        let Some(file) = open(data)? else {
            return Ok(Self(None));
        };
        file.lock_shared()
            .with_context(|| format!("locking {data}/{LOCK_FILE}"))?;
        Ok(Self(Some(file)))
    }

    /// For `restore`: fails at once while any server holds the lock.
    pub fn exclusive(data: &str) -> anyhow::Result<Self> {
        let Some(file) = open(data)? else {
            return Ok(Self(None));
        };
        match file.try_lock() {
            Ok(()) => Ok(Self(Some(file))),
            Err(TryLockError::WouldBlock) => bail!(
                "a kbeast-query server is running on {data} (it holds {LOCK_FILE}); stop it before restoring"
            ),
            Err(TryLockError::Error(error)) => {
                Err(error).with_context(|| format!("locking {data}/{LOCK_FILE}"))
            }
        }
    }
}

fn open(data: &str) -> anyhow::Result<Option<File>> {
    if is_object_store(data) {
        return Ok(None);
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {data}"))?;
    let path = Path::new(data).join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(file))
}
