//! `memtrace agent`: its /metrics against a workload's own getrusage, and its refusals (a bad
//! config file, a busy port, a remote address without permission).

use std::{
    collections::HashMap,
    net::{TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tests::{
    memtrace,
    pprof_raw::{self, RawProfile},
    readelf::ElfView,
    run_workload, serial, spawn_memtrace, spawn_waiting,
    swap_env::{MemoryCgroup, SwapFile},
    Background, TempDir,
};

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The agent serving on loopback `port` with `settings` (config file lines), attached; its
/// config file lives as long as the directory returned.
fn start_agent(port: u16, settings: &str) -> (Background, TempDir) {
    let dir = TempDir::new("agent");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\n{settings}"),
    )
    .unwrap();
    let mut agent = spawn_memtrace(&["agent", "--config", config.to_str().unwrap()]);
    agent.wait_attached();
    (agent, dir)
}

/// GET `path` on the agent; the body's bytes.
fn get_bytes(port: u16, path: &str) -> Vec<u8> {
    let (status, body) =
        tests::http_get(&format!("127.0.0.1:{port}"), path).expect("GET from the agent");
    assert!(status.starts_with("HTTP/1.1 200"), "GET {path}: {status}");
    body
}

/// GET `path` on the agent; the body as text.
fn get(port: u16, path: &str) -> String {
    String::from_utf8_lossy(&get_bytes(port, path)).into_owned()
}

/// Processes alive now.
fn procfs_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count()
}

/// The value of the first sample of `metric` whose labels contain all of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn fault_series_match_the_workloads_getrusage() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let (agent, _config) = start_agent(port, "page_allocations = true\n");
    assert_eq!(get(port, "/healthz").trim(), "ok");
    let report = run_workload("fault_touch", &["20000"]);
    // The agent reads the kernel's counts every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = report.minflt as f64;
    let (counted, last) = loop {
        let last = get(port, "/metrics");
        let counted = sample(
            &last,
            "memtrace_page_faults_total",
            &["kind=\"minor\"", "comm=\"fault_touch\""],
        );
        // Faults come at the process's exit, pages with the next read of the kernel's table.
        let pages = sample(
            &last,
            "memtrace_pages_allocated_total",
            &["comm=\"fault_touch\""],
        );
        let complete =
            counted.is_some_and(|c| c >= wanted * 0.95) && pages.is_some_and(|p| p >= 20_000.0);
        if complete || Instant::now() > deadline {
            break (counted, last);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let counted = counted.unwrap_or_else(|| panic!("no fault_touch series\n{last}"));
    assert!(
        (counted - wanted).abs() <= wanted * 0.05,
        "{counted} minor faults in /metrics, getrusage says {wanted}\n{last}"
    );
    // Every fault allocated a page: the page series is there too.
    let pages = sample(
        &last,
        "memtrace_pages_allocated_total",
        &["comm=\"fault_touch\""],
    );
    assert!(pages.is_some_and(|p| p >= 18_000.0), "{last}");
    assert!(
        sample(&last, "memtrace_agent_rss_bytes", &[]).is_some_and(|r| r > 0.0),
        "{last}"
    );
}

/// `go tool pprof` reads /pprof/faults and names the function that took the faults.
#[test]
fn the_fault_profile_names_the_workloads_function() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("agent-pprof");
    let port = free_port();
    let (agent, _config) = start_agent(port, "stack_sample = 10\n");
    run_workload("fault_touch", &["20000"]);
    let profile = dir.join("faults.pb.gz");
    std::fs::write(&profile, get_bytes(port, "/pprof/faults?last=60")).unwrap();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let Some(top) = tests::go_pprof_top(&profile, &[], dir.path()) else {
        return;
    };
    assert_eq!(top.code(), 0, "{}", top.describe());
    assert!(top.stdout.contains("touch_pages"), "{}", top.describe());
}

