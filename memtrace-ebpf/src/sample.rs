//! Taking stacks for 1 event in N (--sample N, `Settings::sample_period`), counted per CPU and per
//! sampler: cheaper than a random draw, and as fair for a steady stream.
use crate::{config, maps::STACK_SAMPLE};

/// Whether this event is the sampler's one in N.
#[inline(always)]
pub fn sampled(sampler: u32) -> bool {
    let period = config::sample_period();
    if period <= 1 {
        return true;
    }
    let Some(countdown) = STACK_SAMPLE.get_ptr_mut(sampler) else {
        return false;
    };
    let countdown = unsafe { &mut *countdown };
    if *countdown > 1 {
        *countdown -= 1;
        return false;
    }
    *countdown = period;
    true
}
