//! A memory cgroup for the server under test, created under this process's own cgroup
//! (v1 `memory` controller or v2 `memory.max`), where the machine allows it.

use std::path::PathBuf;

use anyhow::Context;

/// A memory cgroup with a limit; removed when dropped (after its processes are gone).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// Creates a child of this process's memory cgroup limited to `limit` bytes, or
    /// `None` when there is no writable memory controller.
    pub fn create(limit: u64) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let name = format!("sse-chaos-{}-{}", std::process::id(), limit);
        // v1: a line `N:memory:/path`.
        if let Some(path) =
            own.lines().find_map(|l| l.split(':').nth(1).filter(|c| *c == "memory").and(l.split(':').nth(2)))
        {
            let dir = PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                let group = MemoryCgroup { dir, v2: false };
                if std::fs::write(group.dir.join("memory.limit_in_bytes"), limit.to_string()).is_ok() {
                    return Some(group);
                }
            }
        }
        // v2: the `0::/path` line, with the memory controller available.
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let parent = PathBuf::from(root).join(path.trim_start_matches('/'));
            let controllers = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                continue;
            }
            let dir = parent.join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                let group = MemoryCgroup { dir, v2: true };
                if std::fs::write(group.dir.join("memory.max"), limit.to_string()).is_ok() {
                    return Some(group);
                }
            }
        }
        None
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).context("move the server into the cgroup")
    }

    /// The limit, read back.
    pub fn limit(&self) -> anyhow::Result<u64> {
        let file = if self.v2 { "memory.max" } else { "memory.limit_in_bytes" };
        Ok(std::fs::read_to_string(self.dir.join(file))?.trim().parse()?)
    }

    /// Peak usage (v1 `max_usage_in_bytes`, v2 `memory.peak` or else `memory.current`).
    pub fn peak(&self) -> anyhow::Result<u64> {
        let files: &[&str] = if self.v2 { &["memory.peak", "memory.current"] } else { &["memory.max_usage_in_bytes"] };
        let text = files.iter().find_map(|f| std::fs::read_to_string(self.dir.join(f)).ok()).context("usage")?;
        Ok(text.trim().parse()?)
    }

    /// Processes the kernel's OOM killer ended in this cgroup.
    pub fn oom_kills(&self) -> anyhow::Result<u64> {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file))?;
        Ok(text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
