//! JSON logs through `tracing`. Each line carries the span it was logged in: for reconciles,
//! `reconcile` with the project, namespace and generation (`reconcile::reconcile`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs a JSON log subscriber on stdout; `filter` uses `RUST_LOG` syntax (e.g.
/// `info,kube=warn`).
pub fn init(filter: &str) {
    subscriber(filter, std::io::stdout).init();
}

fn subscriber<W>(filter: &str, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_carry_the_reconcile_span() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = subscriber("info", move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            // The span `reconcile::reconcile` opens.
            let span = tracing::info_span!(
                "reconcile",
                project = "docs",
                namespace = "team-a",
                generation = 3
            );
            let _entered = span.enter();
            tracing::info!(project = "docs", "applied children");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["span"]["name"], "reconcile", "{line}");
        assert_eq!(line["span"]["namespace"], "team-a");
        assert_eq!(line["span"]["generation"], 3);
        assert_eq!(line["fields"]["message"], "applied children");
    }
}
