//! Pod networking with the `ip` tool: one Linux bridge per cluster instance, one network
//! namespace and veth pair per pod, pod IPs from a /24 chosen so that concurrently running
//! clusters never share one.
//!
//! Names: bridge `kblc<port>`, namespaces `kblc<port>-<n>`, host-side veths `kv<port>n<n>`.
//! `/run/kbeast-localcluster/<bridge>.pid` records the owning process, so a later start can
//! remove what a killed process left behind.

#![allow(unsafe_code)] // Namespaces, flock and signals are raw syscalls with no safe wrapper in std.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const STATE_DIR: &str = "/run/kbeast-localcluster";
/// Pod subnets are `10.233.<slot>.0/24`.
const SUBNET_PREFIX: [u8; 2] = [10, 233];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "the pod runner needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for pod network and mount namespaces; run the tests as root or leave the kubelet controller off"
    )]
    NotRoot,
    #[error("`ip {args}` failed: {message}")]
    Ip { args: String, message: String },
    #[error("no free pod subnet in 10.233.0.0/16")]
    NoSubnet,
    #[error("the cluster is stopping")]
    ShuttingDown,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetworkError::Ip {
            args: args.join(" "),
            message: format!("cannot run the `ip` tool (iproute2): {e}"),
        })?;
    if !out.status.success() {
        return Err(NetworkError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Holds an exclusive `flock` on the state directory's lock file while choosing names and
/// subnets, so that concurrent cluster starts do not pick the same slot.
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn acquire() -> Result<StateLock, NetworkError> {
        std::fs::create_dir_all(STATE_DIR)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{STATE_DIR}/net.lock"))?;
        // SAFETY: flock on an fd we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(StateLock { _file: file })
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn pid_file(bridge: &str) -> PathBuf {
    PathBuf::from(format!("{STATE_DIR}/{bridge}.pid"))
}

/// Removes bridges and namespaces of cluster processes that are gone.
fn remove_stale() {
    let Ok(links) = ip(&["-o", "link", "show", "type", "bridge"]) else {
        return;
    };
    let namespaces = ip(&["netns", "list"]).unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if !name.starts_with("kblc") {
            continue;
        }
        let owner = std::fs::read_to_string(pid_file(name))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if owner.is_some_and(process_alive) {
            continue;
        }
        tracing::info!(bridge = name, "removing a stale pod network");
        for ns in namespaces
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            if ns.starts_with(&format!("{name}-")) {
                let _ = ip(&["netns", "delete", ns]);
            }
        }
        let _ = ip(&["link", "delete", name]);
        let _ = std::fs::remove_file(pid_file(name));
    }
}

/// The cluster's bridge and pod address pool.
#[derive(Debug)]
pub struct Bridge {
    pub name: String,
    port: u16,
    slot: u8,
    free: Mutex<BTreeSet<u8>>,
    next_sandbox: std::sync::atomic::AtomicU64,
}

impl Bridge {
    /// Creates the bridge `kblc<port>` with the first free 10.233.<slot>.1/24.
    pub fn create(port: u16) -> Result<Bridge, NetworkError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(NetworkError::NotRoot);
        }
        let _lock = StateLock::acquire()?;
        remove_stale();
        let name = format!("kblc{port}");
        let routes = ip(&["-4", "route", "show"])?;
        let addresses = ip(&["-o", "-4", "addr", "show"])?;
        let slot = (0..=255u8)
            .find(|slot| {
                let net = format!("{}.{}.{slot}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
                !routes.contains(&net) && !addresses.contains(&net)
            })
            .ok_or(NetworkError::NoSubnet)?;
        let _ = ip(&["link", "delete", &name]);
        ip(&["link", "add", &name, "type", "bridge"])?;
        let mut pid = std::fs::File::create(pid_file(&name))?;
        writeln!(pid, "{}", std::process::id())?;
        let bridge = Bridge {
            name,
            port,
            slot,
            free: Mutex::new((2..=254).collect()),
            next_sandbox: std::sync::atomic::AtomicU64::new(1),
        };
        let gateway = format!("{}/24", bridge.gateway());
        ip(&["addr", "add", &gateway, "dev", &bridge.name])?;
        ip(&["link", "set", &bridge.name, "up"])?;
        Ok(bridge)
    }

    /// The bridge's own address: the pods' gateway and the node's address as pods see it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.slot, 1)
    }

    pub fn allocate(&self) -> Option<Ipv4Addr> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let host = free.pop_first()?;
        Some(Ipv4Addr::new(
            SUBNET_PREFIX[0],
            SUBNET_PREFIX[1],
            self.slot,
            host,
        ))
    }

    pub fn release(&self, ip: Ipv4Addr) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.insert(ip.octets()[3]);
    }

    /// Creates a pod's network namespace with `eth0` at `ip` behind the bridge.
    pub fn create_sandbox(&self, ip_addr: Ipv4Addr) -> Result<Sandbox, NetworkError> {
        let n = self
            .next_sandbox
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sandbox = Sandbox {
            netns: format!("{}-{n}", self.name),
            ip: ip_addr,
        };
        let veth = format!("kv{}n{n}", self.port);
        ip(&["netns", "add", &sandbox.netns])?;
        let result = (|| {
            ip(&[
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &sandbox.netns,
            ])?;
            ip(&["link", "set", &veth, "master", &self.name])?;
            ip(&["link", "set", &veth, "up"])?;
            let ns = sandbox.netns.as_str();
            let cidr = format!("{ip_addr}/24");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &self.gateway().to_string(),
            ])?;
            Ok(())
        })();
        if let Err(e) = result {
            sandbox.delete();
            return Err(e);
        }
        Ok(sandbox)
    }

    /// Removes the bridge (pods' namespaces must be gone first).
    pub fn delete(&self) {
        let _ = ip(&["link", "delete", &self.name]);
        let _ = std::fs::remove_file(pid_file(&self.name));
    }
}

/// One pod's network namespace.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Sandbox {
    /// Path of the namespace for `setns`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.netns))
    }

    /// Deletes the namespace; its veth pair goes with it.
    pub fn delete(&self) {
        let _ = ip(&["netns", "delete", &self.netns]);
    }
}
