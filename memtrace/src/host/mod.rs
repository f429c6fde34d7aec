//! What the host says of memory without tracing: readers of /proc and the cgroup
//! filesystem (a process's memory, memory cgroups and their limits, container labels,
//! system-wide swap and pressure).
pub mod cgroup_mounts;
pub mod container;
pub mod memcg;
pub mod process_memory;
pub(crate) mod system_memory;
