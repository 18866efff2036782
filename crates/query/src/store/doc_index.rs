//! In-memory summary of the documents in the table: counts for stats and
//! quotas, and source/metadata for resolving filters to document ids.
//! Rebuilt from the table at startup and updated by the writer after each commit.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kbeast_client::{Filter, Metadata};

#[derive(Debug, Clone, PartialEq)]
pub struct DocEntry {
    pub source: Option<String>,
    /// Shared by all documents with equal metadata (see `DocIndex::intern`).
    pub metadata: Arc<Metadata>,
    pub chunks: u64,
    /// UTF-8 bytes of the document's chunk texts plus the metadata stored with each chunk.
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct DocIndex {
    docs: HashMap<String, DocEntry>,
    chunks: u64,
    bytes: u64,
    /// Documents with a chunk id stored more than once (see `Store::remove_superseded_rows`).
    duplicated: BTreeSet<String>,
    /// One copy of each distinct metadata object, by its JSON text: documents
    /// often share metadata, and a map per document costs about 600 bytes.
    metadata: HashMap<String, Arc<Metadata>>,
}

impl DocIndex {
    /// Forgets the duplicated documents until the next reload finds them again.
    pub(crate) fn take_duplicated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.duplicated).into_iter().collect()
    }

    pub(crate) fn mark_duplicated(&mut self, id: &str) {
        self.duplicated.insert(id.to_string());
    }

    pub fn documents(&self) -> u64 {
        self.docs.len() as u64
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, id: &str) -> Option<&DocEntry> {
        self.docs.get(id)
    }

    pub(crate) fn add_chunk(
        &mut self,
        id: &str,
        source: Option<String>,
        metadata: Metadata,
        bytes: u64,
    ) {
        if !self.docs.contains_key(id) {
            let metadata = self.intern(Arc::new(metadata));
            self.docs.insert(
                id.to_string(),
                DocEntry {
                    source,
                    metadata,
                    chunks: 0,
                    bytes: 0,
                },
            );
        }
        let entry = self.docs.get_mut(id).expect("inserted above");
        entry.chunks += 1;
        entry.bytes += bytes;
        self.chunks += 1;
        self.bytes += bytes;
    }

    pub(crate) fn insert(&mut self, id: String, mut entry: DocEntry) {
        entry.metadata = self.intern(entry.metadata);
        self.chunks += entry.chunks;
        self.bytes += entry.bytes;
        if let Some(old) = self.docs.insert(id, entry) {
            self.chunks -= old.chunks;
            self.bytes -= old.bytes;
            self.release(&old.metadata);
        }
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<DocEntry> {
        let old = self.docs.remove(id)?;
        self.chunks -= old.chunks;
        self.bytes -= old.bytes;
        self.release(&old.metadata);
        Some(old)
    }

    /// The shared copy of `metadata`.
    fn intern(&mut self, metadata: Arc<Metadata>) -> Arc<Metadata> {
        let key = serde_json::to_string(&*metadata).expect("metadata serialises");
        self.metadata.entry(key).or_insert(metadata).clone()
    }

    /// Forgets the shared copy once no document holds it: `metadata` is the
    /// copy of a document just taken out of the index.
    fn release(&mut self, metadata: &Arc<Metadata>) {
        // Held by the interner and that document only.
        if Arc::strong_count(metadata) == 2 {
            let key = serde_json::to_string(&**metadata).expect("metadata serialises");
            if self
                .metadata
                .get(&key)
                .is_some_and(|shared| Arc::ptr_eq(shared, metadata))
            {
                self.metadata.remove(&key);
            }
        }
    }

    /// Ids of the documents matching every condition of `filter`, sorted.
    /// Linear in the given ids (or, without ids, in the documents).
    pub fn matching(&self, filter: &Filter) -> Vec<String> {
        // The id condition is met by construction below: given ids are looked up.
        let matches = |doc: &DocEntry| {
            filter
                .source
                .as_ref()
                .is_none_or(|s| doc.source.as_deref() == Some(s.as_str()))
                && filter
                    .metadata
                    .as_ref()
                    .is_none_or(|wanted| wanted.iter().all(|(k, v)| doc.metadata.get(k) == Some(v)))
        };
        let mut ids: Vec<String> = match &filter.ids {
            // Look up the given ids instead of scanning every document.
            Some(ids) => ids
                .iter()
                .filter(|id| self.docs.get(id.as_str()).is_some_and(matches))
                .cloned()
                .collect(),
            None => self
                .docs
                .iter()
                .filter(|(_, doc)| matches(doc))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        ids.sort();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(source: &str, metadata: serde_json::Value, chunks: u64) -> DocEntry {
        DocEntry {
            source: Some(source.to_string()),
            metadata: Arc::new(metadata.as_object().unwrap().clone()),
            chunks,
            bytes: chunks * 10,
        }
    }

    #[test]
    fn counts_follow_inserts_replacements_and_removals() {
        let mut index = DocIndex::default();
        index.insert("a".into(), entry("s", json!({}), 3));
        index.insert("b".into(), entry("s", json!({}), 2));
        index.insert("a".into(), entry("s", json!({}), 1));
        assert_eq!(
            (index.documents(), index.chunks(), index.bytes()),
            (2, 3, 30)
        );
        index.remove("b");
        assert_eq!(
            (index.documents(), index.chunks(), index.bytes()),
            (1, 1, 10)
        );
        assert!(index.remove("b").is_none());
    }

    /// 200k ids against 200k documents: quadratic matching (each document's id
    /// searched for in the list) did not finish in minutes; a lookup per id does.
    #[test]
    fn a_large_id_list_is_matched_by_lookup() {
        let mut index = DocIndex::default();
        let documents = 200_000;
        for i in 0..documents {
            let source = if i % 2 == 0 { "even" } else { "odd" };
            index.insert(format!("doc-{i}"), entry(source, json!({}), 1));
        }
        // Every document, in reverse, plus as many unknown ids.
        let ids: Vec<String> = (0..documents)
            .rev()
            .map(|i| format!("doc-{i}"))
            .chain((0..documents).map(|i| format!("unknown-{i}")))
            .collect();
        let even = Filter {
            ids: Some(ids),
            source: Some("even".into()),
            ..Filter::default()
        };
        let matched = index.matching(&even);
        assert_eq!(matched.len(), documents / 2);
        assert!(
            matched.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(
            matched
                .iter()
                .all(|id| index.get(id).unwrap().source.as_deref() == Some("even"))
        );
    }

    #[test]
    fn filters_combine_with_and() {
        let mut index = DocIndex::default();
        index.insert("a".into(), entry("wiki", json!({"lang": "en", "n": 1}), 1));
        index.insert("b".into(), entry("wiki", json!({"lang": "de"}), 1));
        index.insert("c".into(), entry("blog", json!({"lang": "en"}), 1));
        let by_source = Filter {
            source: Some("wiki".into()),
            ..Filter::default()
        };
        assert_eq!(index.matching(&by_source), vec!["a", "b"]);
        let by_meta = Filter {
            metadata: Some(json!({"lang": "en"}).as_object().unwrap().clone()),
            ..Filter::default()
        };
        assert_eq!(index.matching(&by_meta), vec!["a", "c"]);
        let both = Filter {
            source: Some("wiki".into()),
            ..by_meta.clone()
        };
        assert_eq!(index.matching(&both), vec!["a"]);
        let ids = Filter {
            ids: Some(vec!["c".into(), "zzz".into(), "b".into()]),
            ..Filter::default()
        };
        assert_eq!(index.matching(&ids), vec!["b", "c"]);
    }

    #[test]
    fn equal_metadata_is_stored_once_and_forgotten_with_its_last_document() {
        let mut index = DocIndex::default();
        index.insert("a".into(), entry("s", json!({"lang": "en"}), 1));
        index.insert("b".into(), entry("s", json!({"lang": "en"}), 1));
        index.add_chunk(
            "c",
            None,
            json!({"lang": "en"}).as_object().unwrap().clone(),
            5,
        );
        index.insert("d".into(), entry("s", json!({"lang": "de"}), 1));
        let shared = |id: &str| index.get(id).unwrap().metadata.clone();
        assert!(Arc::ptr_eq(&shared("a"), &shared("b")));
        assert!(Arc::ptr_eq(&shared("a"), &shared("c")));
        assert_eq!(index.metadata.len(), 2);
        index.remove("d");
        assert_eq!(index.metadata.len(), 1, "no document holds lang=de");
        index.insert("a".into(), entry("s", json!({"lang": "fr"}), 1));
        index.remove("b");
        assert_eq!(index.metadata.len(), 2, "c still holds lang=en");
        index.remove("c");
        assert_eq!(index.metadata.len(), 1);
        assert_eq!(index.get("a").unwrap().metadata["lang"], "fr");
    }
}
