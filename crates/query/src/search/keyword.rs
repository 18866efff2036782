//! BM25 full-text search on the `text` column (the FTS index, plus a flat scan
//! of rows added since the index was last optimised).

use lancedb::index::scalar::FullTextSearchQuery;
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use super::{ScoredRow, SearchError, collect_scored};
use crate::store::{ROW_COLUMNS, Store};

const SCORED_COLUMNS: [&str; 7] = [
    ROW_COLUMNS[0],
    ROW_COLUMNS[1],
    ROW_COLUMNS[2],
    ROW_COLUMNS[3],
    ROW_COLUMNS[4],
    ROW_COLUMNS[5],
    "_score",
];

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
        // Naming `_score` explicitly: without it LanceDB logs a deprecation
        // warning on every query, which costs more than the search itself.
        .select(Select::columns(&SCORED_COLUMNS));
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    let stream = query.execute().await?;
    collect_scored(stream, "_score", |score| score).await
}
