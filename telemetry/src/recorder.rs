//! The process-wide recorder: `metrics-exporter-prometheus` for most series, and fedhub's own
//! store for the series of federation relationships, which must leave `/metrics` when their
//! relationship is deleted.
//!
//! Why a store of our own: the exporter forgets a series only after an idle timeout, and a
//! gauge such as `fedhub_federation_consecutive_failures` of a deleted relationship would keep
//! its last value (and keep an alert firing) until then. Counters and gauges labelled
//! [`REMOVABLE_LABEL`] are therefore registered here instead: each is an atomic in a map that
//! [`remove_series`] prunes, rendered after the exporter's output. A handle kept by someone
//! after its removal updates a detached atomic; the next `counter!`/`gauge!` call registers
//! the series again (which a relationship that exists again wants).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::exposition::{Family, Kind};

/// The label whose series [`remove_series`] removes: every federation metric carries the
/// relationship's foreign trust domain in it.
pub const REMOVABLE_LABEL: &str = "trust_domain";

/// Buckets of every histogram (request latencies, in seconds): 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are drained into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

type Labels = Vec<(String, String)>;
/// The series of one family by their labels, each an atomic (a counter's count, or a gauge's
/// `f64` bits).
type Series = BTreeMap<Labels, Arc<AtomicU64>>;

/// The removable series, by name and labels.
#[derive(Debug, Default)]
struct Removable {
    families: Mutex<BTreeMap<String, (Kind, Series)>>,
    descriptions: Mutex<HashMap<String, String>>,
}

impl Removable {
    fn describe(&self, name: &str, description: &str) {
        self.descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), description.to_owned());
    }

    fn series(&self, key: &Key, kind: Kind) -> Arc<AtomicU64> {
        let labels: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, series) = families
            .entry(key.name().to_owned())
            .or_insert_with(|| (kind, BTreeMap::new()));
        Arc::clone(series.entry(labels).or_default())
    }

    fn remove(&self, value: &str) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, series) in families.values_mut() {
            series.retain(|labels, _| {
                !labels
                    .iter()
                    .any(|(name, v)| name == REMOVABLE_LABEL && v == value)
            });
        }
        families.retain(|_, (_, series)| !series.is_empty());
    }

    fn render_into(&self, out: &mut String) {
        let descriptions = self
            .descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, (kind, series)) in families.iter() {
            let help = descriptions.get(name).map_or("", String::as_str);
            let mut family = Family::new(name.clone(), help, *kind);
            for (labels, value) in series {
                let raw = value.load(Ordering::Acquire);
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "counters beyond 2^53 are fine as floats"
                )]
                let value = match kind {
                    Kind::Counter => raw as f64,
                    Kind::Gauge => f64::from_bits(raw),
                };
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                family.sample(&labels, value);
            }
            family.write_to(out);
        }
    }
}

fn removable(key: &Key) -> bool {
    key.labels().any(|label| label.key() == REMOVABLE_LABEL)
}

/// The recorder installed by [`install`].
struct FedhubRecorder {
    inner: PrometheusRecorder,
    removable: Arc<Removable>,
}

impl Recorder for FedhubRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.removable.describe(key.as_str(), &description);
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.removable.describe(key.as_str(), &description);
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if removable(key) {
            Counter::from_arc(self.removable.series(key, Kind::Counter))
        } else {
            self.inner.register_counter(key, metadata)
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if removable(key) {
            Gauge::from_arc(self.removable.series(key, Kind::Gauge))
        } else {
            self.inner.register_gauge(key, metadata)
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

/// The installed recorder's output; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    removable: Arc<Removable>,
}

impl Metrics {
    /// Every series of the process in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        self.removable.render_into(&mut out);
        out
    }
}

static INSTALLED: OnceLock<Option<Metrics>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same [`Metrics`]. `None`
/// when another recorder was installed first (tests that record into their own).
pub fn install() -> Option<Metrics> {
    INSTALLED
        .get_or_init(|| {
            // `set_buckets` fails only for an empty list.
            let inner = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map_or_else(
                    |_| PrometheusBuilder::new().build_recorder(),
                    PrometheusBuilder::build_recorder,
                );
            let handle = inner.handle();
            let removable = Arc::new(Removable::default());
            let recorder = FedhubRecorder {
                inner,
                removable: Arc::clone(&removable),
            };
            metrics::set_global_recorder(recorder).ok()?;
            // Histogram samples wait in a buffer until drained into their buckets: without a
            // scrape (or with rare ones) the buffer would grow with every call measured.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            Some(Metrics { handle, removable })
        })
        .clone()
}

/// Removes every series labelled [`REMOVABLE_LABEL`]` = value` (a deleted relationship's), so
/// that they leave `/metrics` at once. Nothing happens before [`install`].
pub fn remove_series(value: &str) {
    if let Some(Some(metrics)) = INSTALLED.get() {
        metrics.removable.remove(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removable_series_are_rendered_and_removed() {
        let removable = Arc::new(Removable::default());
        let recorder = FedhubRecorder {
            inner: PrometheusBuilder::new().build_recorder(),
            removable: Arc::clone(&removable),
        };
        let metadata = Metadata::new("t", metrics::Level::INFO, None);
        recorder.describe_gauge("g".into(), None, "A gauge.".into());
        let a = Key::from_parts("g", vec![metrics::Label::new("trust_domain", "a.test")]);
        let b = Key::from_parts("g", vec![metrics::Label::new("trust_domain", "b.test")]);
        recorder.register_gauge(&a, &metadata).set(2.5);
        recorder.register_gauge(&b, &metadata).set(1.0);
        let c = Key::from_parts(
            "c_total",
            vec![metrics::Label::new("trust_domain", "a.test")],
        );
        recorder.register_counter(&c, &metadata).increment(3);
        let mut out = String::new();
        removable.render_into(&mut out);
        assert!(out.contains("# HELP g A gauge.\n# TYPE g gauge\n"), "{out}");
        assert!(out.contains("g{trust_domain=\"a.test\"} 2.5\n"), "{out}");
        assert!(
            out.contains("c_total{trust_domain=\"a.test\"} 3\n"),
            "{out}"
        );

        removable.remove("a.test");
        let mut out = String::new();
        removable.render_into(&mut out);
        assert!(!out.contains("a.test"), "{out}");
        assert!(!out.contains("c_total"), "{out}");
        assert!(out.contains("g{trust_domain=\"b.test\"} 1\n"), "{out}");
    }
}
