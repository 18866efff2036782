//! Nearest-neighbour search by cosine distance on the `vector` column, in
//! LanceDB (tables too large for the in-memory index, `exact`). Without a
//! vector index this is an exact (flat) scan.

use lancedb::DistanceType;
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use super::{ScoredRow, SearchError, collect_scored};
use crate::store::{ROW_COLUMNS, Store};

pub async fn search(
    store: &Store,
    vector: Vec<f32>,
    limit: usize,
    filter: Option<&str>,
) -> Result<Vec<ScoredRow>, SearchError> {
    let settings = store.vector_query();
    // An HNSW search fails unless it keeps at least as many candidates as it returns.
    let ef = settings.ef.max(limit * settings.refine_factor as usize);
    let mut query = store
        .table()
        .query()
        .nearest_to(vector)?
        .column("vector")
        .distance_type(DistanceType::Cosine)
        .nprobes(settings.nprobes)?
        .refine_factor(settings.refine_factor)
        .ef(ef)
        .limit(limit)
        .select(Select::columns(&ROW_COLUMNS));
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    let stream = query.execute().await?;
    // Cosine distance is 1 - similarity; report the similarity.
    collect_scored(stream, "_distance", |distance| 1.0 - distance).await
}
