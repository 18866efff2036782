//! `kubectl kbeast keys`: the two-step rotation of a project's API keys (docs/api.md, "Rotating
//! API keys"). `rotate` adds new keys beside the old ones and puts the new tokens where clients
//! read them; `retire` removes the replaced keys. The pods reload the keys file without a
//! restart. No token is ever printed.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::query_contract::API_KEYS_FILE_KEY;
use kbeast_client::{ApiKeyEntry, Scope};
use kube::api::PostParams;

use crate::cli::{KeysAction, ScopeArg};
use crate::query_proxy::token_key;
use crate::target::Target;

/// On the keys Secret during a rotation: ids of the entries `retire` removes.
pub const RETIRING_ANNOTATION: &str = "kbeast.io/retiring-key-ids";

pub async fn run(target: &Target, name: &str, action: KeysAction) -> Result<()> {
    let project = target.project(name).await?;
    let secret_name = project
        .status
        .as_ref()
        .and_then(|s| s.api_keys_secret.clone())
        .ok_or_else(|| anyhow!("{name} has no keys Secret yet (status.apiKeysSecret is empty)"))?;
    let api = target.api::<Secret>();
    let mut secret = api
        .get(&secret_name)
        .await
        .with_context(|| format!("reading the keys Secret {secret_name:?}"))?;
    let message = match action {
        KeysAction::Rotate { scope } => rotate(&mut secret, scopes(scope), now_id())?,
        KeysAction::Retire => retire(&mut secret)?,
    };
    // PUT with the resourceVersion read: a concurrent change fails instead of being lost.
    api.replace(&secret_name, &PostParams::default(), &secret)
        .await
        .with_context(|| {
            format!("writing the keys Secret {secret_name:?} (run the command again)")
        })?;
    println!("{name}: {message} (Secret {secret_name})");
    Ok(())
}

fn scopes(arg: ScopeArg) -> Vec<Scope> {
    match arg {
        ScopeArg::Read => vec![Scope::Read],
        ScopeArg::Write => vec![Scope::Write],
        ScopeArg::Admin => vec![Scope::Admin],
        ScopeArg::All => Scope::ALL.to_vec(),
    }
}

fn now_id() -> String {
    jiff::Timestamp::now().as_second().to_string()
}

/// Step 1 on `secret`: a new key per scope beside the old ones; the old ones are marked for
/// `retire`.
pub fn rotate(secret: &mut Secret, scopes: Vec<Scope>, suffix: String) -> Result<String> {
    if retiring(secret).is_some() {
        bail!(
            "a rotation is in progress: run `retire` first (annotation {RETIRING_ANNOTATION} lists the keys it removes)"
        );
    }
    let mut entries = keys_file(secret)?;
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    let mut retiring = Vec::new();
    let mut added = Vec::new();
    for scope in scopes {
        let old_token = data
            .get(token_key(scope))
            .map(|t| String::from_utf8_lossy(&t.0).trim().to_string());
        if let Some(old) = &old_token {
            retiring.extend(
                entries
                    .iter()
                    .filter(|e| &e.secret == old)
                    .map(|e| e.id.clone()),
            );
        }
        let token = scope.new_token();
        let id = format!("{}-{suffix}", scope.name());
        entries.push(scope.entry(&id, &token));
        data.insert(token_key(scope).to_string(), ByteString(token.into_bytes()));
        added.push(format!("{id} in {}", token_key(scope)));
    }
    data.insert(
        API_KEYS_FILE_KEY.to_string(),
        ByteString(serde_json::to_vec_pretty(&entries)?),
    );
    retiring.sort();
    retiring.dedup();
    secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RETIRING_ANNOTATION.to_string(), retiring.join(","));
    Ok(format!(
        "new keys {}; the old keys ({}) keep working until `kubectl kbeast keys <project> retire`",
        added.join(", "),
        if retiring.is_empty() {
            "none found".to_string()
        } else {
            retiring.join(", ")
        }
    ))
}

