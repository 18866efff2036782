//! Write verbs create, update and patch (all formats, incl. server-side apply), with the
//! admission steps Kubernetes runs on the way (defaults, pruning, validation, generation,
//! managed fields, subresource rules, finalizers). Deletes are in `delete.rs`.

use std::sync::Mutex;

use serde_json::{Value, json};

use crate::api::{Request, State, Target, with_type_meta};
use crate::crd_schema;
use crate::defaults;
use crate::error::{ApiError, Cause, Subject};
use crate::fieldset::FieldSet;
use crate::gc;
use crate::patch;
use crate::registry::ResourceType;
use crate::schema::Schema;
use crate::ssa::{self, ManagerEntry, Writer};
use crate::store::ChangeType;
use crate::validation;

pub struct WriteContext {
    pub manager: String,
    pub dry_run: bool,
    pub field_validation: String,
    pub force: bool,
    pub now: String,
    pub warnings: Mutex<Vec<String>>,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn options_invalid(kind: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(
        &Subject {
            group: "meta.k8s.io",
            resource: "",
            kind,
            name: "",
        },
        causes,
    )
}

impl WriteContext {
    pub fn from_request(request: &Request) -> Result<Self, ApiError> {
        let options_kind = match request.method.as_str() {
            "POST" => "CreateOptions",
            "PUT" => "UpdateOptions",
            "PATCH" => "PatchOptions",
            _ => "DeleteOptions",
        };
        let dry_run = match request.param("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(options_invalid(
                    options_kind,
                    vec![Cause::new(
                        "FieldValueNotSupported",
                        "dryRun",
                        format!("Unsupported value: [\"{other}\"]: supported values: \"All\""),
                    )],
                ));
            }
        };
        Ok(WriteContext {
            manager: request.manager(),
            dry_run,
            field_validation: request
                .param("fieldValidation")
                .unwrap_or("Warn")
                .to_string(),
            force: request.param("force") == Some("true"),
            now: now(),
            warnings: Mutex::new(Vec::new()),
        })
    }
    fn warn(&self, w: String) {
        self.warnings.lock().expect("warnings lock").push(w);
    }
}

/// How managed fields are updated for this write.
enum Ownership {
    Update,
    /// Server-side apply already computed the entries.
    Applied(Vec<ManagerEntry>),
}

fn parse_json_body(request: &Request, rt: &ResourceType) -> Result<Value, ApiError> {
    let ct = request.content_type();
    if !(ct.is_empty() || ct == "application/json" || ct == "application/yaml") {
        return Err(ApiError::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ]));
    }
    let unrecognized = |detail: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {detail}",
            rt.kind
        ))
    };
    if request.body.is_empty() {
        return Err(unrecognized(
            "unexpected end of JSON input (<empty>)".into(),
        ));
    }
    let value: Value = if ct == "application/yaml" {
        serde_yaml::from_slice(&request.body).map_err(|e| ApiError::bad_request(e.to_string()))?
    } else {
        serde_json::from_slice(&request.body).map_err(|_| {
            let text = String::from_utf8_lossy(&request.body);
            let prefix: String = text.chars().take(30).collect();
            unrecognized(format!("unexpected end of JSON input ({prefix} ...)"))
        })?
    };
    if !value.is_object() {
        return Err(unrecognized("cannot unmarshal into object".into()));
    }
    check_type_meta(&value, rt)?;
    validation::decode_types(&value, rt)?;
    Ok(value)
}

/// The kind/apiVersion check for a body sent to a converted version.
pub fn check_served_type(value: &Value, rt: &ResourceType) -> Result<(), ApiError> {
    check_type_meta(value, rt)
}

