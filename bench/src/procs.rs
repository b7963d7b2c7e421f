//! What each server process costs: CPU time from `/proc/<pid>/stat` (user + system,
//! all threads) sampled before and after a run, and resident memory from
//! `/proc/<pid>/status`.
//!
//! On a shared, noisy machine requests per second follow whatever else runs; the CPU a
//! process spent per request does not, so the report gives both.

use std::fmt;
use std::io;
use std::time::Duration;

/// A process the bench watches.
#[derive(Debug, Clone)]
pub struct Watched {
    /// What the report calls it (`otpgate`, `slapd`, `redis`, `freeradius`).
    pub name: &'static str,
    pub pid: u32,
}

/// CPU time so far of each watched process.
#[derive(Debug, Clone)]
pub struct CpuSample {
    times: Vec<(&'static str, Duration)>,
}

/// The CPU each process spent between two samples.
#[derive(Debug, Clone)]
pub struct CpuSpent {
    pub times: Vec<(&'static str, Duration)>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime of `pid` (fields 14 and 15 of `/proc/<pid>/stat`, counted after the
/// command name, which may hold spaces and parentheses).
fn cpu_time(pid: u32, ticks: u64) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no command name")))?;
    // After the name: state (field 3) … utime (14), stime (15).
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no field {n}")))
    };
    let total = field(14)? + field(15)?;
    Ok(Duration::from_micros(total * 1_000_000 / ticks))
}

impl CpuSample {
    /// Samples every process of `watched` now.
    ///
    /// # Errors
    ///
    /// A process that is gone, or a `/proc` file that cannot be read.
    pub fn take(watched: &[Watched]) -> io::Result<CpuSample> {
        let ticks = ticks_per_second();
        let times = watched
            .iter()
            .map(|w| Ok((w.name, cpu_time(w.pid, ticks)?)))
            .collect::<io::Result<_>>()?;
        Ok(CpuSample { times })
    }

    /// What each process spent since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> CpuSpent {
        let times = self
            .times
            .iter()
            .map(|(name, now)| {
                let before = earlier
                    .times
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(Duration::ZERO, |(_, t)| *t);
                (*name, now.saturating_sub(before))
            })
            .collect();
        CpuSpent { times }
    }
}

impl CpuSpent {
    /// Per request, for `requests` requests: each process and the sum.
    pub fn per_request(&self, requests: u64) -> PerRequest {
        let per = |d: Duration| {
            if requests == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / requests as f64
            }
        };
        PerRequest {
            micros: self.times.iter().map(|(n, d)| (*n, per(*d))).collect(),
        }
    }
}

/// CPU microseconds per request, by process.
#[derive(Debug, Clone)]
pub struct PerRequest {
    pub micros: Vec<(&'static str, f64)>,
}

impl PerRequest {
    /// The sum over the processes.
    pub fn total(&self) -> f64 {
        self.micros.iter().map(|(_, m)| m).sum()
    }
}

impl fmt::Display for PerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cpu-us/login")?;
        for (name, micros) in &self.micros {
            write!(f, " {name} {micros:.0}")?;
        }
        write!(f, " total {:.0}", self.total())
    }
}

/// Resident memory of `pid` now and at its peak, in KiB (`VmRSS`, `VmHWM`).
///
/// # Errors
///
/// A process that is gone, or a status file without those lines.
pub fn resident_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = |key: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status: no {key}")))
    };
    Ok((value("VmRSS:")?, value("VmHWM:")?))
}

/// Commands Redis ran so far, by name (`INFO commandstats`: `evalsha`, `ping`, …).
///
/// # Errors
///
/// Redis does not answer, or answers something else than the stats.
pub fn redis_commands(port: u16) -> io::Result<Vec<(String, u64)>> {
    let reply = otpgate_tests::redis::resp_command(port, &["INFO", "commandstats"])
        .map_err(io::Error::other)?;
    let text = reply
        .as_text()
        .ok_or_else(|| io::Error::other(format!("INFO commandstats: {reply:?}")))?;
    Ok(parse_commandstats(&text))
}

/// `cmdstat_evalsha:calls=12,usec=…` lines → (`evalsha`, 12).
fn parse_commandstats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands per request between two [`redis_commands`] readings, busiest first, as
/// `evalsha 2.31 ping 0.00`.
pub fn redis_commands_per_request(
    before: &[(String, u64)],
    after: &[(String, u64)],
    requests: u64,
) -> String {
    let mut per: Vec<(&str, f64)> = after
        .iter()
        .map(|(name, calls)| {
            let earlier = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            let spent = calls.saturating_sub(earlier) as f64;
            (name.as_str(), spent / requests.max(1) as f64)
        })
        .filter(|(_, p)| *p >= 0.005)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per.iter()
        .map(|(n, p)| format!("{n} {p:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_per_request() {
        let before = parse_commandstats(
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\n\
             cmdstat_ping:calls=3,usec=1,usec_per_call=0.33\r\n",
        );
        assert_eq!(before, [("evalsha".to_owned(), 10), ("ping".to_owned(), 3)]);
        let after = parse_commandstats(
            "cmdstat_evalsha:calls=40,usec=50\r\ncmdstat_ping:calls=3,usec=1\r\n\
             cmdstat_zadd:calls=5,usec=1\r\n",
        );
        assert_eq!(
            redis_commands_per_request(&before, &after, 10),
            "evalsha 3.00 zadd 0.50"
        );
    }

    #[test]
    fn reads_this_process() {
        let me = Watched {
            name: "bench",
            pid: std::process::id(),
        };
        let before = CpuSample::take(std::slice::from_ref(&me)).unwrap();
        // Spend some CPU, so the counters must move (10 ms ticks).
        let mut x = 0u64;
        let mut spins = 0u64;
        while CpuSample::take(std::slice::from_ref(&me))
            .unwrap()
            .since(&before)
            .times[0]
            .1
            .is_zero()
        {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            spins += 1;
            assert!(spins < 10_000_000, "CPU time never moved ({x})");
        }
        let spent = CpuSample::take(&[me]).unwrap().since(&before);
        let per = spent.per_request(10);
        assert_eq!(per.micros.len(), 1);
        assert!(per.total() > 0.0);
        assert!(per.to_string().starts_with("cpu-us/login bench "));
        let (rss, peak) = resident_kib(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(cpu_time(u32::MAX, 100).is_err());
    }
}
