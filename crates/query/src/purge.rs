//! `kbeast-query purge`: deletes a knowledge base's data.

use anyhow::Context;

use crate::cli::PurgeArgs;
use crate::store::TABLE_NAME;

pub async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let connection = lancedb::connect(&args.data)
        .execute()
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
    // A generated keys file belongs to the knowledge base too.
    let keys = std::path::Path::new(&args.data).join("api-keys.yaml");
    if keys.exists() {
        std::fs::remove_file(&keys).with_context(|| format!("removing {}", keys.display()))?;
        tracing::info!(path = %keys.display(), "removed the generated API keys file");
    }
    Ok(())
}