/// Step 2 on `secret`: removes the entries the last `rotate` replaced.
pub fn retire(secret: &mut Secret) -> Result<String> {
    let Some(ids) = retiring(secret) else {
        bail!("nothing to retire: no rotation is in progress (run `rotate` first)");
    };
    let mut entries = keys_file(secret)?;
    let before = entries.len();
    entries.retain(|e| !ids.contains(&e.id));
    if entries.is_empty() {
        bail!("retiring {ids:?} would leave no key at all; the Secret is left as it is");
    }
    let removed = before - entries.len();
    secret.data.get_or_insert_with(BTreeMap::new).insert(
        API_KEYS_FILE_KEY.to_string(),
        ByteString(serde_json::to_vec_pretty(&entries)?),
    );
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        annotations.remove(RETIRING_ANNOTATION);
    }
    Ok(format!(
        "removed {removed} old keys ({}); they get 401 once the pods reloaded the file (within about a minute)",
        ids.join(", ")
    ))
}

fn retiring(secret: &Secret) -> Option<Vec<String>> {
    let ids = secret
        .metadata
        .annotations
        .as_ref()?
        .get(RETIRING_ANNOTATION)?;
    Some(
        ids.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn keys_file(secret: &Secret) -> Result<Vec<ApiKeyEntry>> {
    let file = secret
        .data
        .as_ref()
        .and_then(|d| d.get(API_KEYS_FILE_KEY))
        .ok_or_else(|| anyhow!("the Secret has no {API_KEYS_FILE_KEY}"))?;
    serde_json::from_slice(&file.0)
        .with_context(|| format!("{API_KEYS_FILE_KEY} in the Secret is not a JSON list of keys"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> Secret {
        let entries = vec![
            Scope::Read.entry("read", "r-old-0123456789abcdef"),
            Scope::Write.entry("write", "w-old-0123456789abcdef"),
            Scope::Admin.entry("admin", "a-old-0123456789abcdef"),
        ];
        let data = BTreeMap::from([
            (
                API_KEYS_FILE_KEY.to_string(),
                ByteString(serde_json::to_vec(&entries).unwrap()),
            ),
            (
                "read-key".to_string(),
                ByteString(b"r-old-0123456789abcdef".to_vec()),
            ),
            (
                "write-key".to_string(),
                ByteString(b"w-old-0123456789abcdef".to_vec()),
            ),
            (
                "admin-key".to_string(),
                ByteString(b"a-old-0123456789abcdef".to_vec()),
            ),
        ]);
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    fn token(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn rotate_adds_beside_and_retire_removes_only_the_replaced_keys() {
        let mut secret = generated();
        rotate(&mut secret, vec![Scope::Read], "100".into()).unwrap();
        let entries = keys_file(&secret).unwrap();
        assert_eq!(entries.len(), 4, "the old read key stays until retire");
        let new_read = token(&secret, "read-key");
        assert!(new_read.starts_with("kb_r_"));
        assert!(
            entries
                .iter()
                .any(|e| e.id == "read-100" && e.secret == new_read)
        );
        assert_eq!(
            token(&secret, "write-key"),
            "w-old-0123456789abcdef",
            "other scopes untouched"
        );
        assert_eq!(retiring(&secret), Some(vec!["read".to_string()]));

        let error = rotate(&mut secret, vec![Scope::Write], "101".into()).unwrap_err();
        assert!(error.to_string().contains("run `retire` first"), "{error}");

        retire(&mut secret).unwrap();
        let ids: Vec<String> = keys_file(&secret)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["write", "admin", "read-100"]);
        assert_eq!(retiring(&secret), None);
        let error = retire(&mut secret).unwrap_err();
        assert!(error.to_string().contains("nothing to retire"), "{error}");
    }

    #[test]
    fn a_secret_without_a_readable_keys_file_is_refused_naming_it() {
        let mut secret = generated();
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(API_KEYS_FILE_KEY.into(), ByteString(b"{".to_vec()));
        let error = rotate(&mut secret, Scope::ALL.to_vec(), "1".into()).unwrap_err();
        assert!(error.to_string().contains("api-keys.json"), "{error}");
    }
}
