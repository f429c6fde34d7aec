//! The memtrace command; everything is in the library (`lib.rs`).
fn main() {
    memtrace::main()
}
