//! `kubectl kbeast query`: a search with the project's read key.

use anyhow::Result;
use kbeast_client::Scope;
use kbeast_client::{SearchMode, SearchRequest, SearchResponse};

use crate::cli::Output;
use crate::output::{print, table};
use crate::query_proxy::QueryProxy;
use crate::target::Target;

pub async fn run(
    target: &Target,
    name: &str,
    text: &str,
    mode: Option<SearchMode>,
    top_k: u32,
    key: Option<String>,
    output: Output,
) -> Result<()> {
    let project = target.project(name).await?;
    let proxy = QueryProxy::connect(target, &project, Scope::Read, key).await?;
    let request = SearchRequest {
        query: text.to_string(),
        mode,
        top_k,
        filter: None,
    };
    let response: SearchResponse = proxy.post("/v1/search", &request).await?;
    if output != Output::Table {
        return print(output, &response);
    }
    print!("{}", render(&response));
    Ok(())
}

fn render(response: &SearchResponse) -> String {
    let rows = response
        .hits
        .iter()
        .enumerate()
        .map(|(rank, hit)| {
            vec![
                (rank + 1).to_string(),
                format!("{:.4}", hit.score),
                hit.doc_id.clone(),
                one_line(&hit.text, 80),
            ]
        })
        .collect();
    let mut out = table(&["RANK", "SCORE", "DOCUMENT", "TEXT"], rows);
    let mode = serde_json::to_value(response.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    out.push_str(&format!(
        "{} hits, {mode} mode{}, {} ms\n",
        response.hits.len(),
        if response.degraded {
            " (degraded: the requested mode could not be served)"
        } else {
            ""
        },
        response.took_ms
    ));
    out
}

/// `text` on one line, cut to `width` characters.
fn one_line(text: &str, width: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(width) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_text_is_flattened_and_cut() {
        assert_eq!(one_line("a\n  b\tc", 80), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
