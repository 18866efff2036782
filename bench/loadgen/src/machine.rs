//! Facts about the machine and build recorded with every result, and process
//! memory read from /proc.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub rustc: String,
    pub git_commit: String,
    /// Whether the working tree had uncommitted changes when measured.
    pub git_dirty: bool,
    /// Profile of the server binary, as passed by the runner.
    pub server_profile: String,
    /// Profile of this load generator.
    pub loadgen_profile: String,
}

impl MachineInfo {
    pub fn collect(server_profile: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| kib_field(&m, "MemTotal:"))
            .map_or(0, |kib| kib * 1024);
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            rustc: output("rustc", &["-V"]),
            git_commit: output("git", &["rev-parse", "HEAD"]),
            git_dirty: !output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_empty(),
            server_profile: server_profile.to_string(),
            loadgen_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        }
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A `Name:   123 kB` line of a /proc status-like file, in KiB.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set size now, summed over the process and its descendants.
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM), summed likewise.
    pub peak_rss_bytes: u64,
    /// The part of `rss_bytes` that is the process's own memory (RssAnon)…
    #[serde(default)]
    pub rss_anon_bytes: u64,
    /// …and the part that is mapped files, mostly the executable's code (RssFile).
    #[serde(default)]
    pub rss_file_bytes: u64,
    pub processes: usize,
}

/// Memory of `pid` and all its descendants (Chroma's server may fork helpers).
pub fn memory_of_tree(pid: u32) -> Memory {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        pids.extend(children(pids[i]));
        i += 1;
    }
    let mut memory = Memory::default();
    for pid in pids {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            memory.rss_bytes += kib_field(&status, "VmRSS:").unwrap_or(0) * 1024;
            memory.peak_rss_bytes += kib_field(&status, "VmHWM:").unwrap_or(0) * 1024;
            memory.rss_anon_bytes += kib_field(&status, "RssAnon:").unwrap_or(0) * 1024;
            memory.rss_file_bytes += kib_field(&status, "RssFile:").unwrap_or(0) * 1024;
            memory.processes += 1;
        }
    }
    memory
}

fn children(pid: u32) -> Vec<u32> {
    // Linux lists a thread's children here; the main thread's id equals the pid.
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn measures_this_process() {
        let memory = memory_of_tree(std::process::id());
        assert!(memory.processes >= 1);
        assert!(memory.rss_bytes > 0 && memory.peak_rss_bytes >= memory.rss_bytes);
    }
}
