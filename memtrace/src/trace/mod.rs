//! The way every tracing subcommand's data goes, shared by all of them: a target resolved
//! (and a command launched at a gate), the kernel side loaded and attached, records drained
//! from the ring buffer and decoded once, the processes they come from tracked (names, memory
//! maps, exec generations), stacks counted and symbolized, progress shown, until a stop.
pub(crate) mod build_id;
pub(crate) mod clock;
pub(crate) mod command_end;
pub(crate) mod consumer;
pub(crate) mod drain;
pub(crate) mod launch;
pub mod mapping_records;
pub(crate) mod memory_maps;
pub(crate) mod page_origin;
pub(crate) mod pipeline;
pub(crate) mod processes;
pub(crate) mod program_files;
pub(crate) mod progress;
pub mod records;
pub(crate) mod region;
pub(crate) mod request;
pub(crate) mod session;
pub(crate) mod stack_groups;
pub(crate) mod stacks;
pub(crate) mod stop_signals;
pub(crate) mod symbolize;
pub mod target;
pub(crate) mod target_exit;
