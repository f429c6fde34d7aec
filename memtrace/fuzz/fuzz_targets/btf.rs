//! memtrace's BTF reader (btf.rs) on arbitrary bytes, then every lookup memtrace makes in a
//! parsed BTF (kernel/layout.rs, kernel/gfp.rs): a malformed blob must be an error, never a panic
//! or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::kernel::{
    btf::Btf,
    gfp::MigrateTypes,
    layout::{memcg_chain_in, ExitLayout, PageTracing, SwapLayout},
};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = SwapLayout::from_btf(&btf);
    let _ = PageTracing::from_btf(&btf);
    let _ = ExitLayout::from_btf(&btf);
    let _ = memcg_chain_in(&btf);
    let _ = MigrateTypes::from_parsed_btf(&btf).map(|types| types.name(1));
    // The lookups on their own, on the first types of the blob whatever their kind.
    for id in 0..64 {
        let _ = btf.size_of(id);
        let _ = btf.element_of(id);
        let _ = btf.type_name(id);
        let _ = btf.member(id, "count");
    }
});
