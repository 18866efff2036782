//! JSON logs through `tracing`.

use tracing_subscriber::EnvFilter;

/// Installs a JSON log subscriber; `filter` uses `RUST_LOG` syntax (e.g. `info,kube=warn`).
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}
