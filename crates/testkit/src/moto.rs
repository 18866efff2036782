//! A moto S3 server (pinned by `scripts/install-test-tools.sh`) on a free port, with the few
//! bucket operations tests need, over plain std TCP (moto checks no signatures).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _log_dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto listening on `host` (`0.0.0.0` to be reachable from pod networks), or None
    /// when it is not installed (outside CI; in CI a missing moto fails the test).
    pub fn start(host: &str) -> Option<Moto> {
        let path = crate::tool_dir().join("bin/moto_server");
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing in CI: scripts/install-test-tools.sh installs it",
                path.display()
            );
            eprintln!(
                "\n!!!!!!!! SKIPPING an S3 test: {} is missing; run scripts/install-test-tools.sh !!!!!!!!\n",
                path.display()
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(log_dir.path().join("moto.log")).expect("moto log");
        let child = Command::new(&path)
            .args(["-H", host, "-p", &port.to_string()])
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning moto_server");
        let moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            _log_dir: log_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.request("GET", "/").is_none() {
            assert!(Instant::now() < deadline, "moto did not come up on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates `bucket` (idempotent).
    pub fn create_bucket(&self, bucket: &str) {
        let response = self
            .request("PUT", &format!("/{bucket}"))
            .unwrap_or_default();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "create bucket: {response}"
        );
    }

    /// Keys of the objects of `bucket` under `prefix` (first 1,000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = self
            .request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"))
            .unwrap_or_default();
        body.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The whole response (status line, headers, body), or None when nothing answers.
    fn request(&self, method: &str, path: &str) -> Option<String> {
        let address = format!("127.0.0.1:{}", self.port);
        let mut stream = TcpStream::connect(&address).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
