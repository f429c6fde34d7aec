//! memtrace: who pays for memory, and where.
#![allow(dead_code)] // while the pipeline is assembled

mod output;
mod procmaps;
mod report;
mod symbolize;

fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));
    println!("{}", obj.len());
}
