//! Tables for people (`comfy-table`); `--json` prints the API's answer as it is instead.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// A table with these headers and one row per item, each cell read by a JSON field name.
pub fn table(items: &[Value], columns: &[(&str, &str)]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(columns.iter().map(|(h, _)| *h));
    for item in items {
        t.add_row(columns.iter().map(|(_, field)| cell(item, field)));
    }
    t.to_string()
}

/// A field as text: strings bare, null empty, long text cut.
pub fn cell(item: &Value, field: &str) -> String {
    let text = match item.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Some(v) => v.to_string(),
    };
    cut(&text, 80)
}

fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut s: String = one_line.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// `key: value` lines for one object's fields.
pub fn fields(item: &Value, names: &[&str]) -> String {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    names
        .iter()
        .map(|n| {
            let v = match item.get(*n) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            format!("{n:width$}  {v}\n")
        })
        .collect()
}
