//! Unauthenticated probes: `/healthz` (the process runs), `/readyz` (it can
//! serve: store open and answering, embedder working, disk not full) and
//! `/metrics`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use kbeast_client::{
    DiskHealth, EmbedderHealth, HealthStatus, ReadyComponents, ReadyResponse, StoreHealth,
    WarmupHealth,
};

use super::AppState;

/// Below this much free space writes are likely to fail: unhealthy.
const DISK_UNHEALTHY_BYTES: u64 = 64 << 20;
/// Below this much free space: degraded, still ready.
const DISK_DEGRADED_BYTES: u64 = 1 << 30;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let store = match state.store.get() {
        Some(store) => {
            let started = Instant::now();
            match store.ping().await {
                Ok(_) => StoreHealth {
                    status: HealthStatus::Healthy,
                    latency_ms: Some(started.elapsed().as_millis() as u64),
                },
                Err(error) => {
                    tracing::warn!(error = %error, "store health check failed");
                    StoreHealth {
                        status: HealthStatus::Unhealthy,
                        latency_ms: None,
                    }
                }
            }
        }
        None => StoreHealth {
            status: HealthStatus::Unhealthy,
            latency_ms: None,
        },
    };
    let embedder = EmbedderHealth {
        // Searches fall back to keyword while the embedder is down: degraded, not unhealthy.
        status: if !state.embedder.is_available() || state.metrics.degraded.get() > 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        },
        model: state.embedder.model_id().to_string(),
    };
    let disk = match &state.data_dir {
        Some(dir) => {
            let available = available_bytes(dir);
            DiskHealth {
                status: match available {
                    Some(bytes) if bytes < DISK_UNHEALTHY_BYTES => HealthStatus::Unhealthy,
                    Some(bytes) if bytes < DISK_DEGRADED_BYTES => HealthStatus::Degraded,
                    Some(_) => HealthStatus::Healthy,
                    None => HealthStatus::Degraded,
                },
                available_bytes: available,
            }
        }
        // Object storage: no local disk holds the data.
        None => DiskHealth {
            status: HealthStatus::Healthy,
            available_bytes: None,
        },
    };
    let warmup = {
        let w = &state.warmup;
        let (table_open, indices_loaded, query_path) = (
            w.table_open.load(Ordering::SeqCst),
            w.indices_loaded.load(Ordering::SeqCst),
            w.query_path.load(Ordering::SeqCst),
        );
        WarmupHealth {
            // Not warm yet (or draining after SIGTERM): not ready, so no traffic is routed here.
            status: if table_open
                && indices_loaded
                && query_path
                && !state.draining.load(Ordering::SeqCst)
            {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            },
            table_open,
            indices_loaded,
            query_path,
        }
    };
    let status = [store.status, embedder.status, disk.status, warmup.status]
        .into_iter()
        .max_by_key(|s| match s {
            HealthStatus::Healthy => 0,
            HealthStatus::Degraded => 1,
            HealthStatus::Unhealthy => 2,
        })
        .unwrap_or(HealthStatus::Healthy);
    let code = if status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = ReadyResponse {
        status,
        components: ReadyComponents {
            store,
            embedder,
            disk,
            warmup,
        },
    };
    (code, Json(body))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Free bytes available to this process on the filesystem holding `path`.
#[allow(unsafe_code)] // statvfs(3) has no safe wrapper in std.
fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
