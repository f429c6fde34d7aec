// Intentionally empty: this crate is a build-dependency of `memtrace` only so cargo rebuilds the
// loader when it changes; the programs are its binary target (src/main.rs).
#![no_std]
