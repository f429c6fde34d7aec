//! Output sinks: each turns a finished report into one format.
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod pprof;
pub mod table;
