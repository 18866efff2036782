//! Bearer-key authentication. Keys come from a JSON or YAML file (a list of
//! `{id, secret, scopes}`), re-read whenever its content changes. Secrets are
//! compared in constant time and never logged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use kbeast_client::{API_KEY_HEADER, ApiKeyEntry, Scope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::telemetry::Metrics;

const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read API keys file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid API keys file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<Arc<Vec<ApiKeyEntry>>>,
    /// Hash of the file content the current keys were loaded from.
    loaded_from: RwLock<[u8; 32]>,
}

impl KeyStore {
    /// Loads `path`; a broken file at startup is an error.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let content = read(path)?;
        let keys = parse(path, &content)?;
        Ok(Self {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            loaded_from: RwLock::new(digest(&content)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file if its content changed. A broken file keeps the old
    /// keys (fail-safe: a bad edit cannot lock everyone out) and is an error, which
    /// the caller reports (log and metrics) so that it does not go unnoticed.
    pub fn reload_if_changed(&self) -> Result<(), KeysError> {
        let content = read(&self.path)?;
        let hash = digest(&content);
        if *self.loaded_from.read().expect("keys lock") == hash {
            return Ok(());
        }
        let keys = parse(&self.path, &content)?;
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        tracing::info!(path = %self.path.display(), key_ids = ?ids, "reloaded API keys");
        *self.keys.write().expect("keys lock") = Arc::new(keys);
        *self.loaded_from.write().expect("keys lock") = hash;
        Ok(())
    }

    /// Polls the file every `interval` until the process exits, counting failed reloads in
    /// `kb_keys_reload_failures_total` and setting `kb_keys_file_valid`.
    pub fn watch(self: &Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        let store = Arc::clone(self);
        metrics.keys_file_valid.set(1);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let store = Arc::clone(&store);
                let outcome = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
                match outcome {
                    Ok(Ok(())) => metrics.keys_file_valid.set(1),
                    Ok(Err(error)) => {
                        metrics.keys_reload_failures.inc();
                        metrics.keys_file_valid.set(0);
                        tracing::error!(error = %error, "the API keys file is broken; the previous keys stay in force");
                    }
                    Err(panicked) => {
                        tracing::error!(error = %panicked, "reloading the API keys panicked")
                    }
                }
            }
        });
    }

    /// The key whose secret equals `secret`. Every key is compared, in
    /// constant time, so timing reveals neither which key nor how much matched.
    pub fn authenticate(&self, secret: &str) -> Option<ApiKeyEntry> {
        let keys = Arc::clone(&self.keys.read().expect("keys lock"));
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.secret.as_bytes().ct_eq(secret.as_bytes())) {
                found = Some(key.clone());
            }
        }
        found
    }
}

fn read(path: &Path) -> Result<String, KeysError> {
    std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn digest(content: &str) -> [u8; 32] {
    Sha256::digest(content.as_bytes()).into()
}

/// YAML is a superset of JSON, so one parser reads both formats.
fn parse(path: &Path, content: &str) -> Result<Vec<ApiKeyEntry>, KeysError> {
    let invalid = |message: String| KeysError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let keys: Vec<ApiKeyEntry> =
        serde_yaml::from_str(content).map_err(|e| invalid(redacted(&e)))?;
    let mut ids = std::collections::HashSet::new();
    // Two keys with one secret: authentication would pick one of them, with its scopes.
    let mut id_by_secret = std::collections::HashMap::new();
    for key in &keys {
        if let Some(first) = id_by_secret.insert(key.secret.as_str(), key.id.as_str()) {
            return Err(invalid(format!(
                "keys {first:?} and {:?} have the same secret; give each key its own",
                key.id
            )));
        }
        if key.id.is_empty() || !ids.insert(key.id.as_str()) {
            return Err(invalid(format!(
                "key ids must be non-empty and unique ({:?})",
                key.id
            )));
        }
        if key.secret.len() < MIN_SECRET_BYTES {
            return Err(invalid(format!(
                "the secret of key {:?} is shorter than {MIN_SECRET_BYTES} bytes",
                key.id
            )));
        }
        if key.scopes.is_empty() {
            return Err(invalid(format!("key {:?} has no scopes", key.id)));
        }
    }
    Ok(keys)
}

/// Where the file fails to parse, without serde_yaml's message: it quotes the
/// offending value, which may be a secret (e.g. one pasted under `scopes`).
fn redacted(error: &serde_yaml::Error) -> String {
    let shape = "not a list of {id, secret, scopes} entries";
    match error.location() {
        Some(at) => format!("{shape} (line {}, column {})", at.line(), at.column()),
        None => shape.to_string(),
    }
}

/// Writes a keys file with one admin key (mode 0600) if none exists at `path`.
/// Returns whether a file was created.
pub fn generate_keys_file(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;

    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))?;
    let entry = ApiKeyEntry {
        id: "admin".to_string(),
        secret: crate::ingest::chunking::hex(&secret),
        scopes: vec![Scope::Admin],
    };
    let yaml = serde_yaml::to_string(&vec![entry]).map_err(std::io::Error::other)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(yaml.as_bytes())?;
            file.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The authenticated caller. Extracting it fails with 401 when the bearer key
