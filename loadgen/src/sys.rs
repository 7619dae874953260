//! Process limits and memory readings (Linux).

use anyhow::{anyhow, Context};

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let want = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return lim.maximum.unwrap_or(u64::MAX);
        }
    }
    lim.current.unwrap_or(u64::MAX)
}

/// The current soft open-files limit.
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {path} (is --pid {pid} running?)"))?;
    parse_vm_rss(&text).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// This process's VmRSS in KiB.
pub fn own_rss_kib() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Memory of a process and all its descendants (servers that fork per connection, such as
/// websockify): the sum of their proportional set sizes (`Pss` in /proc/PID/smaps_rollup, so
/// pages shared after fork count once), and how many processes there were.
pub fn tree_pss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").context("cannot read /proc")?.flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_ppid)
        {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut stack = vec![pid];
    let (mut kib, mut count) = (0u64, 0u64);
    while let Some(p) = stack.pop() {
        let path = format!("/proc/{p}/smaps_rollup");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                kib += parse_field_kib(&text, "Pss:").unwrap_or(0);
                count += 1;
            }
            // The root must exist; a child may have exited meanwhile.
            Err(e) if p == pid => return Err(anyhow!("cannot read {path} (is --pid {pid} running?): {e}")),
            Err(_) => continue,
        }
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    Ok((kib, count))
}

/// The parent pid from /proc/PID/stat (`pid (comm) state ppid …`; comm may contain spaces).
fn parse_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn parse_field_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_limits() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmData: 1 kB\n"),
            Some(12345)
        );
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
        assert!(own_rss_kib().unwrap() > 0);
        let raised = raise_nofile();
        assert_eq!(raised, nofile_limit());
        assert!(vm_rss_kib(u32::MAX).is_err());
        assert_eq!(parse_ppid("42 (a b) c) S 7 42 42 0"), Some(7));
        let (pss, n) = tree_pss_kib(std::process::id()).unwrap();
        assert!(pss > 0 && n >= 1);
        assert!(tree_pss_kib(u32::MAX).is_err());
    }
}
