//! Splits document text into overlapping chunks.
//!
//! Sizes count either characters (Unicode scalar values, Rust `char`s; the
//! default) or tokens, never bytes, so a chunk is never cut inside a UTF-8
//! sequence. A token is a whitespace-delimited word: scripts written without
//! spaces count a whole run as one token, so use characters for them. Text is
//! cut at paragraph breaks first, then at sentence ends, then between words,
//! and only as a last resort (characters only) inside a word. Pieces of at most
//! `size - overlap` units are packed greedily; each chunk after the first is
//! prefixed with up to `overlap` units from the end of the previous piece
//! (starting at a word boundary when there is one), so every chunk has at most
//! `size` units.

/// What chunk sizes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkUnit {
    /// Unicode scalar values.
    #[default]
    Chars,
    /// Whitespace-delimited words.
    Tokens,
}

impl ChunkUnit {
    fn measure(self, text: &str) -> usize {
        match self {
            Self::Chars => text.chars().count(),
            Self::Tokens => text.split_whitespace().count(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    size: usize,
    overlap: usize,
    unit: ChunkUnit,
}

impl ChunkConfig {
    pub const DEFAULT_SIZE: usize = 1000;
    pub const DEFAULT_OVERLAP: usize = 100;

    /// Sizes in `unit`s: at least 16 characters, or 2 tokens. `overlap` must
    /// be less than half of `size`, so chunks always make progress.
    pub fn new(size: usize, overlap: usize, unit: ChunkUnit) -> Result<Self, String> {
        let (minimum, name) = match unit {
            ChunkUnit::Chars => (16, "characters"),
            ChunkUnit::Tokens => (2, "tokens"),
        };
        if size < minimum {
            return Err(format!(
                "chunk size must be at least {minimum} {name}, got {size}"
            ));
        }
        if overlap * 2 >= size {
            return Err(format!(
                "chunk overlap ({overlap}) must be less than half the chunk size ({size})"
            ));
        }
        Ok(Self {
            size,
            overlap,
            unit,
        })
    }
}

/// The chunks of `text`, in order, trimmed; whitespace-only text has none.
pub fn chunk_text(text: &str, config: &ChunkConfig) -> Vec<String> {
    let budget = config.size - config.overlap;
    let mut atoms = Vec::new();
    split_to_budget(text, 0, Level::Paragraph, budget, config.unit, &mut atoms);

    // Greedily pack contiguous atoms into pieces of at most `budget` units.
    // Atoms start at word boundaries (or, for characters, inside an overlong
    // word), so the units of a piece are the sum of its atoms'.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<(usize, usize, usize)> = None; // (start, end, units)
    for (start, end) in atoms {
        let units = config.unit.measure(&text[start..end]);
        current = match current {
            Some((s, _, n)) if n + units <= budget => Some((s, end, n + units)),
            Some((s, e, _)) => {
                pieces.push((s, e));
                Some((start, end, units))
            }
            None => Some((start, end, units)),
        };
    }
    if let Some((s, e, _)) = current {
        pieces.push((s, e));
    }

    pieces
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| {
            let from = match (i, config.unit) {
                (0, _) => start,
                (_, ChunkUnit::Chars) => overlap_start(text, start, config.overlap),
                (_, ChunkUnit::Tokens) => token_overlap_start(text, start, config.overlap),
            };
            text[from..end].trim()
        })
        .filter(|chunk| !chunk.is_empty())
        .map(str::to_string)
        .collect()
}

/// The chunks of `text` as `chunk_text` makes them, except that a chunk
/// `fits` refuses (too many tokens for the embedding model) is chunked again at
/// half the size and overlap, until its pieces fit or cannot shrink further
/// (the model then truncates the piece, and counts it).
pub fn chunk_text_fitting(
    text: &str,
    config: &ChunkConfig,
    fits: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in chunk_text(text, config) {
        refit(chunk, config, fits, &mut out);
    }
    out
}

fn refit(chunk: String, config: &ChunkConfig, fits: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
    if fits(&chunk) {
        out.push(chunk);
        return;
    }
    match ChunkConfig::new(config.size / 2, config.overlap / 2, config.unit) {
        Ok(smaller) => {
            for piece in chunk_text(&chunk, &smaller) {
                refit(piece, &smaller, fits, out);
            }
        }
        Err(_) => out.push(chunk),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Paragraph,
    Sentence,
    Word,
    Char,
}

/// Appends byte ranges (absolute, starting at `offset`) that cover `text`
/// contiguously, each of at most `budget` units. A text of two or more
/// tokens always has a word cut, so for tokens the recursion ends at single
/// words at the latest.
fn split_to_budget(
    text: &str,
    offset: usize,
    level: Level,
    budget: usize,
    unit: ChunkUnit,
    out: &mut Vec<(usize, usize)>,
) {
    if unit.measure(text) <= budget {
        if !text.is_empty() {
            out.push((offset, offset + text.len()));
        }
        return;
    }
    let (cuts, next) = match level {
        Level::Paragraph => (cut_points(text, is_paragraph_cut), Level::Sentence),
        Level::Sentence => (cut_points(text, is_sentence_cut), Level::Word),
        Level::Word => (cut_points(text, is_word_cut), Level::Char),
        Level::Char => {
            let mut start = 0;
            let mut count = 0;
            for (i, _) in text.char_indices() {
                if count == budget {
                    out.push((offset + start, offset + i));
                    start = i;
                    count = 0;
                }
                count += 1;
            }
            out.push((offset + start, offset + text.len()));
            return;
        }
    };
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(text.len())) {
        if cut > start {
            split_to_budget(&text[start..cut], offset + start, next, budget, unit, out);
            start = cut;
        }
    }
}

/// Byte offsets where `text` may be cut: after each char for which `is_cut`
/// holds given the previous and the next char.
fn cut_points(text: &str, is_cut: fn(Option<char>, char, Option<char>) -> bool) -> Vec<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut cuts = Vec::new();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let prev = k.checked_sub(1).map(|p| chars[p].1);
        let next = chars.get(k + 1).map(|n| n.1);
        if is_cut(prev, c, next) {
            cuts.push(i + c.len_utf8());
        }
    }
    cuts
}