/// Every fault's stacks taken while thousands of processes come and go: the kernel's stack
/// tables fill and are emptied, and the profile still names the workload's function.
#[test]
fn the_profile_outlives_full_stack_tables() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("agent-stack-tables");
    let port = free_port();
    let (agent, _config) = start_agent(port, "stack_sample = 1\n");
    // Each process's stacks are its own (its libraries are placed at random).
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done")
        .status()
        .expect("sh");
    assert!(status.success());
    run_workload("fault_touch", &["20000"]);
    // The next update reports the clears.
    std::thread::sleep(Duration::from_millis(1500));
    let text = get(port, "/metrics");
    let profile = dir.join("faults.pb.gz");
    std::fs::write(&profile, get_bytes(port, "/pprof/faults?last=60")).unwrap();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let clears = sample(&text, "memtrace_stack_table_clears_total", &[]);
    assert!(clears.is_some_and(|c| c >= 1.0), "no clear\n{text}");
    let Some(top) = tests::go_pprof_top(&profile, &[], dir.path()) else {
        return;
    };
    assert!(top.stdout.contains("touch_pages"), "{}", top.describe());
}

/// Debian's redis-server on a socket in a scratch folder (no port, no disk), with DEBUG
/// allowed to local clients; shut down on drop.
struct Redis {
    child: std::process::Child,
    socket: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Option<Self> {
        if !tests::on_path("redis-server") || !tests::on_path("redis-cli") {
            assert!(
                !tests::in_ci(),
                "redis-server is not on PATH and CI=true: `cargo xtask setup` installs it"
            );
            eprintln!("skipped: no redis-server (install Debian's redis-server package)");
            return None;
        }
        let socket = dir.join("redis.sock");
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local", "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let redis = Self { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while redis.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(redis)
    }

    /// `redis-cli ARGS` against this server; its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each file's reading by readelf, once.
#[derive(Default)]
struct Files(HashMap<String, ElfView>);

impl Files {
    fn get(&mut self, path: &str) -> &ElfView {
        (self.0)
            .entry(path.to_owned())
            .or_insert_with(|| ElfView::read(Path::new(path)))
    }
}

/// Checks `comm`'s samples in go's reading of a profile against readelf's reading of the files
/// they ran: every user frame in a file mapping is in a mapping carrying the file's build id;
/// memtrace names a frame wherever the file has a function symbol covering it, by that
/// symbol's name; the innermost user frame of every sample is in a file mapping (or the
/// vdso). Returns the share of sample weight whose innermost user frame the profile leaves
/// unnamed.
fn check_frames(profile: &RawProfile, comm: &str, files: &mut Files) -> f64 {
    let (mut weight, mut unnamed_weight) = (0, 0);
    for sample in profile.samples_of(comm) {
        let Some(innermost) = profile.innermost_user(sample) else {
            continue;
        };
        weight += sample.value;
        if pprof_raw::unnamed(innermost) {
            unnamed_weight += sample.value;
        }
        // (The vdso, `[vdso]`, has no file to map.)
        let pseudo = innermost
            .file
            .as_deref()
            .is_some_and(|f| f.starts_with('['));
        assert!(
            innermost.mapping.is_some() || pseudo,
            "{comm}: innermost user frame {innermost:?} has no mapping\n{}",
            profile.text
        );
        let user = (sample.locations.iter())
            .map(|id| &profile.locations[id])
            .filter(|l| !l.is_kernel());
        for location in user {
            let Some(mapping) = location.mapping.map(|id| &profile.mappings[&id]) else {
                continue;
            };
            let elf = files.get(&mapping.file);
            assert_eq!(
                elf.build_id.as_deref(),
                Some(mapping.build_id.as_str()).filter(|id| !id.is_empty()),
                "{comm}: mapping {mapping:?} and readelf -n {}",
                mapping.file
            );
            let offset = mapping.file_offset(location.address);
            let symbols = elf.functions_at(offset);
            match &location.function {
                _ if symbols.is_empty() => {}
                Some(name) => assert!(
                    symbols.contains(&name.as_str()),
                    "{comm}: {location:?} at file offset {offset:#x} of {} is named {name}, \
                     readelf says {symbols:?}",
                    mapping.file
                ),
                None => panic!(
                    "{comm}: {location:?} at file offset {offset:#x} of {} left unnamed, \
                     readelf says {symbols:?}",
                    mapping.file
                ),
            }
        }
    }
    assert!(weight > 0, "no samples of {comm}\n{}", profile.text);
    unnamed_weight as f64 / weight as f64
}

/// Processes that started before the agent are named as those started after are: redis-server
/// (Debian's: no frame pointers, symbols in .dynsym, jemalloc stripped) and a workload of
/// ours, both waiting before the agent starts. The profile carries each file's mapping (path,
/// build id, addresses), so a server can name what memtrace could not. Oracles: go tool
/// pprof's reading of the profile, readelf's of the files. And `?seconds=N` is Go's: the
/// profile of the next N seconds, nothing from before the request.
#[test]
fn processes_started_before_the_agent_are_symbolized() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("agent-before");
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    let mut workload = spawn_waiting("fault_touch", &["20000"]);
    let port = free_port();
    let (agent, _config) = start_agent(port, "stack_sample = 10\n");
    // Asked before the work starts; answered when the seconds are over.
    let asked = std::thread::spawn(move || get_bytes(port, "/pprof/faults?seconds=8"));
    // The request reaches the tracing side at its next tick (a tenth of a second).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(redis.cli(&["DEBUG", "POPULATE", "500000"]).trim(), "OK");
    workload.go();
    let during = dir.join("during.pb.gz");
    std::fs::write(&during, asked.join().unwrap()).unwrap();
    // The workload is done (and lingers idle): the next second's profile has none of it.
    let after = dir.join("after.pb.gz");
    std::fs::write(&after, get_bytes(port, "/pprof/faults?seconds=1")).unwrap();
    let workload_path = std::fs::canonicalize(tests::workload("fault_touch")).unwrap();
    workload.finish();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    drop(redis);

    let Some(profile) = RawProfile::read(&during, dir.path()) else {
        return;
    };
    let mut files = Files::default();
    let redis_unnamed = check_frames(&profile, "redis-server", &mut files);
    let workload_unnamed = check_frames(&profile, "fault_touch", &mut files);
    eprintln!(
        "innermost user frame unnamed: redis-server {:.1}%, fault_touch {:.1}% of sample weight",
        redis_unnamed * 100.0,
        workload_unnamed * 100.0
    );
    // Built with symbols: (nearly) every frame named, its own function first.
    assert!(
        workload_unnamed < 0.05,
        "fault_touch: {:.1}% unnamed\n{}",
        workload_unnamed * 100.0,
        profile.text
    );
    let innermost = |function: &str| {
        (profile.samples_of("fault_touch"))
            .filter(|s| {
                profile
                    .innermost_user(s)
                    .is_some_and(|l| l.function.as_deref() == Some(function))
            })
            .map(|s| s.value)
            .sum::<i64>()
    };
    let total: i64 = profile.samples_of("fault_touch").map(|s| s.value).sum();
    assert!(
        innermost("touch_pages") * 2 > total,
        "touch_pages is not where fault_touch faults\n{}",
        profile.text
    );
    // The workload's frames are in its own file's mapping.
    let workload_file = workload_path.to_str().unwrap();
    assert!(
        profile.mappings.values().any(|m| m.file == workload_file),
        "no mapping of {workload_file}\n{}",
        profile.text
    );

    let Some(later) = RawProfile::read(&after, dir.path()) else {
        return;
    };
    assert_eq!(
        later.samples_of("fault_touch").count(),
        0,
        "a profile asked after the workload's faults holds them\n{}",
        later.text
    );
}

/// `promtool check metrics` (Prometheus's own linter: HELP and TYPE for every family, names
/// as its text format wants them) passes on /metrics.
#[test]
fn metrics_pass_promtool() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    if !tests::on_path("promtool") {
        assert!(
            !tests::in_ci(),
            "promtool is not on PATH and CI=true: `cargo xtask setup` installs prometheus"
        );
        eprintln!("skipped: no promtool (install Debian's prometheus package)");
        return;
    }
    let port = free_port();
    let (agent, _config) = start_agent(port, "page_allocations = true\n");
    run_workload("fault_touch", &["2000"]);
    // Every family has series after the next update.
    std::thread::sleep(Duration::from_millis(1500));
    let text = get(port, "/metrics");
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(text.contains("memtrace_page_faults_total{"), "{text}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server (Debian's), started on loopback with a config that scrapes the agent
/// every second; stopped on drop.
struct PrometheusServer {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    fn start(agent_port: u16) -> Option<Self> {
        if !tests::on_path("prometheus") {
            assert!(
                !tests::in_ci(),
                "`prometheus` is not on PATH and CI=true: `cargo xtask setup` installs it"
            );
            eprintln!("skipped: no `prometheus` (install Debian's prometheus package)");
            return None;
        }
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: memtrace\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// The value of an instant query's first result, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let body = get(self.port, &format!("/api/v1/query?query={encoded}"));
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus itself scrapes the agent: the workload's minor-fault series, queried through
/// Prometheus's HTTP API, is within 5% of the workload's getrusage. Heap profiling is on
/// (heap_peak's, run meanwhile): it leaves the series whole, and its own figures reach
/// Prometheus too.
#[test]
fn prometheus_sees_the_workloads_faults() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let agent_port = free_port();
    let mut heap_workload = tests::spawn_waiting("heap_peak", &[]);
    let (agent, _config) = start_agent(agent_port, "[heap]\nprocesses = [\"heap_peak\"]\n");
    let Some(prometheus) = PrometheusServer::start(agent_port) else {
        return;
    };
    wait_for_metric(agent_port, "memtrace_heap_profiled_processes", &[], 1.0, 10);
    heap_workload.go();
    let report = run_workload("fault_touch", &["20000"]);
    let wanted = report.minflt as f64;
    let promql = "sum(memtrace_page_faults_total{comm=\"fault_touch\",kind=\"minor\"})";
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = prometheus.query(promql);
        if seen.is_some_and(|v| v >= wanted * 0.95) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let heap_stacks = loop {
        let stacks = prometheus.query("memtrace_heap_stacks");
        if stacks.is_some_and(|v| v >= 3.0) || Instant::now() > deadline {
            break stacks;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(prometheus);
    heap_workload.finish();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    // grow_a, grow_b and grow_c at least.
    assert!(
        heap_stacks.is_some_and(|v| v >= 3.0),
        "Prometheus has memtrace_heap_stacks {heap_stacks:?}"
    );
    let seen = seen.unwrap_or_else(|| panic!("Prometheus has no value for {promql}"));
    assert!(
        (seen - wanted).abs() <= wanted * 0.05,
        "Prometheus says {seen} minor faults, getrusage {wanted}"
    );
}

/// An OOM kill in a memory cgroup shows in memtrace_oom_kills_total, under the victim's
/// name and cgroup.
#[test]
fn an_oom_kill_is_counted() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let (agent, _config) = start_agent(port, "");
    let cgroup = MemoryCgroup::without_swap(32);
    let status = cgroup.oom_victim().status().expect("sh");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not OOM-killed: {status}"
    );
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (kills, text) = loop {
        let text = get(port, "/metrics");
        let kills = sample(
            &text,
            "memtrace_oom_kills_total",
            &["comm=\"fault_touch\"", &name],
        );
        if kills.is_some() || Instant::now() > deadline {
            break (kills, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(kills, Some(1.0), "{text}");
}

/// 1,000 short-lived processes, each with a name of its own: the series stay within the
/// configured bound, and the rest go to comm="other" rather than nowhere.
#[test]
fn series_stay_bounded_under_process_churn() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("agent-churn");
    let port = free_port();
    let max_series = 50;
    // Names of their own: the kernel names a process after the file it execs.
    let names = dir.join("names");
    std::fs::create_dir_all(&names).unwrap();
    let processes = 1000;
    for i in 0..processes {
        std::os::unix::fs::symlink("/bin/true", names.join(format!("churn{i}"))).unwrap();
    }
    let settings = format!("max_series = {max_series}\npage_allocations = true\n");
    let (agent, _config) = start_agent(port, &settings);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {processes} ]; do {}/churn$i; i=$((i+1)); done",
            names.display()
        ))
        .status()
        .expect("sh");
    assert!(status.success());
    // Two reads of the kernel's counts after the last exit.
    std::thread::sleep(Duration::from_millis(2500));
    let text = get(port, "/metrics");
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("memtrace_page_faults_total{") && l.contains("kind=\"minor\""))
        .collect();
    assert!(
        series.len() <= max_series + 1,
        "{} minor-fault series, the bound is {max_series} (+ other)\n{text}",
        series.len()
    );
    // The exited processes left the kernel's table and the agent's memory.
    let live = procfs_processes();
    for (metric, labels) in [
        ("memtrace_bpf_map_entries", &["map=\"page_counts\""][..]),
        ("memtrace_agent_processes_held", &[][..]),
    ] {
        let held = sample(&text, metric, labels);
        assert!(
            held.is_some_and(|h| h <= (live + 100) as f64),
            "{metric} {held:?} with {live} processes alive after {processes} exited\n{text}"
        );
    }
    let churned = series.iter().filter(|l| l.contains("comm=\"churn")).count();
    let other = sample(
        &text,
        "memtrace_page_faults_total",
        &["kind=\"minor\"", "comm=\"other\""],
    );
    assert!(
        churned < processes && other.is_some_and(|v| v > 0.0),
        "{churned} churn series, other {other:?}\n{text}"
    );
}

/// The kernel's swap counters (pswpin, pswpout) in /proc/vmstat.
fn vmstat_swap() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    (get("pswpin"), get("pswpout"))
}

