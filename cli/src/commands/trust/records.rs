//! Rows of records in the output formats of the listings: an aligned table, JSON, CSV or YAML.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::render::{self, Format};

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

/// A value as text for people, on one line. What `trust::names` refuses in names is dropped
/// (control, invisible, bidirectional and separator characters): a daemon is not trusted to
/// have refused them, and they must not drive the terminal or reorder a row.
fn text(value: &Value) -> String {
    let raw = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        other => other.to_string(),
    };
    raw.chars()
        .filter(|&c| !trust::names::is_forbidden(c))
        .collect()
}

/// One record as a JSON/YAML mapping, its keys in column order.
struct Record<'a> {
    columns: &'a [Column],
    values: &'a [Value],
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.columns.len()))?;
        for (column, value) in self.columns.iter().zip(self.values) {
            map.serialize_entry(column.key, value)?;
        }
        map.end()
    }
}

/// The whole listing: `{root: [records]}`.
struct Listing<'a>(&'a Records<'a>);

impl Serialize for Listing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let records: Vec<Record> = self
            .0
            .rows
            .iter()
            .map(|values| Record {
                columns: self.0.columns,
                values,
            })
            .collect();
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0.root, &records)?;
        map.end()
    }
}

impl Records<'_> {
    /// The whole output in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Json => render::json(&Listing(self)),
            Format::Csv => render::csv(
                &self.columns.iter().map(|c| c.header).collect::<Vec<_>>(),
                &self
                    .rows
                    .iter()
                    .map(|row| row.iter().map(text).collect())
                    .collect::<Vec<_>>(),
            ),
            Format::Yaml => render::yaml(&Listing(self)),
        }
    }

    fn table(&self) -> String {
        if self.rows.is_empty() {
            return format!("{}\n", self.empty);
        }
        let shown: Vec<&Column> = self.columns.iter().filter(|c| c.in_table).collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .zip(row)
                    .filter(|(c, _)| c.in_table)
                    .map(|(column, value)| {
                        let t = text(value);
                        let t = if t.is_empty() { "-".to_string() } else { t };
                        match column.table_chars {
                            Some(n) => t.chars().take(n).collect(),
                            None => t,
                        }
                    })
                    .collect()
            })
            .collect();
        render::table(
            &shown.iter().map(|c| c.header).collect::<Vec<_>>(),
            &cells,
            &[],
        )
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
        let yaml = records().render(Format::Yaml);
        let back: Value = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(back, json, "{yaml}");
        // Keys in column order, not sorted.
        let name = yaml.find("name:").unwrap();
        assert!(name < yaml.find("fingerprint:").unwrap(), "{yaml}");
        assert!(yaml.find("fingerprint:").unwrap() < yaml.find("mine:").unwrap());
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
