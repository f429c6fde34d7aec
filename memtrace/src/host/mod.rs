//! What the host says of memory without tracing: readers of /proc and the cgroup
//! filesystem (a process's memory, memory cgroups and their limits, container labels,
//! system-wide swap and pressure).
pub mod cgroup_mounts;
pub mod container;
pub mod memcg;
pub mod process_memory;
pub(crate) mod system_memory;

/// Whether a process `pid` exists now (its /proc directory does).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
