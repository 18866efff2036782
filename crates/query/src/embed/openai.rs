//! The `openai` embedder: the OpenAI embeddings API (or any compatible
//! server) over HTTPS. Inputs are sent in batches; transient failures
//! (timeouts, connection errors, 429, 5xx) are retried with exponential
//! backoff, other errors are not. A circuit breaker stops calling a provider
//! that keeps failing, so searches fall back to keyword at once instead of
//! waiting out timeouts. One call (all batches, attempts and backoffs) ends
//! within `call_budget`, shorter than the HTTP request timeout, so a hanging
//! provider is recorded as a failure instead of the request being cancelled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::{EmbedError, Embedder};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// Sent as `dimensions`, so use a model that supports it (text-embedding-3-*).
    pub dimension: usize,
    pub batch_size: usize,
    /// Per attempt; attempts are also cut short by `call_budget`.
    pub timeout: Duration,
    /// The most one `embed` call may take, retries included.
    pub call_budget: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

pub struct OpenAiEmbedder {
    http: reqwest::Client,
    config: OpenAiConfig,
    model_id: String,
    breaker: CircuitBreaker,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    dimensions: usize,
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingData>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    index: usize,
    embedding: Vec<f32>,
}

/// Outcome of one HTTP attempt.
enum AttemptError {
    Transient(String),
    Permanent(String),
    /// The call budget ran out; no time is left for a retry.
    OutOfTime(String),
}

