//! Printing: aligned tables for people, JSON or YAML for scripts.

use anyhow::Result;
use serde::Serialize;

use crate::cli::Output;

/// Prints `value` as JSON or YAML (for `Output::Table` the caller renders its own screen).
pub fn print<T: Serialize>(output: Output, value: &T) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml | Output::Table => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// Columns padded to their widest cell, indented by two spaces, as `kubectl get` prints them.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::from("  ");
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                text.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let text = table(
            &["NAME", "READY"],
            vec![
                vec!["docs-abc".into(), "true".into()],
                vec!["d".into(), "false".into()],
            ],
        );
        assert_eq!(
            text,
            "  NAME      READY\n  docs-abc  true\n  d         false\n"
        );
    }
}
