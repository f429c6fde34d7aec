//! Debian's redis-server, a real program nobody here wrote (jemalloc, no frame pointers), run
//! on a loopback port for one test and stopped on drop. Its own `INFO` figures are oracles.
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{on_path, TempDir};

pub struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    /// Starts redis-server (nothing saved to disk, DEBUG allowed) and waits until it answers.
    pub fn start() -> Self {
        assert!(
            on_path("redis-server") && on_path("redis-cli"),
            "redis-server or redis-cli is missing: run `cargo xtask setup` (Debian's \
             redis-server and redis-tools)"
        );
        let dir = TempDir::new("redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let redis = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback port it listens on (for redis-benchmark).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis-cli -p PORT ARGS`'s answer; panics when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A figure of `INFO memory` (e.g. `used_memory`: bytes the allocator gave redis, as
    /// redis counts them, each block at its usable size).
    pub fn memory(&self, field: &str) -> u64 {
        let info = self.cli(&["INFO", "memory"]);
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in INFO memory:\n{info}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().unwrap().port()
}