fn within(measured: Option<f64>, expected: f64, fraction: f64) -> bool {
    measured.is_some_and(|m| (m - expected).abs() <= expected * fraction)
}

/// A workload thrashing in a memory cgroup named as Docker names a container's scope: its
/// swap traffic is credited to it (not to kswapd) within 10% of the kernel's pswpout and
/// pswpin, under the container's id; its RSS and swap gauges (with a pid label, asked for)
/// are its own /proc/PID/status figures.
#[test]
fn swap_traffic_and_memory_are_the_owners() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    // swap = "auto": the host has no swap yet; the agent starts counting once it has.
    let (agent, _config) = start_agent(port, "pid_labels = true\n");
    let container_id = format!("{:064x}", 0x5eed_u64 + u64::from(std::process::id()));
    let cgroup = MemoryCgroup::create_named(&format!("docker-{container_id}.scope"), 64);
    let _swap = SwapFile::create(512);
    // The agent looks for swap each second.
    std::thread::sleep(Duration::from_secs(3));
    let mut workload = spawn_waiting("swap_cycle", &["128", "1"]);
    std::fs::write(cgroup.procs(), workload.pid.to_string()).unwrap();
    let before = vmstat_swap();
    workload.go();
    let after = vmstat_swap();
    let (pswpin, pswpout) = (after.0 - before.0, after.1 - before.1);
    assert!(pswpout > 0.0, "nothing swapped out");
    let owner = [
        "comm=\"swap_cycle\"".to_owned(),
        format!("container_id=\"{container_id}\""),
    ];
    let series = |text: &str, direction: &str| {
        let direction = format!("direction=\"{direction}\"");
        let mut labels: Vec<&str> = owner.iter().map(String::as_str).collect();
        labels.push(&direction);
        sample(text, "memtrace_swap_pages_total", &labels)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get(port, "/metrics");
        let done = within(series(&text, "out"), pswpout, 0.10)
            && within(series(&text, "in"), pswpin, 0.10);
        if done || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // The workload lingers: its memory now, as the kernel sees it and as /metrics says.
    let pid = format!("pid=\"{}\"", workload.pid);
    let rss = sample(&text, "memtrace_process_rss_bytes", &[&pid]);
    let swapped = sample(&text, "memtrace_process_swap_bytes", &[&pid]);
    let (vm_rss, vm_swap) = (
        tests::status_kb(workload.pid, "VmRSS:") as f64 * 1024.0,
        tests::status_kb(workload.pid, "VmSwap:") as f64 * 1024.0,
    );
    workload.finish();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(
        within(series(&text, "out"), pswpout, 0.10),
        "swapped out: {:?} in /metrics, /proc/vmstat pswpout {pswpout}\n{text}",
        series(&text, "out")
    );
    assert!(
        within(series(&text, "in"), pswpin, 0.10),
        "swapped in: {:?} in /metrics, /proc/vmstat pswpin {pswpin}\n{text}",
        series(&text, "in")
    );
    let kswapd_out = sample(
        &text,
        "memtrace_swap_pages_total",
        &["comm=\"kswapd0\"", "direction=\"out\""],
    );
    assert!(kswapd_out.is_none(), "kswapd credited\n{text}");
    assert!(
        within(rss, vm_rss, 0.10),
        "RSS gauge {rss:?}, VmRSS {vm_rss}\n{text}"
    );
    assert!(
        within(swapped, vm_swap, 0.10),
        "swap gauge {swapped:?}, VmSwap {vm_swap}\n{text}"
    );
}

