//! The agent's HTTP side (read-only): Prometheus text on /metrics, the rolling fault profile
//! on /pprof/faults (asked of the tracing side, which owns it), and /healthz.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tokio::sync::{mpsc, oneshot};

use super::{metrics::AgentMetrics, profile::PROFILE_WINDOW};

/// A request from the HTTP side for the fault profile of the last `seconds`.
pub struct ProfileRequest {
    pub seconds: u64,
    pub reply: oneshot::Sender<Result<Vec<u8>>>,
}

/// What the HTTP handlers share with the tracing side.
#[derive(Clone)]
struct Served {
    metrics: Arc<Mutex<AgentMetrics>>,
    requests: mpsc::Sender<ProfileRequest>,
}

async fn serve_metrics(State(served): State<Served>) -> impl IntoResponse {
    let text = served
        .metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    /// The last this many seconds (default 60, at most the profile window).
    seconds: Option<u64>,
}

async fn serve_fault_profile(
    State(served): State<Served>,
    Query(query): Query<ProfileQuery>,
) -> axum::response::Response {
    let seconds = query
        .seconds
        .unwrap_or(60)
        .clamp(1, PROFILE_WINDOW.as_secs());
    let (reply, answer) = oneshot::channel();
    let asked = served.requests.try_send(ProfileRequest { seconds, reply });
    let profile = match asked {
        Ok(()) => tokio::time::timeout(Duration::from_secs(30), answer).await,
        // A bounded queue: a flood of requests is refused, not queued without end.
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    };
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
        .with_state(Served { metrics, requests })
}
