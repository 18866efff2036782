//! DELETE and deletecollection: options, preconditions, and the response shapes (a
//! `Status` when the object is gone, the object when finalizers keep it).

use serde_json::{Value, json};

use crate::api::{Request, State, Target};
use crate::error::{ApiError, Cause};
use crate::gc;
use crate::selectors::LabelSelector;
use crate::write::{WriteContext, live, options_invalid};

/// DELETE options from the query and the optional `DeleteOptions` body.
pub struct DeleteOptions {
    pub propagation: String,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `gracePeriodSeconds` (query or body); pods only.
    pub grace_period: Option<i64>,
}

impl DeleteOptions {
    pub fn from_request(request: &Request) -> Result<Self, ApiError> {
        let body: Value = if request.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&request.body).unwrap_or(json!({}))
        };
        let mut propagation = request
            .param("propagationPolicy")
            .map(String::from)
            .or_else(|| body["propagationPolicy"].as_str().map(String::from));
        if propagation.is_none() {
            let orphan = request
                .param("orphanDependents")
                .map(|v| v == "true")
                .or(body["orphanDependents"].as_bool());
            if orphan == Some(true) {
                propagation = Some("Orphan".into());
            }
        }
        let propagation = propagation.unwrap_or_else(|| "Background".into());
        if !["Foreground", "Background", "Orphan"].contains(&propagation.as_str()) {
            return Err(options_invalid(
                "DeleteOptions",
                vec![Cause::new(
                    "FieldValueNotSupported",
                    "propagationPolicy",
                    format!(
                        "Unsupported value: \"{propagation}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
        let grace_period = request
            .param("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or(body["gracePeriodSeconds"].as_i64());
        Ok(DeleteOptions {
            propagation,
            grace_period,
            precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
            precondition_rv: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
        })
    }
}

pub fn delete(
    state: &mut State,
    t: &Target,
    options: &DeleteOptions,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let old = live(state, t)?.clone();
    if let Some(uid) = &options.precondition_uid {
        let actual = old["metadata"]["uid"].as_str().unwrap_or("");
        if uid != actual {
            return Err(ApiError::new(409, "Conflict", format!(
                "Operation cannot be fulfilled on {} \"{name}\": the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated",
                t.rt.kind
            )).with_details(json!({"name": name, "kind": t.rt.kind})));
        }
    }
    if let Some(rv) = &options.precondition_rv
        && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
    {
        return Err(ApiError::conflict(&t.subject(&name)));
    }
    if ctx.dry_run {
        return Ok((200, old));
    }
    let outcome = gc::delete_object_with_grace(
        state,
        &t.rt,
        &old,
        &options.propagation,
        options.grace_period,
        &ctx.now,
    );
    gc::collect(state, &ctx.now);
    Ok(match outcome {
        gc::Deleted::Terminating(object) => (200, object),
        gc::Deleted::Removed(object) if t.rt.kind == "Pod" => (200, object),
        gc::Deleted::Removed(object) => {
            let mut details = json!({"name": name});
            if !t.rt.group.is_empty() {
                details["group"] = json!(t.rt.group);
            }
            details["kind"] = json!(t.rt.resource);
            details["uid"] = object["metadata"]["uid"].clone();
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            )
        }
    })
}

pub fn delete_collection(
    state: &mut State,
    t: &Target,
    selector: &LabelSelector,
    options: &DeleteOptions,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let victims: Vec<Value> = state
        .store
        .list(&t.rt.key(), t.namespace.as_deref())
        .into_iter()
        .filter(|o| selector.matches(o))
        .map(|o| (**o).clone())
        .collect();
    let mut items = Vec::new();
    for v in victims {
        if !ctx.dry_run {
            gc::delete_object_with_grace(
                state,
                &t.rt,
                &v,
                &options.propagation,
                options.grace_period,
                &ctx.now,
            );
        }
        items.push(crate::api::strip_type_meta(v));
    }
    gc::collect(state, &ctx.now);
    Ok((
        200,
        json!({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version(), "metadata": {"resourceVersion": state.store.current_resource_version().to_string()}, "items": items}),
    ))
}
