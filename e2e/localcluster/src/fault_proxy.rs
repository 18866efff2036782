//! A fault-injecting proxy in front of a real API server: a client (the operator) talks plain
//! HTTP to the proxy, which forwards each request with the client's own credentials (its bearer
//! token) to the API server over TLS, unless a [`Fault`] matching the request's verb and
//! resource answers instead (500, 429, 409), delays it, or cuts a watch after a while. The API
//! server cannot be told to fail, so this stands in for a flaky network or an overloaded server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use http::StatusCode;

use crate::faults::{Fault, FaultAction, Faults};

struct Upstream {
    base: String,
    client: reqwest::Client,
    faults: Faults,
    /// Requests answered or changed by a fault.
    injected: std::sync::atomic::AtomicU64,
}

/// A running proxy; dropping it stops serving.
pub struct FaultProxy {
    address: SocketAddr,
    upstream: Arc<Upstream>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Serves on a free loopback port, forwarding to `server` (`https://…`) whose certificate
    /// is signed by the PEM CA `ca_pem`.
    pub async fn start(server: &str, ca_pem: &[u8]) -> anyhow::Result<FaultProxy> {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
            .build()?;
        let upstream = Arc::new(Upstream {
            base: server.trim_end_matches('/').to_string(),
            client,
            faults: Faults::default(),
            injected: std::sync::atomic::AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(upstream.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultProxy {
            address,
            upstream,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`, the server clients should use.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn inject_fault(&self, fault: Fault) {
        self.upstream.faults.add(fault);
    }

    pub fn clear_faults(&self) {
        self.upstream.faults.clear();
    }

    /// How many requests a fault has answered, delayed or cut so far.
    pub fn injected(&self) -> u64 {
        self.upstream
            .injected
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The verb and resource (`pods`, `pods/status`) of a request, as the API server's authorizer
/// names them.
pub fn verb_and_resource(method: &http::Method, path: &str, query: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.first() {
        Some(&"api") if parts.len() >= 2 => &parts[2..],
        Some(&"apis") if parts.len() >= 3 => &parts[3..],
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, collection) = match rest {
        [resource] => (resource.to_string(), true),
        [resource, _] => (resource.to_string(), false),
        [resource, _, sub, ..] => (format!("{resource}/{sub}"), false),
        _ => (String::new(), false),
    };
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    let verb = match (method.as_str(), collection) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        (other, _) => other,
    };
    (verb.to_string(), resource)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let (verb, resource) = verb_and_resource(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
    );
    let mut cut_watch_after = None;
    for action in upstream.faults.take(&verb, &resource) {
        upstream
            .injected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match action {
            FaultAction::InternalError => {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "injected fault",
                );
            }
            FaultAction::Conflict => {
                return status(StatusCode::CONFLICT, "Conflict", "injected conflict");
            }
            FaultAction::TooManyRequests {
                retry_after_seconds,
            } => {
                let mut response =
                    status(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "injected");
                response.headers_mut().insert(
                    "retry-after",
                    retry_after_seconds.to_string().parse().expect("number"),
                );
                return response;
            }
            FaultAction::Latency(delay) => tokio::time::sleep(delay).await,
            FaultAction::CloseWatchAfter(after) => cut_watch_after = Some(after),
        }
    }
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body");
    };
    let mut outgoing = upstream
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", upstream.base),
        )
        .body(body);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(error) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                &format!("proxy: {error}"),
            );
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    let stream = answer.bytes_stream();
    let body = match cut_watch_after {
        // The client sees the stream end, as when a load balancer drops a long connection.
        Some(after) => Body::from_stream(stream.take_until(tokio::time::sleep(after))),
        None => Body::from_stream(stream),
    };
    response.body(body).expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_the_authorizer_names_them() {
        let get = http::Method::GET;
        for (method, path, query, want) in [
            (&get, "/api/v1/namespaces/t/pods", "", ("list", "pods")),
            (
                &get,
                "/api/v1/namespaces/t/pods",
                "watch=true",
                ("watch", "pods"),
            ),
            (&get, "/api/v1/pods", "watch=1&x=y", ("watch", "pods")),
            (&get, "/api/v1/namespaces/t/pods/p", "", ("get", "pods")),
            (
                &http::Method::PATCH,
                "/api/v1/namespaces/t/pods/p/status",
                "",
                ("patch", "pods/status"),
            ),
            (
                &http::Method::POST,
                "/apis/apps/v1/namespaces/t/deployments",
                "",
                ("create", "deployments"),
            ),
            (
                &http::Method::DELETE,
                "/api/v1/namespaces/t",
                "",
                ("delete", "namespaces"),
            ),
            (
                &http::Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/k/leases/l",
                "",
                ("update", "leases"),
            ),
        ] {
            let (verb, resource) = verb_and_resource(method, path, query);
            assert_eq!(
                (verb.as_str(), resource.as_str()),
                want,
                "{method} {path}?{query}"
            );
        }
    }
}
