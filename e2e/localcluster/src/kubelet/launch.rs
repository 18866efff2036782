//! Starting a container's process inside its pod: the pod's network namespace (`setns`), a
//! private mount namespace with the volumes bind-mounted at their real `mountPath`s, a UTS
//! namespace with the pod's hostname, its own process group (so a signal reaches the
//! whole tree), stdout and stderr appended to the container's log file.

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

/// Everything the child needs, prepared before fork: only syscalls run between fork and exec.
struct Prepared {
    netns: Option<OwnedFd>,
    mounts: Vec<(CString, CString, bool, bool, Vec<CString>)>,
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

impl Prepared {
    fn new(spec: &LaunchSpec) -> std::io::Result<Prepared> {
        let netns = match &spec.netns {
            Some(path) => Some(OwnedFd::from(std::fs::File::open(path)?)),
            None => None,
        };
        let mut mounts = Vec::new();
        for m in &spec.mounts {
            let is_file = std::fs::metadata(&m.source)?.is_file();
            // Parent directories of the target, created inside the namespace if missing.
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
            mounts.push((
                cstring(&m.source)?,
                cstring(&m.target)?,
                m.read_only,
                is_file,
                parents,
            ));
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
            for (source, target, read_only, is_file, parents) in &self.mounts {
                for dir in parents {
                    libc::mkdir(dir.as_ptr(), 0o755);
                }
                if *is_file {
                    let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
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
                .open(path)?;
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
