//! Duplicate keys in a JSON object: serde_json keeps the last one silently, so
//! `{"ids": ["a"], "ids": []}` could mean different things to a proxy that
//! checked the first and to this server. Bodies with one are refused.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The path (e.g. `documents[0].id`) of the first key that appears twice in
/// one object of `json`, or None. Invalid JSON is left to the real parser.
pub fn first_duplicate_key(json: &[u8]) -> Option<String> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let check = NoDuplicates {
        path: String::new(),
        duplicate: &duplicate,
    };
    // serde_json nests at most 128 levels deep, so the recursion is bounded.
    let _ = deserializer.deserialize_any(check);
    duplicate.into_inner()
}

struct NoDuplicates<'a> {
    path: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for NoDuplicates<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(NoDuplicates {
                path: format!("{}[{index}]", self.path),
                duplicate: self.duplicate,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                *self.duplicate.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(NoDuplicates {
                path,
                duplicate: self.duplicate,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_duplicate_key_with_its_path() {
        for (json, expected) in [
            (r#"{"ids": ["a"], "ids": []}"#, Some("ids")),
            (
                r#"{"documents": [{"id": "a"}, {"id": "b", "text": "x", "id": "c"}]}"#,
                Some("documents[1].id"),
            ),
            (
                r#"{"filter": {"metadata": {"k": 1, "k": 2}}}"#,
                Some("filter.metadata.k"),
            ),
            (
                r#"{"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 2}]}"#,
                None,
            ),
            (r#"not json"#, None),
        ] {
            assert_eq!(
                first_duplicate_key(json.as_bytes()).as_deref(),
                expected,
                "{json}"
            );
        }
    }
}
