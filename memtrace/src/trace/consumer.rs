//! What a subcommand plugs into the shared pipeline: a consumer of decoded records, ticked
//! while tracing.
use std::time::Duration;

use crate::{
    kernel::tracer::Tracer,
    trace::{clock::TraceClock, processes::Processes, records::Record},
};

/// How often the ring is drained even without a wake-up (wake-ups are batched by the kernel
/// side). Short while events are few, so a short-lived process's events are read while its
/// memory map can still be read.
pub const TICK: Duration = Duration::from_millis(5);

/// What a subcommand does with the records and the passing time. `processes` is what the
/// pipeline knows of the traced processes (names, memory maps, exec generations), kept
/// current by the records before they reach the consumer.
pub trait Consumer {
    /// One record of a traced process: an event (forks and execs are applied to
    /// `processes` and not passed on), an OOM kill, or a process's end.
    fn on_record(&mut self, record: &Record, processes: &mut Processes);
    /// How often the ring is drained without a wake-up, and `on_tick` called.
    fn tick(&self) -> Duration {
        TICK
    }
    /// Called once as tracing starts, with the clock its times count from.
    fn on_start(&mut self, _clock: TraceClock) {}
    /// Called once before tracing with the processes given by pid, or the command's.
    fn on_targets(&mut self, _pids: &[u32]) {}
    /// Called every tick with the time since tracing started; `tracer` gives the kernel's
    /// counters and maps.
    fn on_tick(&mut self, _elapsed: Duration, _tracer: &mut Tracer, _processes: &mut Processes) {}
}
