//! Latency summaries.

use serde::{Deserialize, Serialize};

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples: the smallest
/// sample with at least p% of the samples at or below it. No interpolation,
/// so every reported value was actually observed.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Successful requests per second of wall time.
    pub qps: f64,
}

impl LatencySummary {
    /// From per-request latencies (milliseconds) and the wall time they took.
    pub fn from_samples(mut samples_ms: Vec<f64>, errors: usize, wall_secs: f64) -> Self {
        samples_ms.sort_by(f64::total_cmp);
        let at = |p| percentile(&samples_ms, p).unwrap_or(f64::NAN);
        let n = samples_ms.len();
        Self {
            requests: n,
            errors,
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            max_ms: samples_ms.last().copied().unwrap_or(f64::NAN),
            mean_ms: if n > 0 {
                samples_ms.iter().sum::<f64>() / n as f64
            } else {
                f64::NAN
            },
            qps: if wall_secs > 0.0 {
                n as f64 / wall_secs
            } else {
                f64::NAN
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        for (p, expected) in [
            (0.0, 1.0),
            (1.0, 1.0),
            (50.0, 50.0),
            (99.0, 99.0),
            (99.5, 100.0),
            (100.0, 100.0),
        ] {
            assert_eq!(percentile(&samples, p), Some(expected), "p{p}");
        }
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let s = LatencySummary::from_samples(vec![4.0, 1.0, 3.0, 2.0], 1, 2.0);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (2.0, 4.0, 4.0));
        assert_eq!((s.requests, s.errors), (4, 1));
        assert_eq!(s.mean_ms, 2.5);
        assert_eq!(s.qps, 2.0);
    }
}
