//! The Prometheus text exposition format for families that fedhub writes itself: the series
//! kept for removal (see [`crate::remove_series`]) and the families computed at scrape time.
//!
//! ```
//! use fedhub_telemetry::exposition::Family;
//!
//! let mut out = String::new();
//! let mut family = Family::gauge("fedhub_example_seconds", "An example.");
//! family.sample(&[("kind", "x509")], 1.5);
//! family.write_to(&mut out);
//! assert_eq!(
//!     out,
//!     "# HELP fedhub_example_seconds An example.\n\
//!      ## TYPE fedhub_example_seconds gauge\n\
//!      fedhub_example_seconds{kind=\"x509\"} 1.5\n"
//! );
//! ```

use std::fmt::Write as _;

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter (the name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, help text, type and samples.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(String, f64)>,
}

impl Family {
    /// An empty family of `kind`.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// An empty gauge family.
    pub fn gauge(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, Kind::Gauge)
    }

    /// Adds a sample with `labels` (written in the order given).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut text = String::new();
        if !labels.is_empty() {
            text.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(name);
                text.push_str("=\"");
                escape_label_value(&mut text, value);
                text.push('"');
            }
            text.push('}');
        }
        self.samples.push((text, value));
        self
    }

    /// Whether the family has no sample (then [`write_to`](Self::write_to) writes nothing).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Appends the family to `out`: `# HELP`, `# TYPE` and one line per sample; nothing when
    /// it has no sample, so a family whose last series is gone leaves no trace.
    pub fn write_to(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("# HELP ");
        out.push_str(&self.name);
        out.push(' ');
        for c in self.help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        for (labels, value) in &self.samples {
            out.push_str(&self.name);
            out.push_str(labels);
            out.push(' ');
            write_value(out, *value);
            out.push('\n');
        }
    }
}

/// A sample value as Prometheus reads it (`NaN`, `+Inf`, `-Inf` spelled its way).
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_special_values_are_escaped() {
        let mut family = Family::new("x_total", "a \\ b\nc", Kind::Counter);
        family.sample(&[("a", "q\"\\\n"), ("b", "")], f64::INFINITY);
        family.sample(&[], f64::NAN);
        let mut out = String::from("up 1");
        family.write_to(&mut out);
        assert_eq!(
            out,
            "up 1\n# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"\\\\\\n\",b=\"\"} +Inf\nx_total NaN\n"
        );
    }

    #[test]
    fn an_empty_family_writes_nothing() {
        let mut out = String::new();
        Family::gauge("g", "help").write_to(&mut out);
        assert!(out.is_empty());
    }
}
