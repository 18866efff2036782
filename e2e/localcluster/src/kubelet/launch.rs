//! Starting a container's process inside its pod: the pod's network namespace (`setns`), a
//! private mount namespace with the volumes bind-mounted at their real `mountPath`s, a UTS
//! namespace with the pod's hostname, its own process group (so a signal reaches the
//! whole tree), stdout and stderr appended to the container's log file.

#![allow(unsafe_code)] // Namespaces, flock and signals are raw syscalls with no safe wrapper in std.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A bind mount into the container's mount namespace.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub netns: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    /// Appended to; `None` discards output (exec probes).
    pub log: Option<PathBuf>,
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("{} contains a NUL byte", path.display())))
}

/// A bind mount prepared before fork.
struct PreparedMount {
    source: CString,
    /// The source is opened (O_PATH) at this descriptor number in the child, after it has
    /// its own mount namespace and before any mount: a source under an earlier mount's
    /// target (the pod's volumes live under /tmp and a volume may be mounted at /tmp)
    /// stays reachable through `/proc/self/fd/<slot>`.
    slot: libc::c_int,
    slot_path: CString,
    target: CString,
    read_only: bool,
    is_file: bool,
    /// Parent directories of the target, created inside the namespace if missing.
    parents: Vec<CString>,
}

/// Everything the child needs, prepared before fork: only syscalls run between fork and exec.
struct Prepared {
    netns: Option<OwnedFd>,
    mounts: Vec<PreparedMount>,
    hostname: Vec<u8>,
    working_dir: Option<CString>,
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The highest usable descriptor number (slots count down from it; rarely in use).
fn top_fd() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        (limit.rlim_cur.min(65536) as libc::c_int) - 1
    } else {
        1023
    }
}

impl Prepared {
    fn new(spec: &LaunchSpec) -> std::io::Result<Prepared> {
        let netns = match &spec.netns {
            Some(path) => Some(OwnedFd::from(std::fs::File::open(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("network namespace {}: {e}", path.display()),
                )
            })?)),
            None => None,
        };
        let top = top_fd();
        let mut mounts = Vec::new();
        for (i, m) in spec.mounts.iter().enumerate() {
            let is_file = std::fs::metadata(&m.source)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("volume {}: {e}", m.source.display()))
                })?
                .is_file();
            let parents: Vec<CString> = m
                .target
                .ancestors()
                .skip(usize::from(is_file))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .filter(|p| !p.as_os_str().is_empty() && *p != Path::new("/"))
                .map(cstring)
                .collect::<Result<_, _>>()?;
            let slot = top - i as libc::c_int;
            mounts.push(PreparedMount {
                source: cstring(&m.source)?,
                slot,
                slot_path: cstring(Path::new(&format!("/proc/self/fd/{slot}")))?,
                target: cstring(&m.target)?,
                read_only: m.read_only,
                is_file,
                parents,
            });
        }
        Ok(Prepared {
            netns,
            mounts,
            hostname: spec.hostname.as_bytes().to_vec(),
            working_dir: spec
                .working_dir
                .as_deref()
                .map(|d| cstring(Path::new(d)))
                .transpose()?,
        })
    }

    /// Runs in the child between fork and exec.
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on memory prepared before fork.
        unsafe {
            if let Some(fd) = &self.netns {
                check(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET))?;
            }
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            // Mounts made here must not propagate back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::sethostname(
                self.hostname.as_ptr().cast(),
                self.hostname.len(),
            ))?;
            for m in &self.mounts {
                let fd = libc::open(m.source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if fd != m.slot {
                    if libc::dup3(fd, m.slot, libc::O_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
            }
            for m in &self.mounts {
                for dir in &m.parents {
                    libc::mkdir(dir.as_ptr(), 0o755);
                }
                if m.is_file {
                    let fd = libc::open(m.target.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                check(libc::mount(
                    m.slot_path.as_ptr(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if m.read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        m.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(dir) = &self.working_dir {
                check(libc::chdir(dir.as_ptr()))?;
            } else {
                check(libc::chdir(c"/".as_ptr()))?;
            }
        }
        Ok(())
    }
}

/// Starts the process; it leads its own process group (pgid = pid).
pub fn spawn(spec: &LaunchSpec) -> std::io::Result<tokio::process::Child> {
    let prepared = Prepared::new(spec)?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    match &spec.log {
        Some(path) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("log {}: {e}", path.display()))
                })?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: the closure only makes syscalls on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || prepared.enter());
    }
    cmd.spawn()
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a stale pid group is just ESRCH.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (mount namespaces), like the pod runner.
    #[tokio::test]
    async fn a_volume_can_be_mounted_over_tmp() {
        let base = std::env::temp_dir().join(format!("kbeast-launch-test-{}", std::process::id()));
        let vol = base.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("marker"), "x").unwrap();
        let spec = LaunchSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                "test -f /tmp/marker && test -f /etc/kbeast-launch-test/marker".into(),
            ],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            working_dir: None,
            netns: None,
            // The second source lies under the first target.
            mounts: vec![
                Mount {
                    source: vol.clone(),
                    target: PathBuf::from("/tmp"),
                    read_only: false,
                },
                Mount {
                    source: vol.clone(),
                    target: PathBuf::from("/etc/kbeast-launch-test"),
                    read_only: true,
                },
            ],
            hostname: "t".into(),
            log: None,
        };
        let status = spawn(&spec).unwrap().wait().await.unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        assert!(status.success());
    }
}
