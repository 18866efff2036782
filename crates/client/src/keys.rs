//! New API keys: random tokens and their keys-file entries ([`ApiKeyEntry`]). The operator
//! writes a project's first keys with these; `kubectl kbeast keys rotate` the next ones.

use base64::Engine;

use crate::wire::{ApiKeyEntry, Scope};

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scopes a key of this kind carries in the keys file: this one and those below it
    /// (a write key also reads).
    pub fn granted(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|s| *s <= self).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// A new random token (256 bits), prefixed by scope (`kb_r_`, `kb_w_`, `kb_a_`) so a
    /// leaked one is recognisable.
    pub fn new_token(self) -> String {
        let prefix = match self {
            Scope::Read => "kb_r_",
            Scope::Write => "kb_w_",
            Scope::Admin => "kb_a_",
        };
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source is available");
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// The keys-file entry `id` of a key of this kind with token `secret`.
    pub fn entry(self, id: impl Into<String>, secret: impl Into<String>) -> ApiKeyEntry {
        ApiKeyEntry {
            id: id.into(),
            secret: secret.into(),
            scopes: self.granted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_lower_ones_and_tokens_are_prefixed_and_distinct() {
        assert_eq!(Scope::Read.granted(), [Scope::Read]);
        assert_eq!(Scope::Admin.granted(), Scope::ALL);
        let (a, b) = (Scope::Write.new_token(), Scope::Write.new_token());
        assert!(a.starts_with("kb_w_") && a.len() == 5 + 43, "{a}");
        assert_ne!(a, b);
    }
}
