//! Watch streams: initial events, resume from a resourceVersion, bookmarks, 410 Gone,
//! selector-aware ADDED/MODIFIED/DELETED, metadata-only objects.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{ListOptions, Representation, Request, Shared, Target, validate_list_params};
use crate::error::ApiError;
use crate::store::{ChangeType, parse_rv};

struct WatchFilter {
    rt: std::sync::Arc<crate::registry::ResourceType>,
    options: ListOptions,
    namespace: Option<String>,
    metadata_only: bool,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
            && self.options.matches(object)
    }
    /// One line of the watch stream: `object` as this watch shows it.
    fn event_line(&self, event_type: &str, object: &Value) -> Bytes {
        if self.metadata_only {
            return event_line(event_type, &MetadataView(&object["metadata"]));
        }
        event_line(
            event_type,
            &*crate::conversion::served_view(&self.rt, object),
        )
    }
}

/// What `as_metadata` makes of an object, serialised without copying its metadata.
struct MetadataView<'a>(&'a Value);

impl serde::Serialize for MetadataView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("kind", "PartialObjectMetadata")?;
        map.serialize_entry("apiVersion", "meta.k8s.io/v1")?;
        map.serialize_entry("metadata", self.0)?;
        map.end()
    }
}

fn event_line(event_type: &str, object: &impl serde::Serialize) -> Bytes {
    #[derive(serde::Serialize)]
    struct Event<'a, T> {
        #[serde(rename = "type")]
        event_type: &'a str,
        object: &'a T,
    }
    let mut line = serde_json::to_vec(&Event { event_type, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(kind: &str, api_version: &str, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": metadata})
}

pub fn serve(
    shared: &Arc<Shared>,
    request: &Request,
    t: &Target,
    repr: Representation,
    close_after: Option<Duration>,
) -> Result<Response, ApiError> {
    validate_list_params(request, true)?;
    let filter = WatchFilter {
        rt: t.rt.clone(),
        options: ListOptions::from_request(request, t)?,
        namespace: t.namespace.clone(),
        metadata_only: repr != Representation::Full,
    };
    let bookmarks = request.param("allowWatchBookmarks") == Some("true");
    let send_initial = request.param("sendInitialEvents") == Some("true");
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let requested_rv = request.param("resourceVersion").unwrap_or("").to_string();
    let name_filter = t.name.clone();
    let key = t.rt.key();
    let (kind, api_version) = if filter.metadata_only {
        (
            "PartialObjectMetadata".to_string(),
            "meta.k8s.io/v1".to_string(),
        )
    } else {
        (t.rt.kind.clone(), t.rt.api_version())
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let (mut changes, mut last_rv) = {
        let state = shared.lock();
        let current = state.store.current_resource_version();
        let receiver = state.store.subscribe();
        let from_state = requested_rv.is_empty() || requested_rv == "0" || send_initial;
        if from_state {
            for object in state.store.list(&key, t.namespace.as_deref()) {
                if filter.matches(object)
                    && name_filter
                        .as_deref()
                        .is_none_or(|n| object["metadata"]["name"] == n)
                {
                    initial.push(filter.event_line("ADDED", object));
                }
            }
            if send_initial && bookmarks {
                initial.push(event_line(
                    "BOOKMARK",
                    &bookmark(&kind, &api_version, current, true),
                ));
            }
            (receiver, current)
        } else {
            let since: u64 = requested_rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {requested_rv}"))
            })?;
            let oldest = state.store.oldest_watchable(&key);
            if since < oldest {
                let status =
                    ApiError::gone(format!("too old resource version: {since} ({oldest})"))
                        .to_status();
                let mut status = status;
                status.as_object_mut().map(|m| m.remove("details"));
                initial.push(event_line("ERROR", &status));
                drop(receiver);
                return Ok(stream_response(initial, None));
            }
            for change in state.store.changes_since(&key, since) {
                if let Some(line) = change_line(&filter, name_filter.as_deref(), &change) {
                    initial.push(line);
                }
            }
            (receiver, current)
        }
    };

    let bookmark_interval = shared.bookmark_interval;
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let limit = match (timeout, close_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = limit.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(event_line("BOOKMARK", &bookmark(&kind, &api_version, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                change = changes.recv() => match change {
                    Ok(change) => {
                        if change.key != key || change.resource_version <= last_rv {
                            continue;
                        }
                        last_rv = change.resource_version;
                        if let Some(line) = change_line(&filter, name_filter.as_deref(), &change)
                            && tx.send(line).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that falls behind is closed; clients re-list, as with a real server.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(stream_response(Vec::new(), Some(rx)))
}

fn change_line(
    filter: &WatchFilter,
    name: Option<&str>,
    change: &crate::store::Change,
) -> Option<Bytes> {
    let object = &change.object;
    if name.is_some_and(|n| object["metadata"]["name"] != n) {
        return None;
    }
    let now_matches = filter.matches(object);
    let before_matches = change.previous.as_ref().is_some_and(|p| filter.matches(p));
    match change.change_type {
        ChangeType::Deleted => now_matches.then(|| filter.event_line("DELETED", object)),
        _ => match (before_matches, now_matches) {
            (true, true) => Some(filter.event_line("MODIFIED", object)),
            (false, true) => Some(filter.event_line("ADDED", object)),
            (true, false) => {
                // Leaving the selector: DELETED with the previous state and the new version.
                let mut previous = change.previous.as_deref().cloned().unwrap_or_default();
                previous["metadata"]["resourceVersion"] = json!(parse_rv(object).to_string());
                Some(filter.event_line("DELETED", &previous))
            }
            (false, false) => None,
        },
    }
}

fn stream_response(initial: Vec<Bytes>, rx: Option<mpsc::Receiver<Bytes>>) -> Response {
    let head = futures::stream::iter(initial.into_iter().map(Ok::<Bytes, std::io::Error>));
    let body = match rx {
        Some(rx) => {
            let tail = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok(b), rx))
            });
            Body::from_stream(futures::StreamExt::chain(head, tail))
        }
        None => Body::from_stream(head),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
