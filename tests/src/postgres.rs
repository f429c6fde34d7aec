//! Debian's postgres, a real program nobody here wrote, run as the `postgres` user (it refuses
//! root) in a data directory of its own, on a unix socket in that directory and no TCP port.
//! Stopped, and its directory removed, on drop. Its shared memory (shared_buffers and the rest)
//! is one shared anonymous mapping, listed as `/dev/zero (deleted)` with huge_pages=off.
use std::{
    ffi::CString,
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// The path /proc/PID/maps gives a shared anonymous mapping.
pub const SHARED_ANON_PATH: &str = "/dev/zero (deleted)";

pub struct Postgres {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    /// initdb into a fresh directory, then the postmaster with `shared_buffers`; waits until it
    /// accepts connections.
    pub fn start(shared_buffers: &str) -> Self {
        let bin = bin_dir();
        let (uid, gid) = user("postgres");
        let dir = fresh_dir();
        // Owned by postgres before anything can fail: the guard below removes it.
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.join("data");
        let initdb = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ])
            .uid(uid)
            .gid(gid)
            .env("HOME", &dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        if !initdb.status.success() {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "initdb failed: {}\n{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stderr)
            );
        }
        let log = fs::File::create(dir.join("postgres.log")).unwrap();
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses="])
            .args(["-c", &format!("shared_buffers={shared_buffers}")])
            .args(["-c", "huge_pages=off", "-c", "fsync=off"])
            .uid(uid)
            .gid(gid)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("cannot start postgres: {e}");
            }
        };
        let postgres = Self { child, bin, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !postgres.ready() {
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections in 30 s; its log:\n{}",
                postgres.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        postgres
    }

    /// The postmaster's pid: every backend is its child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client program of this postgres (`pgbench`, `psql`) with the connection options.
    pub fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "postgres"])
            .env("PGDATABASE", "postgres");
        command
    }

    /// A psql session kept open: one backend, alive until the session is dropped.
    pub fn session(&self) -> Session {
        let mut child = self
            .client("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start psql: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .arg("-h")
            .arg(&self.dir)
            .arg("-q")
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: the postmaster's immediate shutdown, which ends every backend too.
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One psql connection: queries written one per line, each answering one line.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    /// Runs `sql` (statements ending in one that returns one row of one value) and returns
    /// that value.
    pub fn query(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "psql ended before answering {sql:?}");
        line.trim().to_owned()
    }

    /// The pid of the session's backend.
    pub fn backend_pid(&mut self) -> u32 {
        let pid = self.query("SELECT pg_backend_pid();");
        pid.parse()
            .unwrap_or_else(|_| panic!("pg_backend_pid() gave {pid:?}"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pages (KiB / page size) of `field` (`Rss`, `Size`) summed over the mappings of `pid` whose
/// path is `path`, from the kernel's /proc/PID/smaps.
pub fn smaps_pages(pid: u32, path: &str, field: &str) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/smaps: {e}"));
    let page_kb = page_size() / 1024;
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        if is_header(line) {
            inside = header_path(line) == Some(path);
        } else if let Some(value) = line.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
            if inside {
                let value = value.trim().trim_end_matches("kB").trim();
                kb += value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("smaps: {line:?}"));
            }
        }
    }
    kb / page_kb
}

/// A smaps header line starts with the address range `start-end`.
fn is_header(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|range| range.split_once('-'))
        .is_some_and(|(a, b)| {
            u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
        })
}

/// The path of a header line, after range, perms, offset, device and inode (it may hold
/// spaces: ` (deleted)`).
fn header_path(line: &str) -> Option<&str> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace)?..];
    }
    Some(rest.trim())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The newest postgres server installed (Debian: /usr/lib/postgresql/<version>/bin).
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no postgres server in {}/*/bin: run `cargo xtask setup` (Debian's postgresql)",
            root.display()
        )
    })
}

/// The uid and gid of `name`, from the password database.
fn user(name: &str) -> (u32, u32) {
    let c_name = CString::new(name).unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other getpw* call.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no user {name:?}: Debian's postgresql package creates it (`cargo xtask setup`)"
    );
    // SAFETY: non-null, as checked; a static buffer of libc's.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A new directory in /tmp, which the postgres user can reach (the target folder may sit
/// under a directory it cannot enter), with a path short enough for a socket's name.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(format!("/tmp/memtrace-pg.{}.{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
