//! The eBPF programs' load-time settings ([`Settings`], shared with memtrace-ebpf), from what a
//! subcommand asked for ([`KernelConfig`]): written once into the object's `SETTINGS` before
//! its programs load (see `tracer::Tracer::load`).
use memtrace_common::{filter_mode, stack_flags, Settings, EXP_TABLE_SIZE};

use super::config::{Filter, KernelConfig};

/// The settings for `config`, on a machine with `possible_cpus` possible CPUs. Layouts of
/// what is not traced stay zero: their programs are never attached.
pub fn settings(config: &KernelConfig, possible_cpus: u32) -> Settings {
    let (mode, cgroup_id, cgroup_level) = match config.filter {
        Filter::All => (filter_mode::ALL, 0, 0),
        Filter::Tgids(_) => (filter_mode::TGIDS, 0, 0),
        Filter::Cgroup { id, level } => (filter_mode::CGROUP, id, level),
    };
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    let swap = config.swap.unwrap_or_default();
    let (do_swap_page_start, do_swap_page_end) = swap.do_swap_page.unwrap_or((0, 0));
    let (swpin_zero_event, swpout_zero_event) = swap.zero_events.unwrap_or((0, 0));
    let pages = config.pages.unwrap_or_default();
    let oom = config.oom.unwrap_or_default();
    Settings {
        filter_mode: mode,
        cgroup_level,
        cgroup_id,
        single_tgid: config.single_process().unwrap_or(0),
        self_tgid: std::process::id(),
        follow_children: u32::from(config.follow_children),
        first_tgid: config.first_process().unwrap_or(0),
        stack_flags: flag(config.user_stacks, stack_flags::USER)
            | flag(config.kernel_stacks, stack_flags::KERNEL)
            | flag(config.page_stacks, stack_flags::PAGE_ALLOCS),
        file_tags: u32::from(config.file_tags),
        sample_period: config.stack_sample_period,
        wakeup_bytes: wakeup_bytes(config.ring_bytes),
        do_swap_page_start,
        do_swap_page_end,
        mm_swap_counter: u64::from(swap.swap_counter),
        counter_count: u64::from(swap.counter_count),
        counter_percpu: u64::from(swap.counter_percpu),
        task_mm: u64::from(swap.task_mm),
        array_percpu_base: u64::from(swap.array_percpu_base),
        orig_ax: u64::from(swap.fault_error_code.unwrap_or(0)),
        nr_cpus: possible_cpus,
        unwind_tables: u32::from(config.unwind_tables().is_some()),
        swpin_zero_event,
        swpout_zero_event,
        task_flags: u64::from(pages.task_flags),
        task_stack: u64::from(pages.task_stack),
        regs_sp: u64::from(pages.regs_sp),
        oom_fields: oom.fields,
        memcg_chain: oom.memcg_chain,
        exit_layout: config.exits.unwrap_or_default().fields,
        sample_bytes: config.malloc.unwrap_or(0),
        exp_table: exponential_table(),
    }
}

/// Wake the reader once an eighth of the ring is filled; the reader's timer drains the rest.
fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8)
}

/// The allocation sampler's exponential distances: -ln(u) in 16.16 fixed point, for u spread
/// evenly over (0, 1) (see memtrace-ebpf's `malloc::interval`).
fn exponential_table() -> [u32; EXP_TABLE_SIZE] {
    std::array::from_fn(|i| {
        let u = (i as f64 + 0.5) / EXP_TABLE_SIZE as f64;
        (-u.ln() * 65536.0).round() as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(filter: Filter) -> KernelConfig {
        KernelConfig {
            filter,
            follow_children: false,
            file_tags: true,
            user_stacks: true,
            kernel_stacks: false,
            page_stacks: true,
            ring_bytes: 1 << 23,
            stack_entries: 1,
            page_count_entries: 1,
            swap: None,
            malloc: Some(4096),
            pages: None,
            oom: None,
            stack_sample_period: 3,
            exits: None,
            unwind: None,
        }
    }

    #[test]
    fn settings_say_what_the_config_asks() {
        let one = settings(&config(Filter::Tgids(vec![42])), 4);
        assert_eq!(one.filter_mode, filter_mode::TGIDS);
        assert_eq!(one.single_tgid, 42);
        assert_eq!(one.self_tgid, std::process::id());
        assert_eq!(
            one.stack_flags,
            stack_flags::USER | stack_flags::PAGE_ALLOCS
        );
        assert_eq!(one.file_tags, 1);
        assert_eq!(one.sample_period, 3);
        assert_eq!(one.wakeup_bytes, 1 << 20);
        assert_eq!(one.nr_cpus, 4);
        assert_eq!(one.sample_bytes, 4096);
        // Untraced layouts stay zero.
        assert_eq!(one.mm_swap_counter, 0);
        assert_eq!(one.oom_fields, [0; 9]);
        // -ln(0.5 / 1024) and -ln(1023.5 / 1024), 16.16.
        assert_eq!(one.exp_table[0], 499_687);
        assert_eq!(one.exp_table[EXP_TABLE_SIZE - 1], 32);

        let cgroup = settings(&config(Filter::Cgroup { id: 7, level: 2 }), 4);
        assert_eq!(
            (cgroup.filter_mode, cgroup.cgroup_id, cgroup.cgroup_level),
            (filter_mode::CGROUP, 7, 2)
        );
        assert_eq!(cgroup.single_tgid, 0);

        // A command with its children: a set, with the command compared first.
        let tree = settings(
            &KernelConfig {
                follow_children: true,
                ..config(Filter::Tgids(vec![42]))
            },
            4,
        );
        assert_eq!((tree.single_tgid, tree.first_tgid), (0, 42));
        assert_eq!(one.first_tgid, 0);
    }
}
