//! The JSON error format (`{error:{code, message, field?}}`), the JSON body
//! extractor that names the offending field, and the middleware that gives
//! responses produced outside the handlers (404, 405, 408, 413) the same format.

use axum::BoxError;
use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kbeast_client::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;

use crate::embed::EmbedError;
use crate::ingest::IngestError;
use crate::ingest::writer::WriteError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the store is not open yet",
        )
    }

    /// Logs `error` (in the request's span, so with its id) and answers without it: storage
    /// errors name paths, buckets and endpoints. [`name_request_in_internal_errors`] adds the id.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_MESSAGE,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Invalid { field, message } => ApiError::invalid(field, message),
            IngestError::TooLarge { field, message } => ApiError {
                field: Some(field),
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", message)
            },
            IngestError::Embedding(e @ EmbedError::Unavailable(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "embedder_unavailable",
                e.to_string(),
            ),
            IngestError::Embedding(e @ EmbedError::Failed(_)) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "embedder_failed", e.to_string())
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        let message = error.to_string();
        match error {
            WriteError::DocumentQuota { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "document_quota_exceeded",
                message,
            ),
            WriteError::ByteQuota { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_quota_exceeded",
                message,
            ),
            WriteError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            WriteError::Store(_) => ApiError::internal(message),
        }
    }
}

const INTERNAL_MESSAGE: &str = "internal error";

/// Middleware: every 500 answer says only that, with the request id under which the
/// details are logged.
pub async fn name_request_in_internal_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let response = next.run(request).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let generic = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{INTERNAL_MESSAGE}; the server log has the details under request id {request_id}"),
    )
    .into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, generic.into_body())
}

/// Like `axum::Json`, but every rejection is an [`ApiError`]: 413 for an
/// oversized body, 400 `malformed_json` for invalid JSON, and 400
/// `invalid_argument` with `field` set (e.g. `mode`, `documents[0].text`)
/// for JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(status, "payload_too_large", "the request body is too large")
                } else {
                    ApiError::new(status, "bad_request", rejection.body_text())
                }
            })?;
        if let Some(path) = super::json_keys::first_duplicate_key(&bytes) {
            return Err(ApiError::invalid(
                path.clone(),
                format!("duplicate key `{path}`: each key may appear once per object"),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // serde reports missing and unknown fields at their parent; name the field itself.
                let field = match named_field(&message) {
                    Some(name) if path == "." => name.to_string(),
                    Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
                    _ => path,
                };
                ApiError::invalid(field, message)
            })
    }
}

fn named_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?
        .split('`')
        .next()
}

fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "permission_denied",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// Middleware: rewrites any 4xx/5xx that is not JSON (from the router or
/// tower layers) into the JSON error format.
pub async fn json_errors<B>(response: Response<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response.map(Body::new);
    }
    let (mut parts, _) = response.into_parts();
    let error = ApiError::new(
        status,
        code_for_status(status),
        status.canonical_reason().unwrap_or("error"),
    );
    let fresh = error.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_are_named() {
        assert_eq!(named_field("missing field `query`"), Some("query"));
        assert_eq!(
            named_field("unknown field `docs`, expected `documents`"),
            Some("docs")
        );
        assert_eq!(named_field("unknown variant `x`"), None);
    }
}
