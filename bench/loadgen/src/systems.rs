//! The two systems under test, behind one interface: kbeast-query's API and
//! ChromaDB's v2 REST API. Both use the same reqwest client settings.

use anyhow::{Context, bail, ensure};
use kbeast_client::{DocumentInput, IngestRequest, SearchMode, SearchRequest};
use serde_json::{Value, json};

use crate::corpus::Document;

/// One search hit, reduced to what the benchmark checks.
#[derive(Debug, Clone)]
pub struct Hit {
    pub doc_id: String,
    /// Cosine similarity for vector searches.
    pub score: f32,
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()?)
}

pub enum System {
    Kbeast(kbeast_client::Client),
    Chroma {
        http: reqwest::Client,
        collection_url: String,
    },
}

const CHROMA_PREFIX: &str = "/api/v2/tenants/default_tenant/databases/default_database";

impl System {
    pub fn kbeast(http: reqwest::Client, url: &str, api_key: Option<String>) -> Self {
        Self::Kbeast(kbeast_client::Client::with_http_client(http, url, api_key))
    }

    /// Creates (or reuses) the collection `name` with cosine space.
    pub async fn chroma(http: reqwest::Client, url: &str, name: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/');
        let response = http
            .post(format!("{base}{CHROMA_PREFIX}/collections"))
            .json(&json!({
                "name": name,
                "metadata": {"hnsw:space": "cosine"},
                "get_or_create": true,
            }))
            .send()
            .await?;
        let body: Value = checked_json(response)
            .await
            .context("creating the collection")?;
        let id = body["id"]
            .as_str()
            .context("collection response has no id")?
            .to_string();
        Ok(Self::Chroma {
            http,
            collection_url: format!("{base}{CHROMA_PREFIX}/collections/{id}"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            System::Kbeast(_) => "kbeast",
            System::Chroma { .. } => "chroma",
        }
    }

    pub fn modes(&self) -> &'static [SearchMode] {
        match self {
            System::Kbeast(_) => &[SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid],
            // Chroma is compared on what the issue measured it on: vector search.
            System::Chroma { .. } => &[SearchMode::Vector],
        }
    }

    /// Writes one batch and returns once the system acknowledged it.
    /// kbeast embeds the texts itself; Chroma gets the same vectors precomputed.
    pub async fn ingest(&self, docs: &[Document], vectors: &[Vec<f32>]) -> anyhow::Result<()> {
        match self {
            System::Kbeast(client) => {
                let request = IngestRequest {
                    documents: docs
                        .iter()
                        .map(|d| DocumentInput {
                            id: Some(d.id.clone()),
                            text: d.text.clone(),
                            source: Some("bench".into()),
                            metadata: Some(group_metadata(d.group)),
                        })
                        .collect(),
                };
                let response = client.ingest(&request).await?;
                ensure!(
                    response.documents.iter().all(|d| d.chunks == 1),
                    "every benchmark document must be exactly one chunk"
                );
                Ok(())
            }
            System::Chroma {
                http,
                collection_url,
            } => {
                let body = json!({
                    "ids": docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
                    "embeddings": vectors,
                    "documents": docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                    "metadatas": docs.iter().map(|d| group_metadata(d.group)).collect::<Vec<_>>(),
                });
                let response = http
                    .post(format!("{collection_url}/add"))
                    .json(&body)
                    .send()
                    .await?;
                checked_json(response).await.context("chroma add")?;
                Ok(())
            }
        }
    }

    /// One search of `top_k` hits with texts and metadata, as a user would ask.
    pub async fn search(
        &self,
        query: &str,
        vector: &[f32],
        mode: SearchMode,
        top_k: u32,
    ) -> anyhow::Result<Vec<Hit>> {
        match self {
            System::Kbeast(client) => {
                let response = client
                    .search(&SearchRequest::new(query, mode, top_k))
                    .await?;
                ensure!(!response.degraded, "kbeast answered degraded");
                Ok(response
                    .hits
                    .into_iter()
                    .map(|h| Hit {
                        doc_id: h.doc_id,
                        score: h.score,
                    })
                    .collect())
            }
            System::Chroma {
                http,
                collection_url,
            } => {
                if mode != SearchMode::Vector {
                    bail!("chroma is benchmarked on vector search only");
                }
                let response = http
                    .post(format!("{collection_url}/query"))
                    .json(&json!({
                        "query_embeddings": [vector],
                        "n_results": top_k,
                        "include": ["documents", "metadatas", "distances"],
                    }))
                    .send()
                    .await?;
                let body = checked_json(response).await.context("chroma query")?;
                let ids = body["ids"][0].as_array().context("query response ids")?;
                let distances = body["distances"][0]
                    .as_array()
                    .context("query response distances")?;
                Ok(ids
                    .iter()
                    .zip(distances)
                    .map(|(id, d)| Hit {
                        doc_id: id.as_str().unwrap_or_default().to_string(),
                        // Cosine distance is 1 - similarity.
                        score: 1.0 - d.as_f64().unwrap_or(f64::NAN) as f32,
                    })
                    .collect())
            }
        }
    }

    /// kbeast builds its vector index in the background once the table holds
    /// `min_rows` chunks: waits (up to 10 minutes) until a vector index exists,
    /// so searches measure it. Chroma indexes as it ingests.
    pub async fn wait_for_vector_index(&self, rows: u64, min_rows: u64) -> anyhow::Result<()> {
        let System::Kbeast(client) = self else {
            return Ok(());
        };
        if rows < min_rows {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let stats = client.stats().await?;
            if stats.indices.iter().any(|i| i.columns == ["vector"]) {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "no vector index after 10 minutes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Rows the system holds, to check the ingest completed.
    pub async fn count(&self) -> anyhow::Result<u64> {
        match self {
            System::Kbeast(client) => Ok(client.stats().await?.chunks),
            System::Chroma {
                http,
                collection_url,
            } => {
                let response = http.get(format!("{collection_url}/count")).send().await?;
                checked_json(response)
                    .await?
                    .as_u64()
                    .context("count is not a number")
            }
        }
    }
}

fn group_metadata(group: u32) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("group".into(), json!(group));
    map
}

async fn checked_json(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "HTTP {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}
