//! What the load generator reads about processes from Linux's `/proc`: CPU time, resident memory, the open-files
//! limit. Each reader has a pure parser beside it, tested on sample text.

use std::io;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (Linux's `USER_HZ`, 100 on every architecture that
/// Rust targets; `getconf CLK_TCK` says so).
pub const TICKS_PER_SECOND: u64 = 100;

/// `utime + stime` from the text of `/proc/<pid>/stat`: the CPU time of every thread of the process, alive or
/// ended, in clock ticks ([`TICKS_PER_SECOND`]).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3.. : state is the first here, utime (field 14) the 12th, stime (15) the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time process `pid` has used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)?;
    parse_cpu_ticks(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {path}")))
}

/// `VmRSS` from the text of `/proc/<pid>/status`, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:").split_whitespace().next()?.parse().ok()
}

/// The resident memory of process `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    parse_rss_kib(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS in {path}")))
}

/// The soft and hard limits on open files from the text of `/proc/<pid>/limits` (`u64::MAX` for `unlimited`).
pub fn parse_open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let mut values = line.trim_start_matches("Max open files").split_whitespace().map(|value| match value {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    });
    Some((values.next()??, values.next()??))
}

/// The soft and hard limits on open files of process `pid` (`"self"` for this one).
pub fn open_files_limit(pid: &str) -> io::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/limits");
    let limits = std::fs::read_to_string(&path)?;
    parse_open_files_limit(&limits)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no `Max open files` in {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_status_and_limits() {
        let stat = "4242 (chat gw (x)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 731 264 0 0 20 0 3 0 9999 1000 500";
        assert_eq!(parse_cpu_ticks(stat), Some(731 + 264));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
        let status = "Name:\tchat-gateway\nVmPeak:\t  100 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95083                95083                processes \n\
                      Max open files            20000                unlimited            files     \n";
        assert_eq!(parse_open_files_limit(limits), Some((20000, u64::MAX)));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(rss_kib(pid).unwrap() > 0);
        let (soft, hard) = open_files_limit("self").unwrap();
        assert!(soft <= hard && soft > 0);
    }
}
