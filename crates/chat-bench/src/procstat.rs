//! Process and machine statistics from `/proc`, as load.js reads them:
//! CPU seconds (`utime + stime`, fields 14 and 15 of `/proc/<pid>/stat`,
//! and each of the two on its own), `VmRSS` / `VmHWM` from
//! `/proc/<pid>/status`, and the aggregate line of `/proc/stat`. A process
//! that cannot be read gives `None` (JSON `null`).

use std::fs;

/// Clock ticks per second, from `sysconf(_SC_CLK_TCK)` (100 on Linux;
/// load.js assumes 100 and its run.sh checks `getconf CLK_TCK`).
// The one unsafe call of the workspace (the lint denies it everywhere else).
#[allow(unsafe_code)]
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_s(stat: &str, clk_tck: f64) -> Option<f64> {
    parse_cpu_times(stat, clk_tck).map(|t| t.total_s)
}

/// A process's CPU seconds in user mode and in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// `utime`: the process's own code (and its libraries').
    pub user_s: f64,
    /// `stime`: the kernel working for it (system calls, and on loopback
    /// the receiving side's TCP processing too).
    pub sys_s: f64,
    /// `utime + stime` (summed in clock ticks, as load.js does).
    pub total_s: f64,
}

/// User and system CPU seconds from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_times(stat: &str, clk_tck: f64) -> Option<CpuTimes> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. After it, field 3 (state) is index 0, so utime (14) is
    // index 11 and stime (15) index 12.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user_s: utime as f64 / clk_tck,
        sys_s: stime as f64 / clk_tck,
        total_s: (utime + stime) as f64 / clk_tck,
    })
}

/// Memory of a process, kB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mem {
    /// Resident set size now (`VmRSS`).
    pub rss_kb: Option<u64>,
    /// Peak resident set size (`VmHWM`).
    pub hwm_kb: Option<u64>,
}

/// `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
pub fn parse_mem(status: &str) -> Mem {
    let kb = |key: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse().ok()
        })
    };
    Mem {
        rss_kb: kb("VmRSS"),
        hwm_kb: kb("VmHWM"),
    }
}

/// Jiffies of all cores from the first line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineCpu {
    /// idle + iowait.
    pub idle: u64,
    /// The sum of the first eight columns.
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_machine(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().next()?;
    let cols: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    Some(MachineCpu {
        idle: cols.get(3)? + cols.get(4).copied().unwrap_or(0),
        total: cols.iter().take(8).sum(),
    })
}

/// Busy share of all cores between two readings, percent with 1 decimal.
pub fn busy_pct(a: MachineCpu, b: MachineCpu) -> Option<f64> {
    let dt = b.total.checked_sub(a.total)?;
    let di = b.idle.checked_sub(a.idle)?;
    (dt > 0).then(|| (1000.0 * dt.saturating_sub(di) as f64 / dt as f64).round() / 10.0)
}

/// CPU seconds of `pid` (`"self"` for this process).
pub fn cpu_s(pid: &str) -> Option<f64> {
    cpu_times(pid).map(|t| t.total_s)
}

/// User and system CPU seconds of `pid` (`"self"` for this process).
pub fn cpu_times(pid: &str) -> Option<CpuTimes> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_times(&text, clk_tck())
}

/// Memory of `pid` (`"self"` for this process).
pub fn mem(pid: &str) -> Mem {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_mem(&s))
        .unwrap_or_default()
}

/// The machine's CPU counters.
pub fn machine() -> Option<MachineCpu> {
    parse_machine(&fs::read_to_string("/proc/stat").ok()?)
}

/// One process's reading.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSnap {
    /// CPU seconds so far (user + system).
    pub cpu_s: Option<f64>,
    /// The same, user and system apart (read together with `cpu_s`).
    pub times: Option<CpuTimes>,
    /// Memory now.
    pub mem: Mem,
}

/// Reads `pid` (`"self"` for this process).
pub fn snap(pid: &str) -> ProcSnap {
    let times = cpu_times(pid);
    ProcSnap {
        cpu_s: times.map(|t| t.total_s),
        times,
        mem: mem(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (chat server (x)) S 1 4242 4242 0 -1 4194560 2263 0 0 0 \
                        1234 567 0 0 20 0 9 0 123456 1034321920 5000 18446744073709551615";

    #[test]
    fn cpu_from_stat_skips_the_command_name() {
        assert_eq!(parse_cpu_s(STAT, 100.0), Some(18.01));
        assert_eq!(
            parse_cpu_times(STAT, 100.0),
            Some(CpuTimes {
                user_s: 12.34,
                sys_s: 5.67,
                total_s: 18.01
            })
        );
        assert_eq!(parse_cpu_s("garbage", 100.0), None);
        assert_eq!(parse_cpu_s("1 (x) S 1 2", 100.0), None);
    }

    #[test]
    fn mem_from_status() {
        let status = "Name:\tchat-server\nVmPeak:\t  900000 kB\nVmHWM:\t   45120 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n";
        assert_eq!(
            parse_mem(status),
            Mem {
                rss_kb: Some(40960),
                hwm_kb: Some(45120)
            }
        );
        assert_eq!(parse_mem("Name:\tx\n"), Mem::default());
    }

    #[test]
    fn machine_busy() {
        let a = parse_machine("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n").expect("parses");
        assert_eq!(
            a,
            MachineCpu {
                idle: 800,
                total: 1000
            }
        );
        let b = parse_machine("cpu  200 0 200 1300 200 0 0 0 0 0\n").expect("parses");
        assert_eq!(busy_pct(a, b), Some(22.2)); // (900 - 700) / 900
        assert_eq!(busy_pct(a, a), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_s("self").is_some());
        assert!(mem("self").rss_kb.is_some_and(|kb| kb > 0));
        assert!(machine().is_some());
        assert!((clk_tck() - 100.0).abs() < f64::EPSILON || clk_tck() > 0.0);
    }
}
