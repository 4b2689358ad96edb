//! The output formats of the listings (`list`, `trust list`, `trust token list`): aligned
//! columns for people, JSON, CSV and YAML for programs, each written by the crate its format is
//! usually written with.

use serde::Serialize;

/// Output formats of the listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for people
    Table,
    /// JSON, one object
    Json,
    /// CSV with a header line
    Csv,
    /// YAML
    Yaml,
}

/// Columns as Multipass lays them out: no borders, left-aligned, each column at least `min`
/// characters wide and two wider than its widest cell, the last column not padded. Widths are
/// display widths, so wide characters keep the columns straight.
pub fn table(header: &[&str], rows: &[Vec<String>], min: &[u16]) -> String {
    use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, Width};

    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied())
        .add_rows(rows.iter().cloned());
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
        column.set_cell_alignment(CellAlignment::Left);
        if let Some(&width) = min.get(i) {
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width)));
        }
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

/// CSV with a header line; fields are quoted where they need it.
pub fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let written = writer
        .write_record(header)
        .and_then(|()| rows.iter().try_for_each(|row| writer.write_record(row)));
    written.expect("writing CSV to memory cannot fail");
    let bytes = writer
        .into_inner()
        .expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// `value` as pretty JSON, ending with a newline.
pub fn json(value: &impl Serialize) -> String {
    let mut text =
        serde_json::to_string_pretty(value).expect("the listings always serialise to JSON");
    text.push('\n');
    text
}

/// `value` as a YAML document.
pub fn yaml(value: &impl Serialize) -> String {
    yaml_serde::to_string(value).expect("the listings always serialise to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn table_columns_are_two_wider_than_their_widest_cell() {
        assert_eq!(
            table(
                &["Name", "Fingerprint"],
                &rows(&[&["alice", "abcd"], &["bob", "-"]]),
                &[]
            ),
            "Name   Fingerprint\n\
             alice  abcd\n\
             bob    -\n"
        );
    }

    #[test]
    fn table_minimum_widths() {
        assert_eq!(
            table(&["Name", "State"], &rows(&[&["a", "Running"]]), &[8]),
            "Name    State\n\
             a       Running\n"
        );
    }

    #[test]
    fn wide_characters_keep_columns_aligned() {
        let text = table(
            &["Name", "User"],
            &rows(&[&["日本語", "a"], &["abc", "b"]]),
            &[],
        );
        let lines: Vec<&str> = text.lines().collect();
        // "日本語" is three characters but six columns wide.
        assert_eq!(lines[0], "Name    User");
        assert_eq!(lines[1], "日本語  a");
        assert_eq!(lines[2], "abc     b");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(
            csv(
                &["a", "b"],
                &rows(&[&["x,y", "say \"hi\""], &["", "plain"]])
            ),
            "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n,plain\n"
        );
    }

    #[test]
    fn yaml_quotes_what_would_read_as_something_else() {
        #[derive(Serialize)]
        struct T {
            s: &'static str,
            n: &'static str,
            b: &'static str,
        }
        let text = yaml(&T {
            s: "plain",
            n: "0123",
            b: "true",
        });
        let back: std::collections::BTreeMap<String, String> = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back["n"], "0123");
        assert_eq!(back["b"], "true");
        assert_eq!(back["s"], "plain");
    }
}
