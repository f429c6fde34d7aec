//! memtrace's kernel side: one module per hook family, sharing one target filter and one event
//! path (`emit`), so a new subcommand adds hooks, not another pipeline.
#![no_std]
#![no_main]

mod config;
mod emit;
mod exec;
mod faults;
mod filter;
mod follow;
mod maps;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
