//! The agent's HTTP side (read-only): Prometheus text on /metrics, the fault profile on
//! /pprof/faults (asked of the tracing side, which owns the samples), and /healthz.
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

use super::{metrics::AgentMetrics, profile::PROFILE_WINDOW};

/// Which stretch of time a profile covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The next this many seconds, as Go's `/debug/pprof/profile?seconds=N`: answered once
    /// they are over.
    Next(Duration),
    /// The last this many seconds, at once (from the samples kept).
    Last(Duration),
}

/// A request from the HTTP side for the fault profile of a window.
pub struct ProfileRequest {
    pub window: Window,
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
    let window = match query.window() {
        Ok(window) => window,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    // Bounded: a flood of requests is refused, not queued without end.
    let Ok(_permit) = Arc::clone(&served.profile_permits).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    let (reply, answer) = oneshot::channel();
    if served
        .requests
        .try_send(ProfileRequest { window, reply })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    }
    let waits = match window {
        Window::Next(seconds) => seconds,
        Window::Last(_) => Duration::ZERO,
    };
    let profile = tokio::time::timeout(waits + Duration::from_secs(30), answer).await;
    match profile {
        Ok(Ok(Ok(bytes))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"faults.pb.gz\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(Err(err))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no answer\n").into_response(),
    }
}

/// The routes, serving `metrics` and asking the tracing side for profiles through `requests`.
pub fn router(metrics: Arc<Mutex<AgentMetrics>>, requests: mpsc::Sender<ProfileRequest>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/pprof/faults", get(serve_fault_profile))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Served {
            metrics,
            requests,
            profile_permits: Arc::new(Semaphore::new(MAX_PROFILE_REQUESTS)),
        })
}
