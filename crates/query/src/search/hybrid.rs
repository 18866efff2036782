//! Reciprocal-rank fusion: each list contributes 1 / (K + rank) for every
//! chunk it ranks. Ranks, not raw scores, are fused because BM25 scores and
//! cosine similarities are on unrelated scales.

use std::collections::HashMap;

use super::ScoredRow;

/// The customary constant from Cormack et al. (2009); dampens the weight of top ranks.
const K: f32 = 60.0;

/// Fuses ranked lists (best first) and returns the best `limit` by fused score.
pub fn reciprocal_rank_fusion(lists: &[Vec<ScoredRow>], limit: usize) -> Vec<ScoredRow> {
    let mut fused: HashMap<&str, (f32, &ScoredRow)> = HashMap::new();
    for list in lists {
        for (rank, scored) in list.iter().enumerate() {
            let contribution = 1.0 / (K + rank as f32 + 1.0);
            fused
                .entry(scored.row.chunk_id.as_str())
                .and_modify(|(score, _)| *score += contribution)
                .or_insert((contribution, scored));
        }
    }
    let mut rows: Vec<ScoredRow> = fused
        .into_values()
        .map(|(score, scored)| ScoredRow {
            row: scored.row.clone(),
            score,
        })
        .collect();
    // Ties broken by chunk id so results are deterministic.
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.row.chunk_id.cmp(&b.row.chunk_id))
    });
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChunkRow;

    fn ranked(ids: &[&str]) -> Vec<ScoredRow> {
        ids.iter()
            .map(|id| ScoredRow {
                row: ChunkRow {
                    chunk_id: id.to_string(),
                    doc_id: id.to_string(),
                    chunk_index: 0,
                    source: None,
                    text: String::new(),
                    metadata: Default::default(),
                },
                score: 0.0,
            })
            .collect()
    }

    fn ids(rows: &[ScoredRow]) -> Vec<&str> {
        rows.iter().map(|r| r.row.chunk_id.as_str()).collect()
    }

    #[test]
    fn chunks_found_by_both_lists_rank_first() {
        let fused =
            reciprocal_rank_fusion(&[ranked(&["a", "b", "c"]), ranked(&["d", "c", "b"])], 10);
        // b: 1/62 + 1/63, c: 1/63 + 1/62 tie broken by id; both beat a (1/61) and d (1/61).
        assert_eq!(ids(&fused), vec!["b", "c", "a", "d"]);
        assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 63.0)).abs() < 1e-6);
    }

    #[test]
    fn limit_and_empty_lists() {
        assert!(reciprocal_rank_fusion(&[vec![], vec![]], 5).is_empty());
        let fused = reciprocal_rank_fusion(&[ranked(&["a", "b", "c"]), vec![]], 2);
        assert_eq!(ids(&fused), vec!["a", "b"]);
    }
}
