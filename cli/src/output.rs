//! Writing to the terminal: tables, key/value views, pretty JSON and times.

use std::io::{self, Write};

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use kumo_wire::Timestamp;
use serde::Serialize;

use crate::error::Error;

/// Writes `text` to standard output (a line break is added if missing).
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(Error::Stdout)?;
    if !text.is_empty() && !text.ends_with('\n') {
        out.write_all(b"\n").map_err(Error::Stdout)?;
    }
    out.flush().map_err(Error::Stdout)
}

/// Writes `text` to standard output exactly as given (console logs).
pub fn print_raw(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(Error::Stdout)?;
    out.flush().map_err(Error::Stdout)
}

/// A note for people (hints, "shown once" warnings) on standard error, so it
/// never mixes into output that scripts read.
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// Pretty-prints a JSON body as received, keeping its key order.
pub fn pretty_json(raw: &[u8]) -> Result<String, Error> {
    let mut out = Vec::with_capacity(raw.len() * 2);
    let mut de = serde_json::Deserializer::from_slice(raw);
    let mut ser = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut de, &mut ser)
        .map_err(|e| Error::Invalid(format!("cannot print the answer as JSON: {e}")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Prints a body received from the controller as pretty JSON.
pub fn print_json(raw: &[u8]) -> Result<(), Error> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    print(&pretty_json(raw)?)
}

/// Prints a value the CLI assembled itself (for example all pages of a list).
pub fn print_json_value(value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("cannot encode JSON: {e}")))?;
    print(&text)
}

/// A borderless table with a header row, columns two spaces apart and no
/// wrapping (so that piping it keeps one row per line).
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Renders a table without trailing spaces.
pub fn render(table: &Table) -> String {
    table.lines().map(|line| line.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// A two-column key/value view (keys end with a colon).
pub fn key_values(rows: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    for (key, value) in rows {
        table.add_row([format!("{key}:"), value.clone()]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 1)).set_cell_alignment(CellAlignment::Left);
    }
    render(&table)
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// How long ago `then` was, as `12s ago`, `5m ago`, `3h ago` or `2d ago`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = (now.millis() - then.millis()).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_the_servers_key_order() {
        let pretty = pretty_json(br#"{"zeta":1,"alpha":{"b":[1,2],"a":null}}"#).expect("json");
        assert_eq!(
            pretty,
            "{\n  \"zeta\": 1,\n  \"alpha\": {\n    \"b\": [\n      1,\n      2\n    ],\n    \"a\": null\n  }\n}"
        );
    }

    #[test]
    fn tables_have_no_borders_or_trailing_spaces() {
        let mut t = table(["ID", "NAME"]);
        t.add_row(["i-1", "web"]);
        t.add_row(["i-22", "db-primary"]);
        assert_eq!(render(&t), "ID    NAME\ni-1   web\ni-22  db-primary");
    }

    #[test]
    fn ages() {
        let now = Timestamp(1_000_000_000);
        assert_eq!(ago(Timestamp(now.millis() - 12_400), now), "12s ago");
        assert_eq!(ago(Timestamp(now.millis() - 301_000), now), "5m ago");
        assert_eq!(ago(Timestamp(now.millis() - 3 * 3_600_000), now), "3h ago");
        assert_eq!(ago(Timestamp(now.millis() - 49 * 3_600_000), now), "2d ago");
        assert_eq!(ago(Timestamp(now.millis() + 5_000), now), "0s ago");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }
}
