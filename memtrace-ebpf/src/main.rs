//! memtrace's kernel side: one module per hook family, sharing one target filter and one event
//! path (`emit`), so a new subcommand adds hooks, not another pipeline.
// Built for the bpf target by memtrace/build.rs; on the host it only compiles (for clippy).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod config;
mod emit;
mod exec;
mod exits;
mod faults;
mod filetag;
mod filter;
mod follow;
mod malloc;
mod maps;
mod memcg;
mod oom;
mod pages;
mod percpu;
mod python;
mod sample;
mod swap;
mod unwind;
mod ustack;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