/// is missing or unknown; [`Principal::require`] fails with 403.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    scopes: Vec<Scope>,
}

impl Principal {
    /// `admin` grants every scope; `read` and `write` are independent.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "key {:?} lacks the {:?} scope",
                    self.key_id,
                    format!("{scope:?}").to_lowercase()
                ),
            ))
        }
    }
}

/// The scope a route needs, as a type, so the extractor can check it.
pub trait RouteScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// The scopes of routes, as types.
pub mod scope {
    use super::{RouteScope, Scope};

    pub struct Read;
    pub struct Write;
    pub struct Admin;

    impl RouteScope for Read {
        const SCOPE: Scope = Scope::Read;
    }
    impl RouteScope for Write {
        const SCOPE: Scope = Scope::Write;
    }
    impl RouteScope for Admin {
        const SCOPE: Scope = Scope::Admin;
    }
}

/// A caller whose key holds scope `S`. Extracted from the headers alone, before
/// the body: a key without the scope gets 403 without its body being read.
pub struct Authorized<S: RouteScope>(pub Principal, pub std::marker::PhantomData<S>);

impl<S: RouteScope> FromRequestParts<Arc<AppState>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require(S::SCOPE)?;
        Ok(Self(principal, std::marker::PhantomData))
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let unauthenticated =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        // `X-Api-Key` where `Authorization` cannot reach us: the Kubernetes API server's
        // service proxy (`kubectl kbeast`) keeps that header for itself.
        let secret = if let Some(value) = parts.headers.get(API_KEY_HEADER) {
            value
                .to_str()
                .map_err(|_| unauthenticated("malformed X-Api-Key header"))?
                .trim()
        } else {
            let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
                unauthenticated("missing Authorization: Bearer <key> (or X-Api-Key: <key>)")
            })?;
            let value = header
                .to_str()
                .map_err(|_| unauthenticated("malformed Authorization header"))?;
            match value.split_once(' ') {
                Some((scheme, secret)) if scheme.eq_ignore_ascii_case("bearer") => secret.trim(),
                _ => return Err(unauthenticated("the Authorization scheme must be Bearer")),
            }
        };
        let key = state
            .keys
            .authenticate(secret)
            .ok_or_else(|| unauthenticated("invalid API key"))?;
        Ok(Principal {
            key_id: key.id,
            scopes: key.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn loads_yaml_and_json_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = write(
            dir.path(),
            "keys.yaml",
            "- id: reader\n  secret: reader-secret-0123456789\n  scopes: [read]\n",
        );
        let store = KeyStore::load(&yaml).unwrap();
        assert_eq!(
            store.authenticate("reader-secret-0123456789").unwrap().id,
            "reader"
        );
        assert!(store.authenticate("reader-secret-012345678").is_none());
        assert!(store.authenticate("").is_none());

        let json = write(
            dir.path(),
            "keys.json",
            r#"[{"id":"w","secret":"writer-secret-0123456789","scopes":["write","read"]}]"#,
        );
        let store = KeyStore::load(&json).unwrap();
        assert_eq!(
            store
                .authenticate("writer-secret-0123456789")
                .unwrap()
                .scopes
                .len(),
            2
        );
    }

    #[test]
    fn rejects_weak_or_duplicate_keys_and_keeps_old_keys_on_bad_reload() {
        let dir = tempfile::tempdir().unwrap();
        let short = write(
            dir.path(),
            "a.yaml",
            "- {id: a, secret: short, scopes: [read]}\n",
        );
        assert!(KeyStore::load(&short).is_err());
        let dup = write(
            dir.path(),
            "b.yaml",
            "- {id: a, secret: aaaaaaaaaaaaaaaaaaaa, scopes: [read]}\n- {id: a, secret: bbbbbbbbbbbbbbbbbbbb, scopes: [read]}\n",
        );
        assert!(KeyStore::load(&dup).is_err());

        let path = write(
            dir.path(),
            "c.yaml",
            "- {id: a, secret: aaaaaaaaaaaaaaaaaaaa, scopes: [read]}\n",
        );
        let store = KeyStore::load(&path).unwrap();
        std::fs::write(&path, "not: [valid").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(store.authenticate("aaaaaaaaaaaaaaaaaaaa").is_some());
        std::fs::write(
            &path,
            "- {id: b, secret: bbbbbbbbbbbbbbbbbbbb, scopes: [admin]}\n",
        )
        .unwrap();
        store.reload_if_changed().unwrap();
        assert!(store.authenticate("aaaaaaaaaaaaaaaaaaaa").is_none());
        assert_eq!(store.authenticate("bbbbbbbbbbbbbbbbbbbb").unwrap().id, "b");
    }

    #[test]
    fn two_keys_with_one_secret_are_refused_naming_their_ids_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "shared-secret-0123456789";
        let path = write(
            dir.path(),
            "keys.yaml",
            &format!(
                "- {{id: reader, secret: {secret}, scopes: [read]}}\n\
                 - {{id: other, secret: other-secret-0123456789, scopes: [read]}}\n\
                 - {{id: admin, secret: {secret}, scopes: [admin]}}\n"
            ),
        );
        let error = KeyStore::load(&path).err().expect("refused").to_string();
        assert!(
            error.contains("\"reader\"") && error.contains("\"admin\""),
            "{error}"
        );
        assert!(!error.contains(secret), "{error}");
    }

    /// serde_yaml quotes the value it could not read; a secret pasted in the wrong place
    /// must not reach the log through that message.
    #[test]
    fn parse_errors_do_not_quote_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "sk-live-this-is-a-secret-0123456789";
        for content in [
            format!(r#"[{{"id": "a", "secret": "aaaaaaaaaaaaaaaaaaaa", "scopes": "{secret}"}}]"#),
            format!(r#"[{{"id": "a", "secret": "aaaaaaaaaaaaaaaaaaaa", "scopes": ["{secret}"]}}]"#),
            format!("- {{id: a, secret: [{secret}], scopes: [read]}}\n"),
            format!(r#"{{"{secret}": 1}}"#),
        ] {
            let path = write(dir.path(), "keys.yaml", &content);
            let error = KeyStore::load(&path).err().expect("invalid");
            assert!(!error.to_string().contains(secret), "{error}");
            assert!(error.to_string().contains("line 1"), "{error}");
        }
    }

    #[test]
    fn generated_file_holds_one_admin_key_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys.yaml");
        assert!(generate_keys_file(&path).unwrap());
        assert!(
            !generate_keys_file(&path).unwrap(),
            "an existing file is kept"
        );
        let store = KeyStore::load(&path).unwrap();
        let keys = store.keys.read().unwrap().clone();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].scopes, vec![Scope::Admin]);
        assert_eq!(keys[0].secret.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn admin_implies_other_scopes() {
        let admin = Principal {
            key_id: "a".into(),
            scopes: vec![Scope::Admin],
        };
        assert!(admin.require(Scope::Write).is_ok());
        let reader = Principal {
            key_id: "r".into(),
            scopes: vec![Scope::Read],
        };
        assert!(reader.require(Scope::Read).is_ok());
        assert_eq!(
            reader.require(Scope::Write).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }
}
