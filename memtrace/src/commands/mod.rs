//! One module per subcommand: each picks hooks, a consumer and sinks; the pipeline is shared.
pub mod agent;
pub mod check;
pub mod diagnose;
pub mod faults;
pub mod malloc;
pub mod oom;
pub mod pages;
pub mod stat;
pub mod swap;
