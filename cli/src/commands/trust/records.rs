//! Rows of records in the output formats of `list`: an aligned table, JSON, CSV or YAML.

use serde_json::{Map, Value};

use crate::commands::list::{csv_field, yaml_str, Format};

/// One column: its table/CSV header and its JSON/YAML key.
pub struct Column {
    /// Header of the table and the CSV.
    pub header: &'static str,
    /// Key in JSON and YAML.
    pub key: &'static str,
    /// In the table, show at most this many characters (the other formats show everything).
    pub table_chars: Option<usize>,
    /// Whether the table shows it at all.
    pub in_table: bool,
}

impl Column {
    /// A column shown in full everywhere.
    pub const fn new(header: &'static str, key: &'static str) -> Column {
        Column {
            header,
            key,
            table_chars: None,
            in_table: true,
        }
    }
}

/// Records to print.
pub struct Records<'a> {
    /// The columns, in order.
    pub columns: &'a [Column],
    /// One value per column, per record.
    pub rows: Vec<Vec<Value>>,
    /// JSON/YAML key holding the list.
    pub root: &'static str,
    /// The table's text when there are no records.
    pub empty: &'static str,
}

/// A value as text for people. Control characters are dropped: names may come from a
/// hand-edited file, and must not drive the terminal.
fn text(value: &Value) -> String {
    let raw = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        other => other.to_string(),
    };
    raw.chars().filter(|c| !c.is_control()).collect()
}

impl Records<'_> {
    /// The whole output in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Json => self.json(),
            Format::Csv => self.csv(),
            Format::Yaml => self.yaml(),
        }
    }

    fn table(&self) -> String {
        if self.rows.is_empty() {
            return format!("{}\n", self.empty);
        }
        let shown: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].in_table)
            .collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                shown
                    .iter()
                    .map(|&i| {
                        let t = text(&row[i]);
                        let t = if t.is_empty() { "-".to_string() } else { t };
                        match self.columns[i].table_chars {
                            Some(n) => t.chars().take(n).collect(),
                            None => t,
                        }
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = shown
            .iter()
            .enumerate()
            .map(|(c, &i)| {
                cells
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.columns[i].header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |values: Vec<&str>| {
            let mut out = String::new();
            for (c, value) in values.iter().enumerate() {
                if c + 1 == values.len() {
                    out.push_str(value);
                } else {
                    out.push_str(&format!("{value:<w$}", w = widths[c] + 2));
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(shown.iter().map(|&i| self.columns[i].header).collect());
        for row in &cells {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    fn objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let map: Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.key.to_string(), v.clone()))
                    .collect();
                Value::Object(map)
            })
            .collect()
    }

    fn json(&self) -> String {
        let mut root = Map::new();
        root.insert(self.root.to_string(), Value::Array(self.objects()));
        let mut text = serde_json::to_string_pretty(&Value::Object(root))
            .expect("JSON values always serialise");
        text.push('\n');
        text
    }

    fn csv(&self) -> String {
        let header: Vec<&str> = self.columns.iter().map(|c| c.header).collect();
        let mut out = header.join(",");
        out.push('\n');
        for row in &self.rows {
            let fields: Vec<String> = row.iter().map(|v| csv_field(&text(v))).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    fn yaml(&self) -> String {
        if self.rows.is_empty() {
            return format!("{}: []\n", self.root);
        }
        let mut out = format!("{}:\n", self.root);
        for row in &self.rows {
            for (n, (column, value)) in self.columns.iter().zip(row).enumerate() {
                let lead = if n == 0 { "  - " } else { "    " };
                let scalar = match value {
                    Value::Null => "null".to_string(),
                    Value::String(s) => yaml_str(s),
                    other => other.to_string(),
                };
                out.push_str(&format!("{lead}{}: {scalar}\n", column.key));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLUMNS: [Column; 3] = [
        Column::new("Name", "name"),
        Column {
            header: "Fingerprint",
            key: "fingerprint",
            table_chars: Some(4),
            in_table: true,
        },
        Column {
            header: "Mine",
            key: "mine",
            table_chars: None,
            in_table: false,
        },
    ];

    fn records() -> Records<'static> {
        Records {
            columns: &COLUMNS,
            rows: vec![
                vec![json!("alice"), json!("abcdef"), json!(true)],
                vec![json!("b,\"x\"\u{1b}[31m"), json!(null), json!(false)],
            ],
            root: "things",
            empty: "Nothing.",
        }
    }

    #[test]
    fn table_aligns_truncates_and_strips_control_characters() {
        assert_eq!(
            records().render(Format::Table),
            "Name       Fingerprint\n\
             alice      abcd\n\
             b,\"x\"[31m  -\n"
        );
    }

    #[test]
    fn other_formats_show_everything() {
        let json: Value = serde_json::from_str(&records().render(Format::Json)).unwrap();
        assert_eq!(json["things"][0]["fingerprint"], "abcdef");
        assert_eq!(json["things"][0]["mine"], true);
        assert_eq!(json["things"][1]["fingerprint"], Value::Null);
        assert_eq!(
            records().render(Format::Csv),
            "Name,Fingerprint,Mine\nalice,abcdef,yes\n\"b,\"\"x\"\"[31m\",,no\n"
        );
        assert_eq!(
            records().render(Format::Yaml),
            "things:\n  - name: \"alice\"\n    fingerprint: \"abcdef\"\n    mine: true\n  \
             - name: \"b,\\\"x\\\"\\u001b[31m\"\n    fingerprint: null\n    mine: false\n"
        );
    }

    #[test]
    fn empty_records() {
        let empty = Records {
            rows: vec![],
            ..records()
        };
        assert_eq!(empty.render(Format::Table), "Nothing.\n");
        assert_eq!(empty.render(Format::Yaml), "things: []\n");
        assert_eq!(empty.render(Format::Csv), "Name,Fingerprint,Mine\n");
        assert_eq!(empty.render(Format::Json), "{\n  \"things\": []\n}\n");
    }
}