impl OpenAiEmbedder {
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Failed(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            model_id: format!("openai:{}", config.model),
            breaker: CircuitBreaker::new(config.breaker_failures, config.breaker_cooldown),
            config,
        })
    }

    async fn embed_batch(
        &self,
        texts: &[String],
        deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut attempt = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout(remaining, self.attempt(texts))
                .await
                .unwrap_or_else(|_| {
                    Err(AttemptError::OutOfTime(format!(
                        "no answer within the call budget of {} ms",
                        self.config.call_budget.as_millis()
                    )))
                });
            match outcome {
                Ok(vectors) => return Ok(vectors),
                Err(AttemptError::OutOfTime(message)) => {
                    return Err(EmbedError::Unavailable(message));
                }
                Err(AttemptError::Permanent(message)) => return Err(EmbedError::Failed(message)),
                Err(AttemptError::Transient(message)) if attempt >= self.config.max_retries => {
                    return Err(EmbedError::Unavailable(message));
                }
                Err(AttemptError::Transient(message)) => {
                    let backoff = self.config.initial_backoff * 2u32.saturating_pow(attempt);
                    if Instant::now() + backoff >= deadline {
                        return Err(EmbedError::Unavailable(message));
                    }
                    tracing::warn!(attempt, error = %message, backoff_ms = backoff.as_millis() as u64, "embedding attempt failed; retrying");
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, AttemptError> {
        let body = EmbeddingsRequest {
            model: &self.config.model,
            input: texts,
            dimensions: self.config.dimension,
            encoding_format: "float",
        };
        let mut request = self
            .http
            .post(format!(
                "{}/embeddings",
                self.config.base_url.trim_end_matches('/')
            ))
            .json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AttemptError::Transient(format!("request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            );
            return Err(if is_transient(status) {
                AttemptError::Transient(message)
            } else {
                AttemptError::Permanent(message)
            });
        }
        let parsed: EmbeddingsResponse = response
            .json()
            .await
            .map_err(|e| AttemptError::Transient(format!("reading the response: {e}")))?;
        let mut data = parsed.data;
        data.sort_by_key(|d| d.index);
        if data.len() != texts.len() || data.iter().enumerate().any(|(i, d)| d.index != i) {
            return Err(AttemptError::Permanent(format!(
                "expected {} embeddings, got {}",
                texts.len(),
                data.len()
            )));
        }
        if let Some(bad) = data
            .iter()
            .find(|d| d.embedding.len() != self.config.dimension)
        {
            return Err(AttemptError::Permanent(format!(
                "expected dimension {}, got {}",
                self.config.dimension,
                bad.embedding.len()
            )));
        }
        Ok(data.into_iter().map(|d| d.embedding).collect())
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    fn is_available(&self) -> bool {
        self.breaker.is_closed()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            // Dropped unsettled (the request was cancelled), the permit settles itself.
            let Some(permit) = self.breaker.permit() else {
                return Err(EmbedError::Unavailable(
                    "circuit open after repeated failures".into(),
                ));
            };
            let deadline = Instant::now() + self.config.call_budget;
            let mut vectors = Vec::with_capacity(texts.len());
            for batch in texts.chunks(self.config.batch_size.max(1)) {
                match self.embed_batch(batch, deadline).await {
                    Ok(batch_vectors) => vectors.extend(batch_vectors),
                    Err(error) => {
                        match error {
                            EmbedError::Unavailable(_) => permit.failed(),
                            // A rejected input says nothing against the provider: it answered.
                            EmbedError::Failed(_) => permit.succeeded(),
                        }
                        return Err(error);
                    }
                }
            }
            permit.succeeded();
            Ok(vectors)
        })
    }
}

/// Closed: calls pass. After `threshold` consecutive failed calls: open, calls
/// fail fast for `cooldown`. Then half-open: one trial call decides.
///
/// Every call holds a [`BreakerPermit`] that records its outcome; a trial
/// dropped without one (cancelled) reopens the breaker for another cooldown,
/// so the breaker can never stay half-open with no trial in flight.
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The right to make one call; settle it with `succeeded` or `failed`.
#[must_use = "a permit records the outcome of the call it allows"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    settled: bool,
}

impl BreakerPermit<'_> {
    /// The provider answered.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.record_success();
    }

    /// The provider is down, overloaded or did not answer in time.
    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.record_failure();
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        // A cancelled trial proves nothing either way: wait another cooldown, then try again.
        // A cancelled call while closed leaves the count as it was.
        if self.trial && !self.settled {
            self.breaker.reopen();
        }
    }
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// A permit if a call may go ahead now.
    pub fn permit(&self) -> Option<BreakerPermit<'_>> {
        let mut state = self.state.lock().expect("breaker lock");
        let trial = match *state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen;
                true
            }
            // While half-open, one trial call is in flight; others fail fast.
            BreakerState::Open { .. } | BreakerState::HalfOpen => return None,
        };
        Some(BreakerPermit {
            breaker: self,
            trial,
            settled: false,
        })
    }

    pub fn is_closed(&self) -> bool {
        matches!(
            *self.state.lock().expect("breaker lock"),
            BreakerState::Closed { .. }
        )
    }

    fn record_success(&self) {
        *self.state.lock().expect("breaker lock") = BreakerState::Closed { failures: 0 };
    }

    fn record_failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => BreakerState::Open {
                until: Instant::now() + self.cooldown,
            },
        };
    }

    fn reopen(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if *state == BreakerState::HalfOpen {
            *state = BreakerState::Open {
                until: Instant::now() + self.cooldown,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_after_cooldown() {
        let breaker = CircuitBreaker::new(2, Duration::from_millis(50));
        breaker.permit().expect("closed").failed();
        assert!(breaker.is_closed());
        breaker.permit().expect("closed").failed();
        assert!(breaker.permit().is_none(), "open after 2 failures");
        std::thread::sleep(Duration::from_millis(60));
        let trial = breaker.permit().expect("half-open trial allowed");
        assert!(breaker.permit().is_none(), "only one trial at a time");
        trial.failed();
        assert!(breaker.permit().is_none(), "failed trial reopens");
        std::thread::sleep(Duration::from_millis(60));
        breaker.permit().expect("trial").succeeded();
        assert!(breaker.is_closed() && breaker.permit().is_some());
    }

    #[test]
    fn a_dropped_trial_reopens_the_breaker_for_one_more_cooldown() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(50));
        breaker.permit().expect("closed").failed();
        std::thread::sleep(Duration::from_millis(60));
        drop(breaker.permit().expect("trial"));
        assert!(
            breaker.permit().is_none(),
            "open again, not stuck half-open"
        );
        std::thread::sleep(Duration::from_millis(60));
        breaker
            .permit()
            .expect("a new trial after the cooldown")
            .succeeded();
        assert!(breaker.is_closed());
    }

    #[test]
    fn a_dropped_call_while_closed_changes_nothing() {
        let breaker = CircuitBreaker::new(2, Duration::from_millis(50));
        breaker.permit().expect("closed").failed();
        drop(breaker.permit().expect("closed"));
        breaker.permit().expect("still closed").failed();
        assert!(
            breaker.permit().is_none(),
            "the dropped call was not counted"
        );
    }

    #[test]
    fn only_throttling_timeouts_and_server_errors_are_transient() {
        for status in [429, 408, 500, 502, 503] {
            assert!(
                is_transient(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                !is_transient(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }
}
