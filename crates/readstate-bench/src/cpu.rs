//! Server CPU time, read from `/proc/<pid>/stat` before and after each measured
//! phase, so every target's throughput comes with what it cost the machine:
//! `cpu_us_per_op` = server CPU µs / successful operations of the phase.
//!
//! A process's `utime + stime` covers all its threads; `cutime + cstime` covers its
//! children that have exited and been waited for (Redis' AOF-rewrite fork,
//! PostgreSQL backends that ended). Children still running are separate processes:
//! a [`CpuSource::Tree`] adds those whose parent is the root (PostgreSQL's backends
//! and auxiliary processes are children of the postmaster). A child that exits
//! between two samples moves its time from the live sum into the root's `cutime`,
//! so nothing is lost or counted twice.
//!
//! Ticks are `sysconf(_SC_CLK_TCK)`, 100 on Linux: read once with `getconf CLK_TCK`,
//! 100 when that fails. A 10 ms tick is fine against phases of seconds.

use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 4: the parent's pid.
    pub ppid: u32,
    /// Fields 14 and 15: user and system time of the process (all its threads), ticks.
    pub utime: u64,
    pub stime: u64,
    /// Fields 16 and 17: user and system time of its waited-for children, ticks.
    pub cutime: u64,
    pub cstime: u64,
}

impl ProcStat {
    /// The process's own CPU ticks (every thread).
    pub fn own(&self) -> u64 {
        self.utime + self.stime
    }

    /// Its own ticks plus those of its children that have exited.
    pub fn with_reaped_children(&self) -> u64 {
        self.own() + self.cutime + self.cstime
    }
}

/// Parses the text of `/proc/<pid>/stat`. The second field, the command name in
/// parentheses, may itself contain spaces and parentheses, so the fields are read
/// after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the `)`: field 3 (state) is index 0, so field n is index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(num(4)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
    })
}

/// The command name of `/proc/<pid>/stat` (between the first `(` and the last `)`).
pub fn parse_comm(text: &str) -> Option<&str> {
    let start = text.find('(')? + 1;
    let end = text.rfind(')')?;
    text.get(start..end)
}

/// `/proc/<pid>/stat` of a live process.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The command name (`comm`) of a live process.
pub fn comm_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_comm(&text).map(str::to_owned)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// The pids of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .filter(|(_, stat)| stat.ppid == parent)
        .collect()
}

/// One process (or process tree) whose CPU counts as the target's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSource {
    /// A process: its threads and its exited children.
    Process(u32),
    /// A process and its live children (PostgreSQL: the postmaster and its backends).
    Tree(u32),
}

impl CpuSource {
    /// CPU ticks used so far, or `None` when the process is gone or unreadable.
    fn ticks(&self) -> Option<u64> {
        match *self {
            CpuSource::Process(pid) => read_stat(pid).map(|s| s.with_reaped_children()),
            CpuSource::Tree(root) => {
                let own = read_stat(root)?.with_reaped_children();
                Some(own + children_of(root).iter().map(|(_, s)| s.own()).sum::<u64>())
            }
        }
    }
}

/// What a target's server CPU is read from, and in words what that covers (or why
/// it is not measured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuProbe {
    /// Summed; empty when not measured.
    pub sources: Vec<CpuSource>,
    /// What is counted, or why nothing is.
    pub basis: String,
}

impl CpuProbe {
    /// Not measured, and why.
    pub fn none(reason: impl Into<String>) -> Self {
        Self {
            sources: Vec::new(),
            basis: reason.into(),
        }
    }

    /// One process the bench started.
    pub fn process(pid: u32, what: &str) -> Self {
        Self {
            sources: vec![CpuSource::Process(pid)],
            basis: format!("utime + stime of {what} (pid {pid}, all threads) from /proc"),
        }
    }

    /// Whether anything is measured.
    pub fn is_measured(&self) -> bool {
        !self.sources.is_empty()
    }

    /// CPU time used so far by every source, in microseconds; `None` when not
    /// measured or when a source cannot be read.
    pub fn sample_us(&self) -> Option<u64> {
        if self.sources.is_empty() {
            return None;
        }
        let ticks: u64 = self
            .sources
            .iter()
            .map(CpuSource::ticks)
            .sum::<Option<u64>>()?;
        Some(ticks.saturating_mul(1_000_000) / ticks_per_second())
    }
}

/// CPU µs per operation from two samples and the operations in between.
pub fn per_op(before: Option<u64>, after: Option<u64>, ops: u64) -> Option<f64> {
    let (before, after) = (before?, after?);
    (after >= before && ops > 0).then(|| (after - before) as f64 / ops as f64)
}

/// The postmaster of the PostgreSQL backend `backend` when it runs on this
/// machine: the backend's parent, both named `postgres`.
pub fn postmaster_of(backend: u32) -> Option<u32> {
    let stat = read_stat(backend)?;
    let is_postgres = |pid: u32| comm_of(pid).is_some_and(|c| c.starts_with("postgres"));
    (is_postgres(backend) && is_postgres(stat.ppid)).then_some(stat.ppid)
}

/// Whether `host` names this machine (a loopback address or `localhost`).
pub fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || host.starts_with('/')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        // A command name with spaces and `) (` inside must not shift the fields.
        let text = "4242 (evil) (name x) S 17 4242 4242 0 -1 4194560 378 0 0 0 155 158 7 9 20 0 5 0 3536 62283776 1718";

        let stat = parse_stat(text).unwrap();

        assert_eq!(
            stat,
            ProcStat {
                ppid: 17,
                utime: 155,
                stime: 158,
                cutime: 7,
                cstime: 9,
            }
        );
        assert_eq!(stat.own(), 313);
        assert_eq!(stat.with_reaped_children(), 329);
        assert_eq!(parse_comm(text), Some("evil) (name x"));
    }

    #[test]
    fn a_truncated_or_garbled_stat_is_not_read() {
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
        assert_eq!(
            parse_stat("1 (x) S one 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1"),
            None
        );
    }

    #[test]
    fn this_process_has_a_readable_cpu_time() {
        let before = read_stat(std::process::id()).unwrap();
        let probe = CpuProbe::process(std::process::id(), "the test");

        assert!(probe.sample_us().is_some());
        assert_eq!(before.ppid, std::os::unix::process::parent_id());
        assert!(read_stat(std::process::id()).unwrap().own() >= before.own());
        assert!(ticks_per_second() > 0);
        assert_eq!(CpuProbe::none("remote").sample_us(), None);
    }

    #[test]
    fn cpu_per_op_needs_operations_and_two_samples() {
        assert_eq!(per_op(Some(1_000), Some(5_000), 100), Some(40.0));
        assert_eq!(per_op(Some(1_000), Some(5_000), 0), None);
        assert_eq!(per_op(None, Some(5_000), 10), None);
        assert_eq!(per_op(Some(6_000), Some(5_000), 10), None);
    }

    #[test]
    fn local_hosts_are_loopback_or_localhost_or_a_socket() {
        assert!(is_local_host("127.0.0.1"));
        assert!(is_local_host("localhost"));
        assert!(is_local_host("[::1]"));
        assert!(is_local_host("/var/run/postgresql"));
        assert!(!is_local_host("db.example.com"));
        assert!(!is_local_host("10.0.0.7"));
    }
}