/// After the last newline of a blank line ("\n\n", possibly more).
fn is_paragraph_cut(prev: Option<char>, c: char, next: Option<char>) -> bool {
    c == '\n' && prev == Some('\n') && next != Some('\n')
}

/// After the whitespace that follows a sentence end.
fn is_sentence_cut(prev: Option<char>, c: char, _next: Option<char>) -> bool {
    c.is_whitespace() && matches!(prev, Some('.' | '!' | '?' | '。' | '！' | '？'))
}

fn is_word_cut(_prev: Option<char>, c: char, next: Option<char>) -> bool {
    c.is_whitespace() && !next.is_some_and(char::is_whitespace)
}

/// Start (byte offset) of the last `overlap` words before `at` (a word start).
/// Walks back from `at` only as far as those words, so chunking stays linear
/// (scanning from the text's start for every chunk was quadratic).
fn token_overlap_start(text: &str, at: usize, overlap: usize) -> usize {
    if overlap == 0 {
        return at;
    }
    let mut words = 0;
    let mut before = text[..at].char_indices().rev().peekable();
    while let Some((i, c)) = before.next() {
        let starts_a_word =
            !c.is_whitespace() && before.peek().is_none_or(|&(_, p)| p.is_whitespace());
        if starts_a_word {
            words += 1;
            if words == overlap {
                return i;
            }
        }
    }
    0
}