/// The systemd unit's promise: the capabilities it keeps are enough. The agent runs under
/// exactly that bounding set (and no new privileges), with deploy/agent.toml's settings, and
/// serves fault counts and a profile.
#[test]
fn the_systemd_units_capabilities_are_enough() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let unit = std::fs::read_to_string(deploy.join("memtrace-agent.service")).unwrap();
    let capabilities: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet in the unit")
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let dir = TempDir::new("agent-unit");
    let port = free_port();
    let config = dir.join("agent.toml");
    let example = std::fs::read_to_string(deploy.join("agent.toml")).unwrap();
    std::fs::write(
        &config,
        example.replace("127.0.0.1:9464", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let mut command = std::process::Command::new("setpriv");
    command
        .arg(format!("--bounding-set=-all,{}", capabilities.join(",")))
        .arg("--no-new-privs")
        .arg(tests::memtrace_bin())
        .args(["agent", "--config", config.to_str().unwrap()]);
    let mut agent = tests::spawn_background(command);
    agent.wait_attached();
    run_workload("fault_touch", &["20000"]);
    std::thread::sleep(Duration::from_millis(1500));
    let text = get(port, "/metrics");
    let profile = get_bytes(port, "/pprof/faults?last=60");
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let minor = sample(
        &text,
        "memtrace_page_faults_total",
        &["kind=\"minor\"", "comm=\"fault_touch\""],
    );
    assert!(minor.is_some_and(|m| m >= 20_000.0), "{text}");
    // gzip's magic: a profile was made.
    assert!(
        profile.starts_with(&[0x1f, 0x8b]),
        "{} bytes",
        profile.len()
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_its_line() {
    let dir = TempDir::new("agent-config");
    let path = dir.join("agent.toml");
    std::fs::write(&path, "max_series = 10\n\nstack_sample = \"often\"\n").unwrap();
    let run = memtrace(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr.contains("line 3"), "{}", run.describe());
}

#[test]
fn a_busy_port_is_refused() {
    if !tests::require_root() {
        return;
    }
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap().to_string();
    let run = memtrace(&["agent", "--listen", &listen, "--duration", "1s"]);
    assert_ne!(run.code(), 0, "{}", run.describe());
    assert!(
        run.stderr.contains("cannot listen on"),
        "{}",
        run.describe()
    );
}

#[test]
fn a_remote_address_needs_permission() {
    let listen = format!("0.0.0.0:{}", free_port());
    let run = memtrace(&["agent", "--listen", &listen, "--duration", "1s"]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr.contains("--allow-remote"), "{}", run.describe());
}

/// `request` (a whole HTTP/1.1 request) sent to the agent; the status line of its answer.
fn status_of(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("no answer")
        .to_string()
}

/// The endpoints only read; no request, nor a flood of them, makes the agent work without
/// bound: writes are refused, the profile window is clamped to what is kept, a queue of
/// profile requests is bounded (refused past it), and the agent answers after.
#[test]
fn no_request_makes_the_agent_work_without_bound() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let (agent, _config) = start_agent(port, "");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    for (request, expected) in [
        (
            "POST /metrics HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string(),
            "405",
        ),
        (
            "DELETE /pprof/faults HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n".to_string(),
            "405",
        ),
        (get("/admin"), "404"),
        (get("/pprof/faults?seconds=-1"), "400"),
        (get("/pprof/faults?seconds=99999999999999999999999"), "400"),
        // The next N seconds: at most the ten minutes kept (Go refuses more than its
        // server's write timeout).
        (get("/pprof/faults?seconds=0"), "400"),
        (get("/pprof/faults?seconds=601"), "400"),
        (get("/pprof/faults?seconds=1&last=1"), "400"),
        // The last N seconds: clamped to the ten minutes kept.
        (get("/pprof/faults?last=18446744073709551615"), "200"),
    ] {
        let status = status_of(port, &request);
        assert!(
            status.contains(expected),
            "{request:?}: {status}, expected {expected}"
        );
    }
    // A flood of profile requests at once, each waiting a second (those served hold their
    // place while they wait): each is answered (served, or refused as busy).
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let request = get("/pprof/faults?seconds=1");
            std::thread::spawn(move || status_of(port, &request))
        })
        .collect();
    for answer in flood {
        let status = answer.join().unwrap();
        assert!(
            status.contains("200") || status.contains("503"),
            "a profile request during a flood: {status}"
        );
    }
    assert!(status_of(port, &get("/healthz")).contains("200"));
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
}

