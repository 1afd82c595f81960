//! The heartbeat: every `agent_api.heartbeat_interval`, the agents holding a `Sync` stream on
//! this replica are recorded as seen (`last_seen_at`), all of them at once in batched writes
//! ([`fedhub_registry::Registry::touch_agents`]: one statement per 500 agents). So the write
//! rate is bounded by the interval, not by the number of streams or agents: 10 000 agents
//! with the default one minute cost 20 statements a minute. A heartbeat is bookkeeping, not a
//! change-feed event: it wakes no stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::SpiffeId;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::sync::Streams;
use super::tls::stopped;
use crate::Hub;

/// Records the agents with an open sync stream in `streams` as seen, every `interval`, until
/// `stop` turns true. The first beat comes one interval after the start: opening a stream
/// records its agent at once.
pub(super) async fn run(hub: Hub, streams: Arc<Streams>, stop: watch::Receiver<bool>) {
    let interval = hub.config().agent_api.heartbeat_interval;
    beat(interval, stop, || streams.agents(), |agents| {
        let hub = hub.clone();
        async move {
            if let Err(error) = hub
                .registry()
                .touch_agents(&agents, OffsetDateTime::now_utc())
                .await
            {
                tracing::warn!(%error, agents = agents.len(), "could not record the agents with a sync stream as seen");
            }
        }
    })
    .await;
}

/// Every `interval` until `stop`: `touch` of what `agents` lists then, unless empty. One
/// `touch` per interval at most; a slow one delays the next beat instead of piling up.
async fn beat<F: Future<Output = ()>>(
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    agents: impl Fn() -> Vec<SpiffeId>,
    mut touch: impl FnMut(Vec<SpiffeId>) -> F,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = ticks.tick() => {}
        }
        let agents = agents();
        if !agents.is_empty() {
            touch(agents).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_agents_cost_one_batched_touch_per_interval() {
        let agents: Vec<SpiffeId> = (0..10_000)
            .map(|n| SpiffeId::parse(&format!("spiffe://alpha.test/fedhub/agent/n{n}")).unwrap())
            .collect();
        let touches = Arc::new(Mutex::new(Vec::new()));
        let (stop_sender, stop) = watch::channel(false);
        let task = tokio::spawn({
            let touches = Arc::clone(&touches);
            let agents = agents.clone();
            beat(
                Duration::from_secs(60),
                stop,
                move || agents.clone(),
                move |touched| {
                    touches.lock().unwrap().push(touched.len());
                    async {}
                },
            )
        });
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(
            touches.lock().unwrap().is_empty(),
            "no beat before the first interval"
        );
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        let touches = touches.lock().unwrap().clone();
        assert_eq!(
            touches,
            vec![10_000; 10],
            "one touch of every agent per interval"
        );
        // Each touch is ceil(10 000 / 500) = 20 statements: 20 a minute, not 10 000 a second.
        assert_eq!(10_000_usize.div_ceil(fedhub_registry::TOUCH_BATCH), 20);
        stop_sender.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn no_stream_no_write() {
        let touches = Arc::new(Mutex::new(0));
        let (stop_sender, stop) = watch::channel(false);
        let task = tokio::spawn({
            let touches = Arc::clone(&touches);
            beat(Duration::from_secs(1), stop, Vec::new, move |_| {
                *touches.lock().unwrap() += 1;
                async {}
            })
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(*touches.lock().unwrap(), 0);
        stop_sender.send_replace(true);
        task.await.unwrap();
    }
}
