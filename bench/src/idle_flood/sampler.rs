//! Samples of the open file descriptors and RSS of the processes under attack, from `/proc`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::procfs::{fd_count_of, memory_kib};

/// Interval of the samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Peaks of one process since the last [`Sampler::take`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Peak {
    pub(super) fds: usize,
    pub(super) rss_kib: u64,
}

/// Samples the open descriptors and RSS of some processes every [`SAMPLE_INTERVAL`].
pub(super) struct Sampler {
    peaks: Arc<Mutex<HashMap<u32, Peak>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(pids: Vec<u32>) -> Self {
        let peaks = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn({
            let peaks = Arc::clone(&peaks);
            async move {
                let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
                loop {
                    ticker.tick().await;
                    for &pid in &pids {
                        let fds = fd_count_of(pid).unwrap_or(0);
                        let rss = memory_kib(pid).map_or(0, |(rss, _)| rss);
                        let mut peaks = peaks.lock().unwrap_or_else(PoisonError::into_inner);
                        let peak: &mut Peak = peaks.entry(pid).or_default();
                        peak.fds = peak.fds.max(fds);
                        peak.rss_kib = peak.rss_kib.max(rss);
                    }
                }
            }
        });
        Self { peaks, task }
    }

    /// The peaks of `pid` since the last call (or the start), and starts over.
    pub(super) fn take(&self, pid: u32) -> Peak {
        let mut peaks = self.peaks.lock().unwrap_or_else(PoisonError::into_inner);
        peaks.remove(&pid).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
