//! What the bench reads from `/proc` about the processes it measures (its own included, as
//! `self`): CPU time, memory, open file descriptors and their limit, and the machine's load.

use std::fmt::Display;
use std::time::Duration;

use anyhow::Context as _;

/// The fields of a `/proc/<pid>/stat` line the bench uses, CPU times in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid (field 4).
    pub parent: u32,
    /// `utime + stime` (fields 14 and 15): CPU time of the process itself.
    pub ticks: u64,
    /// `cutime + cstime` (fields 16 and 17): CPU time of its children that were waited for.
    pub reaped_children_ticks: u64,
}

impl Stat {
    /// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
    /// itself hold spaces and parentheses, so fields are counted after the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        // Field 3 (the state) is at index 0.
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let number = |field: usize| -> Option<u64> { fields.get(field - 3)?.parse().ok() };
        Some(Self {
            parent: u32::try_from(number(4)?).ok()?,
            ticks: number(14)?.checked_add(number(15)?)?,
            reaped_children_ticks: number(16)?.checked_add(number(17)?)?,
        })
    }

    /// `/proc/<pid>/stat` of process `pid` (a number, or `self`).
    ///
    /// # Errors
    /// When the file cannot be read or is not in the expected format.
    pub fn of(pid: impl Display) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text).with_context(|| format!("{path} is not in the expected format"))
    }
}

/// `ticks` clock ticks (`USER_HZ`, as `/proc` counts CPU time) as a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(hz);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// CPU time (user + system) process `pid` (a number, or `self`) has used so far.
///
/// # Errors
/// When `/proc/<pid>/stat` cannot be read or parsed.
pub fn cpu_time(pid: impl Display) -> anyhow::Result<Duration> {
    Ok(ticks_to_duration(Stat::of(pid)?.ticks))
}

/// CPU time (user + system) used so far by process `pid` and its direct children (nginx's
/// workers); zero for what cannot be read.
pub fn cpu_time_with_children(pid: u32) -> Duration {
    let mut ticks = Stat::of(pid).map_or(0, |s| s.ticks);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(other) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(child) = Stat::of(other)
                && child.parent == pid
            {
                ticks += child.ticks;
            }
        }
    }
    ticks_to_duration(ticks)
}

/// CPU time of this process's children that have been waited for; zero when unreadable.
pub fn reaped_children_cpu_time() -> Duration {
    Stat::of("self").map_or(Duration::ZERO, |s| {
        ticks_to_duration(s.reaped_children_ticks)
    })
}

/// `VmRSS` and `VmHWM` of process `pid` (a number, or `self`) in KiB, from
/// `/proc/<pid>/status`.
///
/// # Errors
/// When the file cannot be read or lacks either field.
pub fn memory_kib(pid: impl Display) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// `Max open files` (soft limit) of process `pid`, from `/proc/<pid>/limits`.
pub fn fd_limit_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// Open file descriptors of process `pid` now.
pub fn fd_count_of(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The first `figures` figures of `/proc/loadavg` (1, 5 and 15 minute load averages), or `?`.
pub fn load_average(figures: usize) -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.split_whitespace()
                .take(figures)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// This process's scheduling autogroup, from `/proc/self/autogroup`, or `unknown`.
pub fn autogroup() -> String {
    std::fs::read_to_string("/proc/self/autogroup")
        .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_lines_past_an_odd_command_name() {
        let line = "4242 (nginx: worker) S 4241 4241 4241 0 -1 4194624 1094 0 0 0 \
                    731 229 17 4 20 0 1 0 2730511 11788288 1200 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                parent: 4241,
                ticks: 960,
                reaped_children_ticks: 21
            })
        );
        let odd = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 3 4 20 0";
        assert_eq!(
            Stat::parse(odd),
            Some(Stat {
                parent: 1,
                ticks: 300,
                reaped_children_ticks: 7
            })
        );
        assert_eq!(Stat::parse("4242 (x) S 1"), None);
        assert_eq!(Stat::parse("4242 (x) S"), None);
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let hz = rustix::param::clock_ticks_per_second();
        assert_eq!(ticks_to_duration(hz * 3), Duration::from_secs(3));
        assert!(cpu_time("self").is_ok());
        assert!(cpu_time(std::process::id()).is_ok());
        let (rss, hwm) = memory_kib("self").unwrap();
        assert!(rss > 0 && hwm >= rss);
        let pid = std::process::id();
        assert!(fd_limit_of(pid).is_some_and(|limit| limit > 0));
        assert!(fd_count_of(pid).is_some_and(|count| count >= 3));
        assert_ne!(load_average(3), "?");
        assert_eq!(load_average(1).split(' ').count(), 1);
    }
}
