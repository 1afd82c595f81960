//! Printing command results: aligned tables and fields for people, JSON for scripts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::SystemTime;

use anyhow::Context as _;
use fedhub_hub::admin::api::Timestamp;
use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and fields, times with how long ago (or ahead) they are.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

/// `-o, --output table|json`: global, so it may stand before the command group
/// (`fedhub -o json entry list`), after it or after the subcommand. Every level that flattens
/// it shares one value.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArg {
    /// How to print results: `table` for people, `json` for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    text.push('\n');
    print(&text)
}

/// A table of `items`, a row each as `row` makes it: columns padded to their widest cell, two
/// spaces apart.
pub fn table<T>(headers: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len() + 1)
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .fold(String::new(), |mut text, (label, value)| {
            let _ = writeln!(text, "{:<width$} {value}", format!("{label}:"));
            text
        })
}

/// `-` for nothing, else the values joined with `, `.
pub fn list<T: ToString>(values: &[T]) -> String {
    if values.is_empty() {
        "-".into()
    } else {
        values
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `-` for nothing, else the value.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A time for people: RFC 3339 and how far from now, e.g. `2025-01-31T12:00:00Z (5m ago)`.
pub fn time(value: Option<Timestamp>) -> String {
    value.map_or_else(|| "-".into(), |t| time_at(t, SystemTime::now()))
}

fn time_at(value: Timestamp, now: SystemTime) -> String {
    let relative = match value.0.duration_since(now) {
        Ok(ahead) if ahead.as_secs() > 0 => format!("in {}", short(ahead.as_secs())),
        Ok(_) => "now".into(),
        Err(past) if past.duration().as_secs() == 0 => "now".into(),
        Err(past) => format!("{} ago", short(past.duration().as_secs())),
    };
    format!("{value} ({relative})")
}

/// A duration in seconds for people: the two largest units, e.g. `1h 5m`.
pub fn short(secs: u64) -> String {
    join_units(
        units(secs)
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .take(2),
    )
}

/// `secs` in days, hours, minutes and seconds, largest first.
pub fn units(secs: u64) -> [(u64, &'static str); 4] {
    [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ]
}

/// Units for people, e.g. `1h 5m`; `0s` for none.
pub fn join_units(units: impl IntoIterator<Item = (u64, &'static str)>) -> String {
    let parts: Vec<String> = units
        .into_iter()
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "NAME"],
            &[("1", "alpha"), ("200", "b")],
            |(id, name)| vec![(*id).to_owned(), (*name).to_owned()],
        );
        assert_eq!(text, "ID   NAME\n1    alpha\n200  b\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("id", "1".into()), ("spiffe id", "x".into())]);
        assert_eq!(text, "id:        1\nspiffe id: x\n");
    }

    #[test]
    fn times_say_how_far_from_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let past = Timestamp(now - Duration::from_secs(3725));
        assert_eq!(time_at(past, now), "2023-11-14T21:11:15Z (1h 2m ago)");
        let ahead = Timestamp(now + Duration::from_secs(90_000));
        assert!(time_at(ahead, now).ends_with("(in 1d 1h)"));
        assert!(time_at(Timestamp(now), now).ends_with("(now)"));
        assert_eq!(short(59), "59s");
        assert_eq!(short(0), "0s");
    }
}
