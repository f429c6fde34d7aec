//! The tracing loop shared by every subcommand: drain the ring buffer on the kernel's wake-up or
//! a short timer, tick the consumer, and stop on Ctrl-C / SIGTERM, a deadline, or the targets'
//! exit, draining what is left before returning.
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::unix::AsyncFd;

use crate::{
    kernel::tracer::Tracer,
    trace::{
        clock::TraceClock,
        consumer::Consumer,
        drain::Drain,
        stop_signals::{StopSignal, StopSignals},
        target_exit::TargetExit,
    },
};

/// While events pour in (a drain found at least BUSY_RECORDS), timer drains wait this long:
/// draining in small batches keeps the reader on the writer's hot cache lines, which slows the
/// traced program (measured: 1.60x vs 1.46x on the fault storm).
const BUSY_TICK: Duration = Duration::from_millis(20);
const BUSY_RECORDS: usize = 1024;

/// When to stop, besides Ctrl-C and SIGTERM.
pub struct StopWhen {
    pub deadline: Option<Duration>,
    /// Stop once all of these have exited (empty: never).
    pub exits: Vec<TargetExit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(StopSignal),
    Deadline,
    TargetsExited,
}

type Logger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Runs until a stop condition.
pub async fn run(
    drain: &mut Drain,
    logger: Option<Logger>,
    consumer: &mut dyn Consumer,
    stop: &StopWhen,
    tracer: &mut Tracer,
) -> Result<(StopReason, Duration)> {
    let started = Instant::now();
    consumer.on_start(TraceClock::start_now());
    let mut signals = StopSignals::install()?;
    // SAFETY: the logger owns its ring buffer fd and lives inside the AsyncFd.
    let mut logger = match logger {
        Some(logger) => Some(unsafe { AsyncFd::register(logger) }.map_err(std::io::Error::from)?),
        None => None,
    };
    let mut ticker = tokio::time::interval(consumer.tick());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut busy, mut last_drain) = (false, Instant::now());

    let reason = loop {
        tokio::select! {
            result = drain.readable() => {
                result?;
                drain.drain_now(consumer);
            }
            _ = ticker.tick() => {
                if !busy || last_drain.elapsed() >= BUSY_TICK {
                    busy = drain.drain_now(consumer) >= BUSY_RECORDS;
                    last_drain = Instant::now();
                }
                let elapsed = started.elapsed();
                consumer.on_tick(elapsed, tracer, &mut drain.processes);
                if stop.deadline.is_some_and(|deadline| elapsed >= deadline) {
                    break StopReason::Deadline;
                }
                if !stop.exits.is_empty() && stop.exits.iter().all(TargetExit::has_exited) {
                    break StopReason::TargetsExited;
                }
            }
            signal = signals.recv() => break StopReason::Signal(signal?),
            Some(guard) = readable(&mut logger) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    };
    let elapsed = started.elapsed();
    drain.drain_now(consumer);
    let lost = drain.mappings_lost();
    if lost.code > 0 {
        log::warn!(
            "{} records of executable mappings were lost: short-lived processes may lack \
             library symbols",
            lost.code
        );
    }
    if lost.data > 0 {
        log::warn!(
            "{} records of data mappings were lost: shared memory of processes that exited \
             before their maps were read may be counted as [anon, since unmapped]",
            lost.data
        );
    }
    drain.processes.report_undecodable();
    if let Some(logger) = logger.as_mut() {
        logger.get_mut().flush();
    }
    Ok((reason, elapsed))
}

/// The logger's readiness, or never when there is no logger.
async fn readable(
    logger: &mut Option<AsyncFd<Logger>>,
) -> Option<std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, Logger>>> {
    match logger {
        Some(fd) => Some(fd.readable_mut().await),
        None => std::future::pending().await,
    }
}
