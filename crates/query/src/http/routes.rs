//! Handlers of the `/v1` routes. Each one checks the caller's scope, validates
//! what serde cannot, and delegates to `ingest`, `search` or the store.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use kbeast_client::{
    CacheConfig, DeleteByFilterRequest, DeleteResponse, DocumentResponse, EraseRequest,
    EraseResponse, Filter, IngestRequest, IngestResponse, IngestedDocument, MAX_TOP_K, Scope,
    SearchRequest, SearchResponse, StatsResponse,
};

use super::AppState;
use super::auth::{Authorized, Principal, scope};
use super::error::{ApiError, JsonBody};
use crate::ingest;

pub async fn ingest(
    State(state): State<Arc<AppState>>,
    Authorized(principal, _): Authorized<scope::Write>,
    JsonBody(request): JsonBody<IngestRequest>,
) -> Result<Json<IngestResponse>, ApiError> {
    let writer = state.writer()?;
    let documents = ingest::prepare(
        request.documents,
        &state.chunking,
        &state.ingest_limits,
        &state.embedder,
        &state.metrics,
    )
    .await?;
    let outcome = writer.upsert(documents).await.inspect_err(|error| {
        tracing::warn!(target: "audit", key_id = %principal.key_id, action = "ingest", outcome = "rejected", error = %error);
    })?;
    let chunks: u32 = outcome.documents.iter().map(|(_, c)| c).sum();
    tracing::info!(
        target: "audit",
        key_id = %principal.key_id,
        action = "ingest",
        outcome = "ok",
        documents = outcome.documents.len(),
        chunks,
        version = outcome.version,
    );
    Ok(Json(IngestResponse {
        documents: outcome
            .documents
            .into_iter()
            .map(|(id, chunks)| IngestedDocument { id, chunks })
            .collect(),
        version: outcome.version,
    }))
}

pub async fn get_document(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DocumentResponse>, ApiError> {
    principal.require(Scope::Read)?;
    let store = state.store()?;
    match store.document(&id).await.map_err(ApiError::internal)? {
        Some(document) => Ok(Json(document)),
        None => Err(ApiError::not_found(format!("no document with id {id:?}"))),
    }
}

pub async fn delete_document(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    principal.require(Scope::Write)?;
    let filter = Filter {
        ids: Some(vec![id.clone()]),
        ..Filter::default()
    };
    let response = delete(&state, &principal, filter, "delete").await?;
    if response.deleted_documents == 0 {
        return Err(ApiError::not_found(format!("no document with id {id:?}")));
    }
    Ok(Json(response))
}

pub async fn delete_by_filter(
    State(state): State<Arc<AppState>>,
    Authorized(principal, _): Authorized<scope::Write>,
    JsonBody(filter): JsonBody<DeleteByFilterRequest>,
) -> Result<Json<DeleteResponse>, ApiError> {
    if filter.is_empty() {
        return Err(ApiError::invalid(
            "ids",
            "give at least one of ids, source or metadata (deleting everything needs `purge`)",
        ));
    }
    check_filter(&filter, "")?;
    Ok(Json(
        delete(&state, &principal, filter, "delete_by_filter").await?,
    ))
}

/// Right-to-be-forgotten: delete, then remove the rows from storage for good.
pub async fn erase(
    State(state): State<Arc<AppState>>,
    Authorized(principal, _): Authorized<scope::Admin>,
    JsonBody(filter): JsonBody<EraseRequest>,
) -> Result<Json<EraseResponse>, ApiError> {
    if filter.is_empty() {
        return Err(ApiError::invalid(
            "ids",
            "give at least one of ids, source or metadata (erasing everything needs `purge`)",
        ));
    }
    check_filter(&filter, "")?;
    let outcome = state.writer()?.erase(filter).await?;
    tracing::info!(
        target: "audit",
        key_id = %principal.key_id,
        action = "erase",
        documents = outcome.deleted.documents,
        chunks = outcome.deleted.chunks,
        versions_removed = outcome.erased.versions_removed,
        bytes_removed = outcome.erased.bytes_removed,
    );
    Ok(Json(EraseResponse {
        erased_documents: outcome.deleted.documents,
        erased_chunks: outcome.deleted.chunks,
        fragments_rewritten: outcome.erased.fragments_rewritten,
        versions_removed: outcome.erased.versions_removed,
        bytes_removed: outcome.erased.bytes_removed,
    }))
}

async fn delete(
    state: &AppState,
    principal: &Principal,
    filter: Filter,
    action: &'static str,
) -> Result<DeleteResponse, ApiError> {
    let outcome = state.writer()?.delete(filter).await?;
    tracing::info!(
        target: "audit",
        key_id = %principal.key_id,
        action,
        documents = outcome.documents,
        chunks = outcome.chunks,
    );
    Ok(DeleteResponse {
        deleted_documents: outcome.documents,
        deleted_chunks: outcome.chunks,
    })
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    _: Authorized<scope::Read>,
    JsonBody(mut request): JsonBody<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let resolved_mode = *request.mode.get_or_insert(state.default_mode);
    if !(1..=MAX_TOP_K).contains(&request.top_k) {
        return Err(ApiError::invalid(
            "top_k",
            format!(
                "top_k must be between 1 and {MAX_TOP_K}, got {}",
                request.top_k
            ),
        ));
    }
    if request.query.trim().is_empty() {
        return Err(ApiError::invalid("query", "query must not be blank"));
    }
    if let Some(filter) = &request.filter {
        check_filter(filter, "filter.")?;
    }
    let searcher = state.searcher()?;
    let mode = resolved_mode.as_str();
    let started = Instant::now();
    let result = searcher
        .search(state.embedder.as_ref(), &state.metrics, &request)
        .await;
    let elapsed = started.elapsed();
    state
        .metrics
        .query_duration
        .with_label_values(&[mode])
        .observe(elapsed.as_secs_f64());
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            state
                .metrics
                .queries
                .with_label_values(&[mode, "error"])
                .inc();
            return Err(ApiError::internal(error));
        }
    };
    let label = if outcome.degraded { "degraded" } else { "ok" };
    state
        .metrics
        .queries
        .with_label_values(&[mode, label])
        .inc();
    Ok(Json(SearchResponse {
        hits: outcome.hits,
        mode: resolved_mode,
        degraded: outcome.degraded,
        took_ms: elapsed.as_millis() as u64,
    }))
}

pub async fn stats(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<StatsResponse>, ApiError> {
    principal.require(Scope::Read)?;
    let store = state.store()?;
    let (documents, chunks, bytes) = {
        let index = store.docs();
        (index.documents(), index.chunks(), index.bytes())
    };
    Ok(Json(StatsResponse {
        documents,
        chunks,
        bytes,
        storage_bytes: store.storage_bytes().await.map_err(ApiError::internal)?,
        table_version: store.version().await.map_err(ApiError::internal)?,
        model: store.model().to_string(),
        dimension: store.dimension() as u32,
        indices: store.index_states().await.map_err(ApiError::internal)?,
        cache: store.cache_sizes().map(|c| CacheConfig {
            index_cache_bytes: c.index_bytes,
            metadata_cache_bytes: c.metadata_bytes,
        }),
    }))
}

/// Refuses a filter condition that selects by nothing, naming it (`prefix` + `metadata`).
fn check_filter(filter: &Filter, prefix: &str) -> Result<(), ApiError> {
    filter
        .check()
        .map_err(|(field, message)| ApiError::invalid(format!("{prefix}{field}"), message))
}
