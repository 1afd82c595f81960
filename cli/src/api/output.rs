//! Output formats and the small formatting helpers the commands share.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A list for a table cell, `-` when empty.
pub use crate::output::list;
use crate::output::{join_units, units};

/// How results are printed: the one format type of the whole command line, since `-o` is a
/// global flag and clap shares its value across levels.
pub use crate::output::OutputFormat;

/// Prints `report` to stdout as pretty JSON or, for [`OutputFormat::Table`], with `table`.
///
/// # Errors
/// When stdout cannot be written.
pub fn emit<T: Serialize>(
    format: OutputFormat,
    report: &T,
    table: impl FnOnce(&T, &mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, report)?;
            writeln!(out)?;
        }
        OutputFormat::Table => table(report, &mut out)?,
    }
    out.flush()
}

/// A point in time as RFC 3339 UTC with seconds, e.g. `2026-01-31T12:00:00Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An expiry for people: the time and how far away it is.
pub fn expiry(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(left) => format!("{} (in {})", timestamp(at), rough(left)),
        Err(past) => format!("{} (EXPIRED {} ago)", timestamp(at), rough(past.duration())),
    }
}

/// A duration in its two most significant units, e.g. `364d 23h`, `59m 59s`, `5m`.
fn rough(duration: Duration) -> String {
    join_units(
        units(duration.as_secs())
            .into_iter()
            .skip_while(|(n, _)| *n == 0)
            .take(2)
            .filter(|(n, _)| *n > 0),
    )
}

/// `n` and the noun, pluralised with an `s`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// A text for a table cell, `-` when empty.
pub fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_say_how_far_away_they_are() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            expiry(now + Duration::from_millis(3_661_500), now),
            "2027-01-15T09:01:01Z (in 1h 1m)"
        );
        assert_eq!(
            expiry(now - Duration::from_secs(5), now),
            "2027-01-15T07:59:55Z (EXPIRED 5s ago)"
        );
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (300, "5m"),
            (3599, "59m 59s"),
            (86_400 + 7200 + 5, "1d 2h"),
            (364 * 86_400 + 23 * 3600 + 3599, "364d 23h"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(rough(Duration::from_secs(seconds)), shown);
        }
    }

    #[test]
    fn small_formatting_helpers() {
        assert_eq!(count(1, "certificate"), "1 certificate");
        assert_eq!(count(2, "certificate"), "2 certificates");
        assert_eq!(list::<String>(&[]), "-");
        assert_eq!(list(&["a", "b"]), "a, b");
        assert_eq!(or_dash(""), "-");
    }
}