/// Polls /metrics until `metric` (with `labels`) reaches `least`, for at most `seconds`; its
/// last value.
fn wait_for_metric(port: u16, metric: &str, labels: &[&str], least: f64, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let text = get(port, "/metrics");
        let value = sample(&text, metric, labels).unwrap_or(0.0);
        if value >= least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} {labels:?} is {value}, not {least} or more, after {seconds} s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A profile read by `go tool pprof` from the agent itself (Go's own HTTP client), as
/// `-raw` prints it; None when go is missing outside CI.
fn pprof_from_url(port: u16, path: &str, scratch: &Path) -> Option<RawProfile> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let run = tests::go_pprof(&["-raw", "-symbolize=none"], Path::new(&url), &[], scratch)?;
    assert_eq!(run.code(), 0, "{}", run.describe());
    Some(RawProfile::parse(&run.stdout))
}

/// Heap profiling in the agent. heap_peak, named in [heap], is hooked at the agent's next
/// pass over /proc; then it allocates 200, 100 and 150 blocks in grow_a, grow_b and grow_c
/// and frees 150 of grow_a's and all of grow_b's. `go tool pprof`, fetching
/// /debug/pprof/heap and /debug/pprof/allocs itself, finds per function what the workload
/// allocated (its own figures) and what it still holds, which adds up to the live bytes it
/// reports. Sampled one point in 64 KiB: a 1 MiB block is all but certain to be sampled,
/// and stands for itself (the weights' rounding aside).
#[test]
fn the_heap_endpoints_hold_what_the_workload_allocated_and_holds() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("agent-heap");
    let port = free_port();
    let mut workload = tests::spawn_waiting("heap_peak", &[]);
    let (agent, _config) = start_agent(
        port,
        "[heap]\nprocesses = [\"heap_peak\"]\nsample_bytes = 65536\n",
    );
    wait_for_metric(port, "memtrace_heap_profiled_processes", &[], 1.0, 10);
    let report = workload.go();
    // The events are drained every tenth of a second.
    std::thread::sleep(Duration::from_millis(500));
    let heap = pprof_from_url(port, "/debug/pprof/heap", dir.path());
    let allocs = pprof_from_url(port, "/debug/pprof/allocs", dir.path());
    let metrics = get(port, "/metrics");
    workload.finish();
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let (Some(heap), Some(allocs)) = (heap, allocs) else {
        return;
    };
    assert_eq!(
        heap.default_sample_type.as_deref(),
        Some("inuse_space/bytes"),
        "{}",
        heap.text
    );
    assert_eq!(
        allocs.default_sample_type.as_deref(),
        Some("alloc_space/bytes"),
        "{}",
        allocs.text
    );
    assert_eq!(
        (heap.period_type.as_str(), heap.period),
        ("space/bytes", 65536),
        "{}",
        heap.text
    );
    let block = report.u64("block") as i64;
    let close = |measured: i64, wanted: i64| (measured - wanted).abs() <= wanted / 10_000;
    for (function, allocated, in_use) in [
        ("grow_a", report.u64("a_at_peak") as i64, 50 * block),
        ("grow_b", report.u64("b_at_peak") as i64, 0),
        ("grow_c", 150 * block, 150 * block),
    ] {
        for raw in [&heap, &allocs] {
            let measured = raw.value_through(function, "alloc_space/bytes");
            assert!(
                close(measured, allocated),
                "{function} allocated {measured} bytes, the workload {allocated}\n{}",
                raw.text
            );
            let measured = raw.value_through(function, "inuse_space/bytes");
            assert!(
                close(measured, in_use),
                "{function} holds {measured} bytes, the workload {in_use}\n{}",
                raw.text
            );
        }
    }
    let live: i64 = ["grow_a", "grow_b", "grow_c"]
        .iter()
        .map(|f| heap.value_through(f, "inuse_space/bytes"))
        .sum();
    let wanted = report.u64("live_bytes") as i64;
    assert!(
        close(live, wanted),
        "in use {live}, the workload's live bytes {wanted}\n{}",
        heap.text
    );
    assert!(
        heap.samples_of("heap_peak").count() >= 3,
        "samples are labelled with the process name\n{}",
        heap.text
    );
    assert_eq!(
        sample(&metrics, "memtrace_heap_dropped_total", &["blocks"]),
        Some(0.0),
        "{metrics}"
    );
}

