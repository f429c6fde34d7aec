//! The kernel side, seen from userspace: loading the embedded eBPF object with its settings,
//! attaching its programs, reading its tables, and what it needs to know of this kernel
//! (privileges, tracefs, feature probes, struct layouts from BTF, GFP names, probe sites).
pub mod access;
pub mod btf;
pub(crate) mod config;
pub(crate) mod features;
pub mod gfp;
pub(crate) mod hooks;
pub mod layout;
pub(crate) mod probe_site;
pub(crate) mod process_uprobes;
pub(crate) mod programs;
pub(crate) mod settings;
pub(crate) mod tables;
pub(crate) mod tracefs;
pub(crate) mod tracer;
pub(crate) mod uprobe_lock;