/// Start (byte offset) of the overlap carried into the chunk that begins at
/// `at`: up to `overlap` chars back, moved forward to a word start if possible.
fn overlap_start(text: &str, at: usize, overlap: usize) -> usize {
    if overlap == 0 {
        return at;
    }
    let before = &text[..at];
    let from = before
        .char_indices()
        .rev()
        .nth(overlap - 1)
        .map_or(0, |(i, _)| i);
    let window = &text[from..at];
    if from == 0 || before[..from].ends_with(char::is_whitespace) {
        return from;
    }
    match window.find(char::is_whitespace) {
        Some(ws) => {
            let after_ws = from + ws;
            let skip = text[after_ws..at]
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(at - after_ws);
            after_ws + skip
        }
        None => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig::new(size, overlap, ChunkUnit::Chars).unwrap()
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(ChunkConfig::new(8, 0, ChunkUnit::Chars).is_err());
        assert!(ChunkConfig::new(100, 50, ChunkUnit::Chars).is_err());
        assert!(ChunkConfig::new(100, 49, ChunkUnit::Chars).is_ok());
    }

    #[test]
    fn short_text_is_one_chunk_and_blank_text_none() {
        assert_eq!(
            chunk_text("  Hello there.  ", &config(100, 10)),
            vec!["Hello there."]
        );
        assert!(chunk_text(" \n\n \t", &config(100, 10)).is_empty());
        assert!(chunk_text("", &config(100, 10)).is_empty());
    }

    #[test]
    fn prefers_paragraph_then_sentence_boundaries() {
        let text = "First paragraph is here.\n\nSecond paragraph is here.";
        let chunks = chunk_text(text, &config(30, 0));
        assert_eq!(
            chunks,
            vec!["First paragraph is here.", "Second paragraph is here."]
        );

        let text = "One short sentence. Another short one. A third one!";
        let chunks = chunk_text(text, &config(40, 0));
        assert_eq!(
            chunks,
            vec!["One short sentence. Another short one.", "A third one!"]
        );
    }

    #[test]
    fn never_exceeds_size_and_never_splits_utf8() {
        let text =
            "日本語のテキスト。".repeat(40) + &"ü".repeat(300) + " emoji 🦀🦀🦀 " + &"x".repeat(50);
        for (size, overlap) in [(16, 0), (16, 7), (50, 10), (100, 33)] {
            let chunks = chunk_text(&text, &config(size, overlap));
            assert!(chunks.len() > 1);
            for chunk in &chunks {
                // Being a `String` proves it is valid UTF-8; also check the length bound.
                assert!(
                    chunk.chars().count() <= size,
                    "{} > {size}",
                    chunk.chars().count()
                );
            }
            // Without overlap, concatenation restores every non-whitespace char.
            if overlap == 0 {
                let joined: String = chunks
                    .concat()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let original: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                assert_eq!(joined, original);
            }
        }
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let text = (0..60)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_text(&text, &config(60, 20));
        assert!(chunks.len() > 3);
        for pair in chunks.windows(2) {
            let first_word = pair[1].split(' ').next().unwrap();
            assert!(
                pair[0].contains(first_word),
                "{:?} does not overlap {:?}",
                pair[0],
                pair[1]
            );
            // The overlap starts at a word boundary.
            assert!(pair[0].split(' ').any(|w| w == first_word));
        }
        let no_overlap = chunk_text(&text, &config(60, 0));
        assert!(no_overlap.len() < chunks.len());
    }

    fn tokens(size: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig::new(size, overlap, ChunkUnit::Tokens).unwrap()
    }

    fn token_count(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn rejects_bad_token_configs() {
        assert!(ChunkConfig::new(1, 0, ChunkUnit::Tokens).is_err());
        assert!(ChunkConfig::new(10, 5, ChunkUnit::Tokens).is_err());
        assert!(ChunkConfig::new(2, 0, ChunkUnit::Tokens).is_ok());
        // 2 is fine in tokens but not in characters.
        assert!(ChunkConfig::new(2, 0, ChunkUnit::Chars).is_err());
    }

    #[test]
    fn token_sizes_count_words_and_prefer_paragraphs_then_sentences() {
        let text = "One two three four five.\n\nSix seven eight nine ten eleven.";
        // Each paragraph fits 6 tokens; together they do not.
        assert_eq!(
            chunk_text(text, &tokens(6, 0)),
            vec![
                "One two three four five.",
                "Six seven eight nine ten eleven."
            ]
        );
        let text = "Alpha beta gamma. Delta epsilon. Zeta eta theta iota.";
        assert_eq!(
            chunk_text(text, &tokens(5, 0)),
            vec!["Alpha beta gamma. Delta epsilon.", "Zeta eta theta iota."]
        );
        // Long characters do not matter, only words.
        let long_words = format!("{} {}", "x".repeat(5000), "y".repeat(5000));
        assert_eq!(chunk_text(&long_words, &tokens(2, 0)), vec![long_words]);
    }

    #[test]
    fn token_chunks_never_exceed_size_and_keep_every_word() {
        let text = (0..500)
            .map(|i| match i % 7 {
                0 => format!("Satz{i} endet hier."),
                3 => format!("grüße{i}\n\n"),
                _ => format!("wörter{i} 🦀"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        for (size, overlap) in [(2, 0), (5, 2), (50, 10), (64, 31)] {
            let chunks = chunk_text(&text, &tokens(size, overlap));
            assert!(chunks.len() > 1);
            for chunk in &chunks {
                assert!(token_count(chunk) <= size, "{chunk:?} > {size} tokens");
            }
            if overlap == 0 {
                let joined: Vec<&str> = chunks.iter().flat_map(|c| c.split_whitespace()).collect();
                let original: Vec<&str> = text.split_whitespace().collect();
                assert_eq!(joined, original);
            }
        }
    }

    #[test]
    fn token_overlap_repeats_the_last_words() {
        let text = (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_text(&text, &tokens(10, 3));
        assert!(chunks.len() > 3);
        for pair in chunks.windows(2) {
            let previous: Vec<&str> = pair[0].split_whitespace().collect();
            let next: Vec<&str> = pair[1].split_whitespace().collect();
            assert_eq!(&next[..3], &previous[previous.len() - 3..], "{pair:?}");
        }
    }

    /// The former implementation: every word start from the beginning of the text.
    fn token_overlap_start_from_the_beginning(text: &str, at: usize, overlap: usize) -> usize {
        if overlap == 0 {
            return at;
        }
        let mut previous_is_space = true;
        let mut word_starts = Vec::new();
        for (i, c) in text[..at].char_indices() {
            if previous_is_space && !c.is_whitespace() {
                word_starts.push(i);
            }
            previous_is_space = c.is_whitespace();
        }
        word_starts
            .len()
            .checked_sub(overlap)
            .map_or(0, |first| word_starts[first])
    }

    #[test]
    fn token_overlap_walking_back_matches_scanning_from_the_start() {
        let text = "  Ünï  cödé\n\nwords, more\twords.  And\u{3000}more 語 end ";
        for at in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            for overlap in 0..8 {
                assert_eq!(
                    token_overlap_start(text, at, overlap),
                    token_overlap_start_from_the_beginning(text, at, overlap),
                    "at {at}, overlap {overlap}"
                );
            }
        }
    }

    /// 1M words in chunks of 4 tokens: 333k chunks. Scanning from the start for each chunk's
    /// overlap would read about 10^12 bytes; walking back reads a few per chunk.
    #[test]
    fn token_chunking_of_a_large_text_is_linear() {
        let text: String = (0..1_000_000).map(|i| format!("w{} ", i % 97)).collect();
        let chunks = chunk_text(&text, &tokens(4, 1));
        assert_eq!(chunks.len(), 333_334);
        assert!(chunks.iter().all(|c| token_count(c) <= 4));
        // Each chunk after the first starts with the last word of the previous one.
        for pair in chunks.windows(2).take(1000) {
            let last = pair[0].split_whitespace().last().unwrap();
            assert_eq!(pair[1].split_whitespace().next(), Some(last));
        }
    }

    #[test]
    fn chunking_is_deterministic() {
        let text = "Alpha beta gamma. ".repeat(200);
        assert_eq!(
            chunk_text(&text, &config(120, 30)),
            chunk_text(&text, &config(120, 30))
        );
    }

    #[test]
    fn chunks_the_model_cannot_read_whole_are_split_until_they_fit() {
        // A stand-in model that reads at most 12 words per input.
        let fits = |chunk: &str| chunk.split_whitespace().count() <= 12;
        let text: String = (0..50).map(|i| format!("word{i} ")).collect();
        let plain = chunk_text(&text, &config(400, 40));
        assert!(
            plain.iter().any(|c| !fits(c)),
            "the test needs an overlong chunk"
        );
        let chunks = chunk_text_fitting(&text, &config(400, 40), &fits);
        assert!(chunks.iter().all(|c| fits(c)), "{chunks:?}");
        for i in 0..50 {
            let word = format!("word{i}");
            assert!(
                chunks
                    .iter()
                    .any(|c| c.split_whitespace().any(|w| w == word)),
                "{word} was lost"
            );
        }
        // Chunks that fit are left as chunk_text makes them.
        assert_eq!(
            chunk_text_fitting(&text, &config(400, 40), &|_| true),
            plain
        );
    }

    #[test]
    fn a_chunk_that_cannot_shrink_further_is_kept_whole() {
        let text = "x".repeat(40);
        assert_eq!(
            chunk_text_fitting(&text, &config(16, 0), &|_| false),
            chunk_text(&text, &config(16, 0))
        );
    }
}