/// An OOM kill of a heap-profiled process: oom_heap allocates 1 MiB blocks in a 64 MiB
/// memory cgroup without swap (16 in hold_a, then grow_b's) until the kernel kills it. Its
/// heap profile is written to the configured directory and served on /debug/pprof/oom: in
/// use, hold_a's 16 MiB and grow_b's what the workload last said it held (or one more, the
/// block being allocated at the kill), with the kill's cgroup, limit and constraint in its
/// comments and labels.
#[test]
fn an_oom_killed_processs_heap_is_written_and_served() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    const LIMIT_MIB: u64 = 64;
    let dir = TempDir::new("agent-oom-heap");
    let written = dir.join("oom");
    // An older profile as the agent names them, and a file of the user's: with
    // oom_profiles_kept = 1, the first goes when the new profile is written, the second stays.
    std::fs::create_dir_all(&written).unwrap();
    let older = written.join("20000101T000000000Z-oom_heap-1.pb.gz");
    let users = written.join("kept-by-hand.pb.gz");
    std::fs::write(&older, b"old").unwrap();
    std::fs::write(&users, b"mine").unwrap();
    let port = free_port();
    let (agent, _config) = start_agent(
        port,
        &format!(
            "[heap]\nprocesses = [\"oom_heap\"]\nsample_bytes = 0\noom_profiles = \"{}\"\n\
             oom_profiles_kept = 1\n",
            written.display()
        ),
    );
    let cgroup = MemoryCgroup::without_swap(LIMIT_MIB);
    let mut shell = std::process::Command::new("sh");
    shell.args([
        "-c",
        &format!(
            "echo $$ > {} && exec {} \"$@\"",
            cgroup.procs().display(),
            tests::workload("oom_heap").display()
        ),
        "oom_heap",
    ]);
    let workload = tests::spawn_waiting_command(shell);
    let pid = workload.pid;
    wait_for_metric(port, "memtrace_heap_profiled_processes", &[], 1.0, 10);
    let (status, output) = workload.go_to_the_end();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not OOM-killed: {status}\n{output}"
    );
    let said = |name: &str| -> i64 {
        (output.lines().rev())
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let (a_blocks, b_blocks) = (said("a "), said("b "));
    assert_eq!(a_blocks, 16, "{output}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found = std::fs::read_dir(&written)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.to_string_lossy()
                    .ends_with(&format!("-oom_heap-{pid}.pb.gz"))
            });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no heap profile of pid {pid} in {}",
            written.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    while older.exists() {
        assert!(
            Instant::now() < deadline,
            "past oom_profiles_kept = 1, {} was not deleted",
            older.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        users.exists(),
        "{} is not the agent's to delete",
        users.display()
    );
    let served = get_bytes(port, "/debug/pprof/oom");
    let list = get(port, "/debug/pprof/oom/list");
    agent.signal(libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(
        served,
        std::fs::read(&file).unwrap(),
        "/debug/pprof/oom is not the file written"
    );
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        list.contains(name) && list.contains(&pid.to_string()),
        "{list}"
    );
    let Some(raw) = RawProfile::read(&file, dir.path()) else {
        return;
    };
    let memcg = cgroup.dir.file_name().unwrap().to_str().unwrap();
    for comment in [
        format!("oom_limit_bytes: {}", LIMIT_MIB << 20),
        "oom_constraint: cgroup".to_owned(),
        format!("oom_pid: {pid}"),
    ] {
        assert!(
            raw.text.contains(&comment),
            "no comment {comment:?}\n{}",
            raw.text
        );
    }
    assert!(
        raw.text
            .lines()
            .any(|l| l.starts_with("Comment: oom_memcg: ") && l.ends_with(memcg)),
        "the kill's cgroup is not {memcg}\n{}",
        raw.text
    );
    assert_eq!(
        raw.default_sample_type.as_deref(),
        Some("inuse_space/bytes"),
        "{}",
        raw.text
    );
    for s in &raw.samples {
        assert_eq!(
            s.label("pid"),
            Some(pid.to_string().as_str()),
            "{}",
            raw.text
        );
        assert_eq!(s.label("oom_constraint"), Some("cgroup"), "{}", raw.text);
    }
    let mib = |function| raw.value_through(function, "inuse_space/bytes") >> 20;
    assert_eq!(mib("hold_a"), a_blocks, "hold_a's MiB\n{}", raw.text);
    let b = mib("grow_b");
    assert!(
        b == b_blocks || b == b_blocks + 1,
        "grow_b: {b} MiB in use, the workload said it held {b_blocks}\n{}",
        raw.text
    );
}
