//! unwind_rust faults|malloc [COUNT] [--wait] [--linger]
//!
//! A Rust release binary with a call chain known exactly, built as `cargo build --release`
//! builds (`rustc -C opt-level=3`, see tests/build.rs): no frame pointers, only .eh_frame.
//! Every function of the chain is `#[inline(never)]` and uses its callee's result, so no call
//! is a tail call:
//!
//!   DEEPEST <- big_frame <- recurse x5 <- run_chain <- main (unwind_rust's) <- std's start
//!
//!   big_frame   a 12 KiB local array, every page written
//!   recurse     5 frames of the same function
//!
//! MODE picks DEEPEST:
//!   faults   touch_pages: writes one byte in each of COUNT fresh anonymous pages (huge pages
//!            off): exactly COUNT minor faults under the chain.
//!   malloc   leak_blocks: COUNT blocks of BLOCK_SIZE bytes from the global allocator (the C
//!            library's malloc), never freed.
//! COUNT defaults to 1000.
//!
//! Like the C workloads (tests/workloads/common.h): --wait prints `ready <pid>` and waits for a
//! line on stdin before the main phase, --linger waits again after the JSON line, which holds
//! {"pid","minflt","majflt","phase_minflt","phase_majflt","elapsed_s"} (getrusage) and
//! "mode", "count", "depth", "block_size", "page_size".
use std::{
    alloc::{alloc, Layout},
    ffi::c_void,
    hint::black_box,
    io::{BufRead, Write},
    time::Instant,
};

const USAGE: &str = "unwind_rust faults|malloc [COUNT] [--wait] [--linger]";
const RECURSION_DEPTH: u32 = 5;
const BLOCK_SIZE: usize = 1000;
const BIG_FRAME_BYTES: usize = 12288;

/// `struct rusage`: two timevals, then 14 longs (ru_minflt is the fifth, ru_majflt the sixth).
#[repr(C)]
struct Rusage {
    times: [i64; 4],
    longs: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, off: i64)
        -> *mut c_void;
    fn madvise(addr: *mut c_void, len: usize, advice: i32) -> i32;
    fn sysconf(name: i32) -> i64;
}

const PROT_READ_WRITE: i32 = 0x1 | 0x2;
const MAP_PRIVATE_ANONYMOUS: i32 = 0x02 | 0x20;
const MADV_NOHUGEPAGE: i32 = 15;
const SC_PAGESIZE: i32 = 30;

#[derive(Clone, Copy)]
enum Deepest {
    Touch,
    Leak,
}

struct Work {
    deepest: Deepest,
    count: usize,
    region: *mut u8,
    page_size: usize,
}

/// (minor, major) faults of this process so far.
fn faults() -> (i64, i64) {
    let mut usage = Rusage {
        times: [0; 4],
        longs: [0; 14],
    };
    // SAFETY: usage is a valid struct rusage for the call to fill.
    let rc = unsafe { getrusage(0, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    (usage.longs[4], usage.longs[5])
}

#[inline(never)]
fn touch_pages(region: *mut u8, pages: usize, page_size: usize) -> usize {
    for i in 0..pages {
        // SAFETY: the region holds `pages` pages.
        unsafe { region.add(i * page_size).write_volatile(1) };
    }
    black_box(pages)
}

#[inline(never)]
fn leak_blocks(blocks: usize) -> usize {
    // SAFETY: the layout's size is not zero.
    let layout = unsafe { Layout::from_size_align_unchecked(BLOCK_SIZE, 8) };
    for _ in 0..blocks {
        // SAFETY: as above; the block is never freed, on purpose.
        let block = unsafe { alloc(layout) };
        assert!(!block.is_null(), "out of memory");
        black_box(block);
    }
    black_box(blocks)
}

#[inline(never)]
fn big_frame(work: &Work) -> usize {
    let mut big = [0u8; BIG_FRAME_BYTES];
    // Every page written: a sampled copy of the stack (perf's) stops at a page never touched.
    for i in (0..BIG_FRAME_BYTES).step_by(512) {
        big[i] = i as u8;
    }
    black_box(&mut big);
    let done = match work.deepest {
        Deepest::Touch => touch_pages(work.region, work.count, work.page_size),
        Deepest::Leak => leak_blocks(work.count),
    };
    black_box(&big);
    done
}

#[inline(never)]
fn recurse(depth: u32, work: &Work) -> usize {
    let done = if depth > 1 {
        recurse(depth - 1, work)
    } else {
        big_frame(work)
    };
    black_box(done) + depth as usize
}

#[inline(never)]
fn run_chain(work: &Work) -> usize {
    black_box(recurse(black_box(RECURSION_DEPTH), work))
}

fn read_stdin_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn usage_exit() -> ! {
    eprintln!("usage: {USAGE}");
    std::process::exit(2);
}

fn main() {
    let mut wait = false;
    let mut linger = false;
    let mut positional = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--wait" => wait = true,
            "--linger" => linger = true,
            a if a.starts_with('-') => usage_exit(),
            _ => positional.push(arg),
        }
    }
    let (mode, count) = match positional.as_slice() {
        [mode] => (mode.clone(), 1000),
        [mode, count] => (
            mode.clone(),
            count.parse().unwrap_or_else(|_| usage_exit()),
        ),
        _ => usage_exit(),
    };
    let deepest = match mode.as_str() {
        "faults" => Deepest::Touch,
        "malloc" => Deepest::Leak,
        _ => usage_exit(),
    };
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { sysconf(SC_PAGESIZE) } as usize;
    let len = count * page_size + 1;
    // SAFETY: a fresh private anonymous mapping, no address hint.
    let region = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            PROT_READ_WRITE,
            MAP_PRIVATE_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(region as isize != -1, "mmap failed");
    // SAFETY: the range is the mapping just made.
    unsafe { madvise(region, len, MADV_NOHUGEPAGE) };
    let work = Work {
        deepest,
        count,
        region: region.cast(),
        page_size,
    };

    let mut stdout = std::io::stdout().lock();
    if wait {
        writeln!(stdout, "ready {}", std::process::id()).unwrap();
        stdout.flush().unwrap();
        read_stdin_line();
    }
    let before = faults();
    let start = Instant::now();
    run_chain(&work);
    let elapsed = start.elapsed().as_secs_f64();
    let after = faults();
    writeln!(
        stdout,
        "{{\"pid\":{},\"minflt\":{},\"majflt\":{},\"phase_minflt\":{},\"phase_majflt\":{},\
         \"elapsed_s\":{elapsed:.6},\"mode\":\"{mode}\",\"count\":{count},\"depth\":{},\
         \"block_size\":{BLOCK_SIZE},\"page_size\":{page_size}}}",
        std::process::id(),
        after.0,
        after.1,
        after.0 - before.0,
        after.1 - before.1,
        RECURSION_DEPTH,
    )
    .unwrap();
    stdout.flush().unwrap();
    if linger {
        read_stdin_line();
    }
}
