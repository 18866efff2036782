//! `kbeast-query purge`: deletes a knowledge base's data.

use anyhow::Context;

use crate::cli::PurgeArgs;
use crate::store::{ConnectOptions, TABLE_NAME, connect, is_object_store};

pub async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let options = ConnectOptions {
        storage_options: args.storage.storage_options(),
        ..ConnectOptions::default()
    };
    let connection = connect(&args.data, &options)
        .await
        .with_context(|| format!("connecting to {}", args.data))?;
    let tables = connection.table_names().execute().await?;
    if tables.iter().any(|t| t == TABLE_NAME) {
        connection
            .drop_table(TABLE_NAME, &[])
            .await
            .with_context(|| format!("dropping table {TABLE_NAME}"))?;
        tracing::info!(data = %args.data, "dropped the chunks table");
    } else {
        tracing::info!(data = %args.data, "no chunks table; nothing to drop");
    }
    if is_object_store(&args.data) {
        // Keys of object-store deployments live in a Secret, never with the data.
        return Ok(());
    }
    // A generated keys file belongs to the knowledge base too.
    let keys = std::path::Path::new(&args.data).join("api-keys.yaml");
    if keys.exists() {
        std::fs::remove_file(&keys).with_context(|| format!("removing {}", keys.display()))?;
        tracing::info!(path = %keys.display(), "removed the generated API keys file");
    }
    Ok(())
}
