//! BM25 full-text search on the `text` column (the FTS index, plus a flat scan
//! of rows added since the index was last optimised).

use lancedb::index::scalar::FullTextSearchQuery;
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use super::{ScoredRow, SearchError, collect_scored};
use crate::store::{ROW_COLUMNS, Store};

pub async fn search(
    store: &Store,
    text: &str,
    limit: usize,
    filter: Option<&str>,
) -> Result<Vec<ScoredRow>, SearchError> {
    // A query without any word cannot match anything.
    if !text.chars().any(char::is_alphanumeric) {
        return Ok(Vec::new());
    }
    // `text` carries the only full-text index, so no column needs naming.
    let fts = FullTextSearchQuery::new(text.to_string());
    let mut query = store
        .table()
        .query()
        .full_text_search(fts)
        .limit(limit)
        .select(Select::columns(&ROW_COLUMNS));
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    let stream = query.execute().await?;
    collect_scored(stream, "_score", |score| score).await
}