fn check_type_meta(value: &Value, rt: &ResourceType) -> Result<(), ApiError> {
    let kind = value["kind"].as_str().unwrap_or("");
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    if (!kind.is_empty() && kind != rt.kind)
        || (!api_version.is_empty() && api_version != rt.api_version())
    {
        let shown_kind = if kind.is_empty() {
            rt.kind.as_str()
        } else {
            kind
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let _ = group;
        return Err(ApiError::bad_request(format!(
            "{shown_kind} in version \"{version}\" cannot be handled as a {}: converting ({version}.{shown_kind}) to (core.{}): unknown conversion",
            rt.kind, rt.kind
        )));
    }
    Ok(())
}

fn namespace_exists(state: &State, ns: &str) -> bool {
    state
        .store
        .get(&crate::store::ResourceKey::new("", "namespaces"), "", ns)
        .is_some()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn create(
    state: &mut State,
    t: &Target,
    request: &Request,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let body = parse_json_body(request, &t.rt)?;
    create_object(state, t, body, ctx, Ownership::Update)
}

fn create_object(
    state: &mut State,
    t: &Target,
    mut body: Value,
    ctx: &WriteContext,
    ownership: Ownership,
) -> Result<(u16, Value), ApiError> {
    let rt = &t.rt;
    if rt.namespaced {
        let ns = t.namespace.clone().unwrap_or_default();
        match body["metadata"]["namespace"].as_str() {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        body["metadata"]["namespace"] = json!(ns);
    }
    if body["metadata"]["name"].as_str().unwrap_or("").is_empty()
        && let Some(prefix) = body["metadata"]["generateName"].as_str()
    {
        body["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            &t.subject(""),
            vec![Cause::new(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )],
        ));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    if rt.namespaced && !namespace_exists(state, &ns) {
        return Err(ApiError::not_found(&Subject {
            group: "",
            resource: "namespaces",
            kind: "Namespace",
            name: &ns,
        }));
    }
    if state.store.get(&rt.key(), &ns, &name).is_some() {
        return Err(ApiError::already_exists(&t.subject(&name)));
    }
    let object = prepare(t, None, body, ctx, None, ownership)?;
    let Prepared::Write(mut object) = object else {
        return Err(ApiError::internal("create resulted in no object"));
    };
    if ctx.dry_run {
        return Ok((201, object));
    }
    let rv = state.store.next_resource_version();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    state
        .store
        .put(&rt.key(), object.clone(), ChangeType::Added);
    after_commit(state, rt, &object, ctx);
    Ok((201, object))
}

/// Side effects of controllers that run inside the API server or right after a write.
fn after_commit(state: &mut State, rt: &ResourceType, object: &Value, ctx: &WriteContext) {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "namespaces") if object["metadata"]["deletionTimestamp"].is_null() => {
            gc::populate_namespace(state, object["metadata"]["name"].as_str().unwrap_or(""))
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            gc::establish_crd(state, object, &ctx.now)
        }
        _ => {}
    }
    gc::collect(state, &ctx.now);
}

pub enum Prepared {
    Write(Value),
    Unchanged(Value),
}

fn strip_times(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(entries) = o["metadata"]["managedFields"].as_array_mut() {
        for e in entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    o
}

fn spec_view(rt: &ResourceType, object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    if rt.kind == "Deployment" {
        o["annotations"] = object["metadata"]["annotations"].clone();
    }
    o
}

/// The admission pipeline for one write. `old` is the live object for updates.
fn prepare(
    t: &Target,
    old: Option<&Value>,
    mut new: Value,
    ctx: &WriteContext,
    subresource: Option<&str>,
    ownership: Ownership,
) -> Result<Prepared, ApiError> {
    let rt = &t.rt;
    new = with_type_meta(new, rt);
    let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();

    // Subresource rules: /status writes only status; the main resource ignores status.
    if rt.has_status {
        match (subresource, old) {
            (Some("status"), Some(old)) => {
                let status = new.get("status").cloned();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        merged.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                new = merged;
            }
            (_, Some(old)) => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            },
            (_, None) => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }

    if let Some(schema) = &rt.crd_schema {
        let unknown = crd_schema::prune(&mut new, schema);
        if !unknown.is_empty() {
            match ctx.field_validation.as_str() {
                "Strict" => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        rt.kind,
                        rt.version,
                        rt.kind,
                        list.join(", ")
                    )));
                }
                "Ignore" => {}
                _ => unknown
                    .iter()
                    .for_each(|u| ctx.warn(format!("unknown field \"{u}\""))),
            }
        }
        new = crd_schema::apply_defaults(&new, schema);
    } else {
        defaults::apply(&rt.kind, &mut new);
    }

    // System metadata is owned by the server.
    let meta = new["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    meta.remove("resourceVersion");
    match old {
        Some(old) => {
            for key in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
            ] {
                match old["metadata"].get(key) {
                    Some(v) => {
                        meta.insert(key.into(), v.clone());
                    }
                    None => {
                        meta.remove(key);
                    }
                }
            }
        }
        None => {
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(ctx.now));
            meta.remove("deletionTimestamp");
            if rt.tracks_generation() {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
    }
    if let Some(g) = new["metadata"].get("generateName")
        && g.as_str() == Some("")
    {
        new["metadata"]
            .as_object_mut()
            .map(|m| m.remove("generateName"));
    }

    if new["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.is_empty())
    {
        new["metadata"]
            .as_object_mut()
            .map(|m| m.remove("finalizers"));
    }
    validation::validate(rt, &new, old, &name)?;

    if let Some(old) = old
        && rt.tracks_generation()
        && spec_view(rt, old) != spec_view(rt, &new)
    {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }

    let schema = rt.schema();
    let entries = match ownership {
        Ownership::Applied(entries) => entries,
        Ownership::Update => {
            let mut entries = old.map(ssa::decode).unwrap_or_default();
            let empty = defaults::zero_object(&rt.kind, rt.is_custom());
            let writer = Writer {
                manager: &ctx.manager,
                api_version: &rt.api_version(),
                subresource,
                now: &ctx.now,
            };
            ssa::record_update(&mut entries, old.unwrap_or(&empty), &new, schema, &writer);
            entries
        }
    };
    ssa::encode(&mut new, entries);
    // Strategy defaults and admission run after ownership is recorded: nobody owns them.
    defaults::apply_strategy(&rt.kind, &mut new);
    if old.is_none() {
        defaults::admit_new(&rt.kind, &mut new);
    }

    if let Some(old) = old {
        let mut comparable_old = old.clone();
        comparable_old["metadata"]
            .as_object_mut()
            .map(|m| m.remove("resourceVersion"));
        if strip_times(&comparable_old) == strip_times(&new) {
            return Ok(Prepared::Unchanged(old.clone()));
        }
    }
    Ok(Prepared::Write(new))
}

/// Stores an updated object (or deletes it when its last finalizer went away).
pub fn commit_update(
    state: &mut State,
    t: &Target,
    prepared: Prepared,
    ctx: &WriteContext,
) -> Value {
    let mut object = match prepared {
        Prepared::Unchanged(old) => return old,
        Prepared::Write(o) => o,
    };
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let finalizers_empty = object["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty());
    if ctx.dry_run {
        if let Some(old) = state.store.get(&t.rt.key(), &ns, &name) {
            object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        return object;
    }
    let rv = state.store.next_resource_version();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    state
        .store
        .put(&t.rt.key(), object.clone(), ChangeType::Modified);
    if !object["metadata"]["deletionTimestamp"].is_null() && finalizers_empty {
        state.store.remove(&t.rt.key(), &ns, &name);
    }
    after_commit(state, &t.rt, &object, ctx);
    object
}

pub(crate) fn live<'a>(state: &'a State, t: &Target) -> Result<&'a Value, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    state
        .store
        .get(&t.rt.key(), t.namespace.as_deref().unwrap_or(""), name)
        .ok_or_else(|| ApiError::not_found(&t.subject(name)))
}

pub fn update(
    state: &mut State,
    t: &Target,
    request: &Request,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let name = t.name.clone().unwrap_or_default();
    if t.subresource.as_deref() == Some("scale") {
        let body = serde_json::from_slice::<Value>(&request.body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        return write_scale(state, t, body, ctx);
    }
    let body = parse_json_body(request, &t.rt)?;
    check_update_name(&body, &name)?;
    let Some(old) = state
        .store
        .get(&t.rt.key(), t.namespace.as_deref().unwrap_or(""), &name)
        .cloned()
    else {
        return Err(ApiError::not_found(&t.subject(&name)));
    };
    let prepared = update_prepared(t, body, ctx, &old)?;
    Ok((200, commit_update(state, t, prepared, ctx)))
}

fn check_update_name(body: &Value, name: &str) -> Result<(), ApiError> {
    let given = body["metadata"]["name"].as_str().unwrap_or("");
    if given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// An update (PUT) of `old`, up to the commit.
fn update_prepared(
    t: &Target,
    body: Value,
    ctx: &WriteContext,
    old: &Value,
) -> Result<Prepared, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty()
                && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") =>
        {
            return Err(ApiError::conflict(&t.subject(&name)));
        }
        Some(rv) if !rv.is_empty() => {}
        _ if t.rt.is_custom() => {
            return Err(ApiError::invalid(
                &t.subject(&name),
                vec![Cause::invalid(
                    "metadata.resourceVersion",
                    "0x0",
                    "must be specified for an update",
                )],
            ));
        }
        _ => {}
    }
    prepare(
        t,
        Some(old),
        body,
        ctx,
        t.subresource.as_deref(),
        Ownership::Update,
    )
}

/// An update, patch or apply of the existing object `old`, computed without the store: the
/// caller commits it with [`commit_update`] if `old` is still the stored version, and computes
/// it again otherwise (Kubernetes' optimistic `GuaranteedUpdate`). `None` for the writes that
/// need the store throughout (the scale subresource); they go through [`update`] or [`patch`].
pub fn planned_update(
    t: &Target,
    verb: &str,
    request: &Request,
    ctx: &WriteContext,
    old: &Value,
) -> Result<Option<Prepared>, ApiError> {
    if t.subresource.as_deref() == Some("scale") {
        return Ok(None);
    }
    let prepared = match verb {
        "update" => {
            let body = parse_json_body(request, &t.rt)?;
            check_update_name(&body, t.name.as_deref().unwrap_or(""))?;
            update_prepared(t, body, ctx, old)?
        }
        "patch" => match patch_content_type(t, request)? {
            PatchKind::Apply => {
                let config = apply_config(t, request)?;
                apply_prepared(t, ctx, config, old)?
            }
            PatchKind::Other(ct) => patch_prepared(t, &patch_body(request)?, ctx, &ct, old)?,
        },
        _ => return Ok(None),
    };
    Ok(Some(prepared))
}

enum PatchKind {
    Apply,
    /// Another patch format: its content type.
    Other(String),
}

/// The patch format, or the error Kubernetes gives for an unsupported one.
fn patch_content_type(t: &Target, request: &Request) -> Result<PatchKind, ApiError> {
    let ct = request.content_type().to_string();
    let accepted_custom = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let is_smp = ct == "application/strategic-merge-patch+json";
    if !is_smp && !accepted_custom.contains(&ct.as_str()) {
        return Err(
            ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type")
                .with_details(json!({})),
        );
    }
    if !(accepted_custom.contains(&ct.as_str()) || (is_smp && !t.rt.is_custom())) {
        let mut accepted = accepted_custom.to_vec();
        if !t.rt.is_custom() {
            accepted.insert(2, "application/strategic-merge-patch+json");
        }
        return Err(ApiError::unsupported_media_type(&accepted));
    }
    Ok(match ct.as_str() {
        "application/apply-patch+yaml" => PatchKind::Apply,
        _ => PatchKind::Other(ct),
    })
}

pub fn patch(
    state: &mut State,
    t: &Target,
    request: &Request,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let ct = match patch_content_type(t, request)? {
        PatchKind::Apply => return apply(state, t, request, ctx),
        PatchKind::Other(ct) => ct,
    };
    let patch_body = patch_body(request)?;
    let old = live(state, t)?.clone();
    if t.subresource.as_deref() == Some("scale") {
        let current = patched(t, &ct, &patch_body, crate::scale::scale_view(&t.rt, &old))?;
        return write_scale(state, t, current, ctx);
    }
    let prepared = patch_prepared(t, &patch_body, ctx, &ct, &old)?;
    Ok((200, commit_update(state, t, prepared, ctx)))
}

fn patch_body(request: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// `current` with a patch of content type `ct` applied.
fn patched(
    t: &Target,
    ct: &str,
    patch_body: &Value,
    mut current: Value,
) -> Result<Value, ApiError> {
    match ct {
        "application/json-patch+json" => {
            patch::json_patch(&mut current, patch_body).map_err(|mut e| {
                e.message = "the server rejected our request due to an error in our request".into();
                e.details = Some(json!({}));
                e
            })?
        }
        "application/merge-patch+json" => patch::merge_patch(&mut current, patch_body),
        _ => patch::strategic_merge(&mut current, patch_body, t.rt.schema()),
    }
    Ok(current)
}

/// A JSON, merge or strategic-merge patch of `old` (not through /scale), up to the commit.
fn patch_prepared(
    t: &Target,
    patch_body: &Value,
    ctx: &WriteContext,
    ct: &str,
    old: &Value,
) -> Result<Prepared, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let current = patched(t, ct, patch_body, old.clone())?;
    // The patched object is decoded like a request body; decode errors become 422 on "patch".
    if let Err(e) = validation::decode_types(&current, &t.rt) {
        let detail = e.message.split(": ").skip(1).collect::<Vec<_>>().join(": ");
        return Err(ApiError::invalid(
            &t.subject(&name),
            vec![Cause::new(
                "FieldValueInvalid",
                "patch",
                format!(
                    "Invalid value: {}: {detail}",
                    Value::String(current.to_string())
                ),
            )],
        ));
    }
    if let Some(rv) = patch_body["metadata"]["resourceVersion"].as_str()
        && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
    {
        return Err(ApiError::conflict(&t.subject(&name)));
    }
    prepare(
        t,
        Some(old),
        current,
        ctx,
        t.subresource.as_deref(),
        Ownership::Update,
    )
}

fn apply(
    state: &mut State,
    t: &Target,
    request: &Request,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let config = apply_config(t, request)?;
    let name = t.name.clone().unwrap_or_default();
    let rt = &t.rt;
    let scale = t.subresource.as_deref() == Some("scale");
    let existing = state
        .store
        .get(&rt.key(), t.namespace.as_deref().unwrap_or(""), &name)
        .cloned();
    if let (Some(old), false) = (&existing, scale) {
        let prepared = apply_prepared(t, ctx, config, old)?;
        return Ok((200, commit_update(state, t, prepared, ctx)));
    }
    let (merged, entries) = apply_merged(t, ctx, config, existing.as_ref())?;
    match existing {
        None => {
            if scale {
                return Err(ApiError::not_found(&t.subject(&name)));
            }
            create_object(state, t, merged, ctx, Ownership::Applied(entries))
        }
        Some(old) => {
            let prepared = prepare(
                t,
                Some(&old),
                merged,
                ctx,
                None,
                Ownership::Applied(entries),
            )?;
            let object = commit_update(state, t, prepared, ctx);
            Ok((200, crate::scale::scale_view(rt, &object)))
        }
    }
}

/// The apply configuration of a request, checked against the target's kind.
fn apply_config(t: &Target, request: &Request) -> Result<Value, ApiError> {
    if request.param("fieldManager").is_none_or(str::is_empty) {
        return Err(options_invalid(
            "PatchOptions",
            vec![Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        ));
    }
    // Clients (kube-rs, kubectl) send apply patches as JSON, which is also YAML; serde_json
    // reads it several times faster. Anything else, and its errors, go through the YAML parser.
    let config: Value = match serde_json::from_slice::<Value>(&request.body) {
        Ok(config) if config.is_object() => config,
        _ => serde_yaml::from_slice(&request.body).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding YAML: error converting YAML to JSON: yaml: {}",
                yaml_error(&e)
            ))
        })?,
    };
    let rt = &t.rt;
    let (expected_kind, expected_api_version) = if t.subresource.as_deref() == Some("scale") {
        ("Scale".to_string(), "autoscaling/v1".to_string())
    } else {
        (rt.kind.clone(), rt.api_version())
    };
    let kind = config["kind"].as_str().unwrap_or("");
    let api_version = config["apiVersion"].as_str().unwrap_or("");
    if kind != expected_kind || api_version != expected_api_version {
        let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
        return Err(ApiError::bad_request(format!(
            "invalid object type: {g}/{v}, Kind={kind}"
        )));
    }
    Ok(config)
}

