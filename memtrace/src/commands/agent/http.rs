//! The agent's HTTP side (read-only): Prometheus text on /metrics, the fault profile on
//! /pprof/faults and the heap profiles on /debug/pprof/heap and /debug/pprof/allocs (asked of
//! the tracing side, which owns the samples and the books), the OOM victims' heap profiles on
//! /debug/pprof/oom, and /healthz.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{metrics::AgentMetrics, oom_profiles::Latest, profile::PROFILE_WINDOW};

/// Which stretch of time a profile covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The next this many seconds, as Go's `/debug/pprof/profile?seconds=N`: answered once
    /// they are over.
    Next(Duration),
    /// The last this many seconds, at once (from the samples kept).
    Last(Duration),
}

/// Which profile is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The fault stacks of a window.
    Faults(Window),
    /// The heap profile of the heap-profiled processes: the same four values either way,
    /// in-use bytes shown first (/debug/pprof/heap) or allocated bytes (/debug/pprof/allocs).
    Heap { in_use_first: bool },
}

/// A request from the HTTP side for a profile, built on the tracing side.
pub struct ProfileRequest {
    pub wanted: Wanted,
    pub reply: oneshot::Sender<Result<Vec<u8>>>,
}

/// Profile requests served at once at most; more are refused, not queued without end.
const MAX_PROFILE_REQUESTS: usize = 8;
/// Go's default for `seconds`.
const DEFAULT_SECONDS: u64 = 30;

/// What the HTTP handlers share with the tracing side.
#[derive(Clone)]
struct Served {
    metrics: Arc<Mutex<AgentMetrics>>,
    requests: mpsc::Sender<ProfileRequest>,
    heap_profiling: bool,
    oom_profiles: Latest,
    /// One permit per profile request being served (a request for the next N seconds holds
    /// its permit while it waits).
    profile_permits: Arc<Semaphore>,
}

/// OpenMetrics for those who ask for it (Prometheus does), else Prometheus's classic text
/// format (version 0.0.4), which every other reader (promtool, curl, older servers) parses.
async fn serve_metrics(State(served): State<Served>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let metrics = served.metrics.lock().unwrap_or_else(|e| e.into_inner());
    let (content_type, text) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.render_classic(),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], text)
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    /// The next this many seconds (default 30, at most the profile window), as Go's.
    seconds: Option<u64>,
    /// Or the last this many seconds, at once (at most the profile window).
    last: Option<u64>,
}

impl ProfileQuery {
    /// The window asked for, or why it cannot be served.
    fn window(&self) -> Result<Window, String> {
        let most = PROFILE_WINDOW.as_secs();
        match (self.seconds, self.last) {
            (Some(_), Some(_)) => {
                Err("ask for seconds (the next N) or last (the last N), not both".into())
            }
            (_, Some(last)) => Ok(Window::Last(Duration::from_secs(last.clamp(1, most)))),
            (Some(seconds), None) if !(1..=most).contains(&seconds) => Err(format!(
                "seconds={seconds}: a profile of the next 1 to {most} seconds (the samples \
                 kept); last=N gives the last N seconds at once"
            )),
            (seconds, None) => Ok(Window::Next(Duration::from_secs(
                seconds.unwrap_or(DEFAULT_SECONDS),
            ))),
        }
    }
}

async fn serve_fault_profile(
    State(served): State<Served>,
    Query(query): Query<ProfileQuery>,
) -> axum::response::Response {
    match query.window() {
        Ok(window) => ask(&served, Wanted::Faults(window), "faults.pb.gz").await,
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

/// /debug/pprof/heap: what the heap-profiled processes hold now, by stack, as Go's.
async fn serve_heap(State(served): State<Served>) -> axum::response::Response {
    serve_heap_profile(served, true, "heap.pb.gz").await
}

/// /debug/pprof/allocs: what they allocated since profiled, by stack, as Go's.
async fn serve_allocs(State(served): State<Served>) -> axum::response::Response {
    serve_heap_profile(served, false, "allocs.pb.gz").await
}

async fn serve_heap_profile(
    served: Served,
    in_use_first: bool,
    file: &str,
) -> axum::response::Response {
    if !served.heap_profiling {
        return (StatusCode::NOT_FOUND, HEAP_OFF).into_response();
    }
    ask(&served, Wanted::Heap { in_use_first }, file).await
}

const HEAP_OFF: &str = "heap profiling is off: name processes or cgroups in the config's \
                        [heap] section (see memtrace agent --help)\n";

#[derive(serde::Deserialize)]
struct OomQuery {
    /// The n-th latest (0: the latest).
    n: Option<usize>,
}

/// /debug/pprof/oom: the heap profile of the latest OOM-killed heap-profiled process (or the
/// n-th latest); /debug/pprof/oom/list: those kept, one a line.
async fn serve_oom_profile(
    State(served): State<Served>,
    Query(query): Query<OomQuery>,
) -> axum::response::Response {
    let latest = served
        .oom_profiles
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let n = query.n.unwrap_or(0);
    match latest.get(n) {
        Some(profile) => profile_response(profile.bytes.clone(), &profile.name),
        None if !served.heap_profiling => (StatusCode::NOT_FOUND, HEAP_OFF).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no OOM kill of a heap-profiled process kept at n={n} ({} kept; \
                 /debug/pprof/oom/list lists them)\n",
                latest.len()
            ),
        )
            .into_response(),
    }
}

async fn list_oom_profiles(State(served): State<Served>) -> String {
    let latest = served
        .oom_profiles
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut text = String::from("# n time pid comm memcg file (GET /debug/pprof/oom?n=N)\n");
    for (n, profile) in latest.iter().enumerate() {
        text.push_str(&format!(
            "{n} {} {} {} {} {}\n",
            profile.time, profile.pid, profile.comm, profile.cgroup, profile.name
        ));
    }
    text
}

fn profile_response(bytes: Vec<u8>, file: &str) -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// Asks the tracing side for a profile and waits for it (bounded: a flood of requests is
/// refused, not queued without end).
async fn ask(served: &Served, wanted: Wanted, file: &str) -> axum::response::Response {
    let Ok(_permit) = Arc::clone(&served.profile_permits).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    let (reply, answer) = oneshot::channel();
    if served
        .requests
        .try_send(ProfileRequest { wanted, reply })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    }
    let waits = match wanted {
        Wanted::Faults(Window::Next(seconds)) => seconds,
        _ => Duration::ZERO,
    };
    let profile = tokio::time::timeout(waits + Duration::from_secs(30), answer).await;
    match profile {
        Ok(Ok(Ok(bytes))) => profile_response(bytes, file),
        Ok(Ok(Err(err))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no answer\n").into_response(),
    }
}

/// What the routes serve from: the metrics, the tracing side (asked for profiles through
/// `requests`), the OOM victims' heap profiles.
pub struct Sources {
    pub metrics: Arc<Mutex<AgentMetrics>>,
    pub requests: mpsc::Sender<ProfileRequest>,
    pub heap_profiling: bool,
    pub oom_profiles: Latest,
}

/// The routes.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/pprof/faults", get(serve_fault_profile))
        .route("/debug/pprof/heap", get(serve_heap))
        .route("/debug/pprof/allocs", get(serve_allocs))
        .route("/debug/pprof/oom", get(serve_oom_profile))
        .route("/debug/pprof/oom/list", get(list_oom_profiles))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Served {
            metrics: sources.metrics,
            requests: sources.requests,
            heap_profiling: sources.heap_profiling,
            oom_profiles: sources.oom_profiles,
            profile_permits: Arc::new(Semaphore::new(MAX_PROFILE_REQUESTS)),
        })
}
