//! `snapshot` and `restore`: logical copies of the chunks table.
//!
//! A snapshot reads one table version (a consistent point in time, so it may
//! run while the server serves) and writes it as a fresh table, schema
//! metadata (model, dimension) and full-text index included. Restore is the
//! same copy in the other direction: it replaces an existing table's rows in
//! one commit (a failed restore leaves them as they were), and refuses while a
//! server holds the data directory's serve lock.

use anyhow::{Context, bail};
use lancedb::query::ExecutableQuery;

use crate::cli::{RestoreArgs, SnapshotArgs, StorageArgs};
use crate::serve_lock::ServeLock;
use crate::store::{ConnectOptions, TABLE_NAME, connect, create_table, overwrite_table};

/// Both ends may be object storage (the same endpoint and credentials) or local.
fn options(storage: &StorageArgs) -> ConnectOptions {
    ConnectOptions {
        storage_options: storage.storage_options(),
        ..ConnectOptions::default()
    }
}

pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let options = options(&args.storage);
    let (rows, version) = copy_table(&args.data, &args.out, false, &options).await?;
    tracing::info!(from = %args.data, to = %args.out, rows, version, "snapshot written");
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let options = options(&args.storage);
    // Held until the restore ends, so no server starts on the data meanwhile.
    let _no_server = ServeLock::exclusive(&args.data)?;
    let (rows, version) = copy_table(&args.from, &args.data, args.force, &options).await?;
    tracing::info!(from = %args.from, to = %args.data, rows, snapshot_version = version, "restored");
    Ok(())
}

/// Copies the current version of the chunks table at `from` to `to`.
/// Returns the number of rows and the source version copied.
async fn copy_table(
    from: &str,
    to: &str,
    replace: bool,
    options: &ConnectOptions,
) -> anyhow::Result<(usize, u64)> {
    let source = connect(from, options)
        .await
        .with_context(|| format!("connecting to {from}"))?;
    let table = source
        .open_table(TABLE_NAME)
        .execute()
        .await
        .with_context(|| format!("opening the chunks table at {from}"))?;
    // Pin one version so rows, schema and count agree even while writes go on.
    let version = table.version().await?;
    table.checkout(version).await?;
    let schema = table.schema().await?;
    let rows = table.count_rows(None).await?;

    let target = connect(to, options)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    if target
        .table_names()
        .execute()
        .await?
        .iter()
        .any(|t| t == TABLE_NAME)
    {
        if !replace {
            bail!("{to} already holds a chunks table; pass --force to replace it");
        }
        let existing = target.open_table(TABLE_NAME).execute().await?;
        let stream = table.query().execute().await?;
        overwrite_table(&existing, stream)
            .await
            .with_context(|| format!("replacing the rows of the chunks table at {to}"))?;
        let copied = existing.count_rows(None).await?;
        if copied != rows {
            bail!("copied {copied} rows but the source version {version} has {rows}");
        }
        return Ok((rows, version));
    }
    let stream = table.query().execute().await?;
    let copy = create_table(&target, schema, Some(stream))
        .await
        .with_context(|| format!("writing the chunks table at {to}"))?;
    let copied = copy.count_rows(None).await?;
    if copied != rows {
        bail!("copied {copied} rows but the source version {version} has {rows}");
    }
    Ok((rows, version))
}
