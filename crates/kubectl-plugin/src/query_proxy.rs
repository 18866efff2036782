//! A project's query API reached through the API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/<project>:http/proxy/...`), so a user needs no network
//! route to the pods, only RBAC on `services/proxy`. The API server keeps the caller's
//! `Authorization` header (its own credential) from the backend, so the project's API key
//! travels in `X-Api-Key`.

use anyhow::{Context, Result, anyhow, bail};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::KnowledgeProject;
use kbeast_api::query_contract::{
    ADMIN_TOKEN_KEY, HTTP_PORT_NAME, READ_TOKEN_KEY, WRITE_TOKEN_KEY,
};
use kbeast_client::{API_KEY_HEADER, Scope};
use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::target::Target;

pub struct QueryProxy {
    client: kube::Client,
    base: String,
    key: String,
}

impl QueryProxy {
    /// The proxy of `project`'s Service, with `key` or else the `scope` token of the project's
    /// keys Secret.
    pub async fn connect(
        target: &Target,
        project: &KnowledgeProject,
        scope: Scope,
        key: Option<String>,
    ) -> Result<Self> {
        let key = match key {
            Some(key) => key,
            None => token_from_secret(target, project, scope).await?,
        };
        Ok(Self {
            client: target.client.clone(),
            base: format!(
                "/api/v1/namespaces/{}/services/{}:{HTTP_PORT_NAME}/proxy",
                target.namespace,
                project.name_any()
            ),
            key,
        })
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        self.send(Method::GET, path, Vec::new()).await
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        self.send(Method::POST, path, serde_json::to_vec(body)?)
            .await
    }

    /// Sends the request; a 503 with `Retry-After` (the pod shed it before doing anything) is
    /// sent again after the delay, for at most 30 s in all.
    async fn send<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<R> {
        let mut waited = Duration::ZERO;
        loop {
            let request = http::Request::builder()
                .method(method.clone())
                .uri(format!("{}{path}", self.base))
                .header(API_KEY_HEADER, &self.key)
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/json")
                .body(kube::client::Body::from(body.clone()))?;
            let response = self
                .client
                .send(request)
                .await
                .context("sending the request through the API server's service proxy")?;
            let status = response.status();
            let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| {
                    response
                        .headers()
                        .get(RETRY_AFTER)?
                        .to_str()
                        .ok()?
                        .parse()
                        .ok()
                })
                .flatten()
                .map(Duration::from_secs);
            let body = response.into_body().collect_bytes().await?;
            if status.is_success() {
                return serde_json::from_slice(&body)
                    .with_context(|| format!("unexpected answer to {path}: {}", excerpt(&body)));
            }
            match retry_after {
                Some(delay) if waited + delay <= MAX_RETRY_WAIT => {
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
                _ => bail!("{path}: HTTP {status}: {}", error_message(&body)),
            }
        }
    }
}

const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The bare token of `scope` in the project's keys Secret.
async fn token_from_secret(
    target: &Target,
    project: &KnowledgeProject,
    scope: Scope,
) -> Result<String> {
    let Some(name) = project
        .status
        .as_ref()
        .and_then(|s| s.api_keys_secret.clone())
    else {
        bail!(
            "the project has no keys Secret yet (status.apiKeysSecret is empty); wait until the operator reconciled it, or pass --key"
        );
    };
    let secret = target
        .api::<Secret>()
        .get(&name)
        .await
        .with_context(|| format!("reading the keys Secret {name:?} (or pass --key)"))?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(token_key(scope)))
        .ok_or_else(|| {
            anyhow!(
                "the keys Secret {name:?} has no {:?} entry; pass --key or set KBEAST_API_KEY",
                token_key(scope)
            )
        })?;
    Ok(String::from_utf8(token.0.clone())?.trim().to_string())
}

/// Key, in a generated keys Secret, of the bare token of `scope`.
pub fn token_key(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => READ_TOKEN_KEY,
        Scope::Write => WRITE_TOKEN_KEY,
        Scope::Admin => ADMIN_TOKEN_KEY,
    }
}

/// What went wrong, from the query server's JSON error (`{"error": {"message", "field"}}`), a
/// Kubernetes Status (e.g. no endpoints, forbidden) or the raw text.
pub fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return excerpt(body);
    };
    if let Some(error) = value.get("error") {
        let message = error["message"].as_str().unwrap_or("no message");
        return match error["field"].as_str() {
            Some(field) => format!("{message} (field {field})"),
            None => message.to_string(),
        };
    }
    match value["message"].as_str() {
        Some(message) => message.to_string(),
        None => excerpt(body),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_message_and_field_of_either_kind_of_body() {
        let query = br#"{"error":{"code":"invalid","message":"must be 1..=100","field":"top_k"}}"#;
        assert_eq!(error_message(query), "must be 1..=100 (field top_k)");
        let status = br#"{"kind":"Status","status":"Failure","message":"no endpoints available for service \"docs\"","code":503}"#;
        assert_eq!(
            error_message(status),
            "no endpoints available for service \"docs\""
        );
        assert_eq!(error_message(b"upstream reset\n"), "upstream reset");
        assert_eq!(
            error_message("x".repeat(400).as_bytes()).chars().count(),
            301
        );
    }
}