/// An apply of `config` onto the existing object `old` (not through /scale), up to the commit.
fn apply_prepared(
    t: &Target,
    ctx: &WriteContext,
    config: Value,
    old: &Value,
) -> Result<Prepared, ApiError> {
    let (merged, entries) = apply_merged(t, ctx, config, Some(old))?;
    prepare(
        t,
        Some(old),
        merged,
        ctx,
        t.subresource.as_deref(),
        Ownership::Applied(entries),
    )
}

/// `config` merged onto the live object (if any) by server-side apply, with the managed
/// fields after it.
fn apply_merged(
    t: &Target,
    ctx: &WriteContext,
    mut config: Value,
    existing: Option<&Value>,
) -> Result<(Value, Vec<ManagerEntry>), ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let rt = &t.rt;
    let scale = t.subresource.as_deref() == Some("scale");
    if scale {
        let replicas = config["spec"]["replicas"].clone();
        config = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}, "spec": {"replicas": replicas}});
    } else if rt.has_status {
        // Fields the subresource strategy resets are not applied (nor owned): status on the
        // main resource, everything but status on /status.
        if t.subresource.as_deref() == Some("status") {
            config = json!({"apiVersion": config["apiVersion"], "kind": config["kind"],
                "metadata": {"name": config["metadata"]["name"]}, "status": config["status"]});
            if config["status"].is_null() {
                config.as_object_mut().map(|m| m.remove("status"));
            }
        } else if let Some(m) = config.as_object_mut() {
            m.remove("status");
        }
    }
    let live_value = existing.unwrap_or(&Value::Null);
    let mut entries = existing.map(ssa::decode).unwrap_or_default();
    let schema: Schema<'_> = rt.schema();
    if let Some(live) = existing {
        // Fields nobody is recorded as owning belong to the synthetic "before-first-apply"
        // manager, so the first applier conflicts with them instead of silently taking them.
        let replicas = FieldSet::from_json(&json!({"f:spec": {"f:replicas": {}}}));
        if scale
            && entries
                .iter()
                .all(|e| e.fields.intersection(&replicas).is_empty())
        {
            entries.push(ManagerEntry {
                manager: "before-first-apply".into(),
                operation: "Update".into(),
                api_version: "autoscaling/v1".into(),
                time: None,
                subresource: Some("scale".into()),
                fields: replicas,
            });
        } else if !scale && entries.is_empty() {
            entries.push(ManagerEntry {
                manager: "before-first-apply".into(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: None,
                subresource: None,
                fields: FieldSet::from_value(live, schema),
            });
        }
    }
    let writer = Writer {
        manager: &ctx.manager,
        api_version: &rt.api_version(),
        subresource: t.subresource.as_deref(),
        now: &ctx.now,
    };
    let merged = ssa::apply(
        live_value,
        &config,
        schema,
        &mut entries,
        ctx.force,
        &writer,
    )?;
    Ok((merged, entries))
}

fn yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) => format!(
            "line {}: {}",
            loc.line(),
            e.to_string().split(" at line").next().unwrap_or("")
        ),
        None => e.to_string(),
    }
}

fn write_scale(
    state: &mut State,
    t: &Target,
    scale: Value,
    ctx: &WriteContext,
) -> Result<(u16, Value), ApiError> {
    let old = live(state, t)?.clone();
    let (spec_path, _, _) = crate::scale::scale_paths(&t.rt);
    let mut new = old.clone();
    crate::scale::set_path(&mut new, &spec_path, scale["spec"]["replicas"].clone());
    let prepared = prepare(t, Some(&old), new, ctx, Some("scale"), Ownership::Update)?;
    let object = commit_update(state, t, prepared, ctx);
    Ok((200, crate::scale::scale_view(&t.rt, &object)))
}
