//! User call chains in memtrace's JSON reports (`stacks[].frames`, `outstanding[].frames`:
//! function names, innermost first), compared with the chain a test expects or the chains
//! another tool saw. A function may go by several names (a C library's `raise`, `gsignal`,
//! `__GI_raise`): [`Aliases`] knows them from the files' symbol tables.
use std::{collections::HashMap, path::Path};

use serde_json::Value;

use crate::readelf::ElfView;

/// The outermost frame of a whole user stack: a program's entry (`_start`; the dynamic
/// loader's, whose call to `_dl_start` returns to `_dl_start_user`, for its own work before
/// the program's) or a thread's (`clone3`, `clone`: glibc's thread start calls
/// `start_thread` from there).
pub const ROOTS: &[&str] = &["_start", "_dl_start_user", "clone3", "clone"];

/// The C library the fixtures link (Debian's; its names come from libc6-dbg's symbols too).
pub const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

/// A row's user frames (`frames`), innermost first.
pub fn frames(row: &Value) -> Vec<&str> {
    row["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("a row without frames: {row}"))
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap_or_else(|| panic!("a frame that is no name: {row}"))
        })
        .collect()
}

/// The names functions go by in some ELF files.
pub struct Aliases {
    files: Vec<ElfView>,
}

impl Aliases {
    /// The names in `paths` (each file's symbols and its separate debug file's).
    pub fn of<P: AsRef<Path>>(paths: &[P]) -> Self {
        Self {
            files: paths.iter().map(|p| ElfView::read(p.as_ref())).collect(),
        }
    }

    /// Whether `a` and `b` name one function: the same name, or names of one address in one
    /// of the files.
    pub fn same(&self, a: &str, b: &str) -> bool {
        a == b || self.files.iter().any(|f| f.aliases(a).contains(&b))
    }

    /// Whether `actual` is `expected`, frame by frame.
    pub fn chain_is<A: AsRef<str>, E: AsRef<str>>(&self, actual: &[A], expected: &[E]) -> bool {
        actual.len() == expected.len()
            && actual
                .iter()
                .zip(expected)
                .all(|(a, e)| self.same(a.as_ref(), e.as_ref()))
    }
}

/// The rows of `report[key]` (`stacks`, `outstanding`) of process `pid` whose innermost
/// frame is `leaf` (by any of its names).
pub fn rows_with_leaf<'a>(
    report: &'a Value,
    key: &str,
    pid: u32,
    leaf: &str,
    aliases: &Aliases,
) -> Vec<&'a Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?} in the report"))
        .iter()
        .filter(|row| row["pid"].as_u64() == Some(u64::from(pid)))
        .filter(|row| frames(row).first().is_some_and(|f| aliases.same(f, leaf)))
        .collect()
}

/// `rows` grouped by their user frames, with `weight` (`count`, `pages`, `allocations`)
/// summed: (frames, weight), heaviest first (rows of one chain differ by kernel stack or
/// thread; ties by chain, so the order is stable).
pub fn weigh_chains(rows: &[&Value], weight: &str) -> Vec<(Vec<String>, u64)> {
    let mut sums: HashMap<Vec<String>, u64> = HashMap::new();
    for row in rows {
        let chain = frames(row).into_iter().map(str::to_owned).collect();
        let n = row[weight]
            .as_u64()
            .unwrap_or_else(|| panic!("no number {weight:?} in {row}"));
        *sums.entry(chain).or_default() += n;
    }
    let mut chains: Vec<_> = sums.into_iter().collect();
    chains.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    chains
}

/// The share of `chains`' weight whose chain ends at one of [`ROOTS`] (0 when empty).
pub fn share_reaching_root(chains: &[(Vec<String>, u64)], aliases: &Aliases) -> f64 {
    let total: u64 = chains.iter().map(|(_, n)| n).sum();
    let rooted: u64 = chains
        .iter()
        .filter(|(chain, _)| {
            chain
                .last()
                .is_some_and(|last| ROOTS.iter().any(|root| aliases.same(last, root)))
        })
        .map(|(_, n)| n)
        .sum();
    rooted as f64 / total.max(1) as f64
}

/// One chain per line, `weight  f0 <- f1 <- ...`, for failure messages.
pub fn describe(chains: &[(Vec<String>, u64)], limit: usize) -> String {
    chains
        .iter()
        .take(limit)
        .map(|(chain, n)| format!("{n:>8}  {}", chain.join(" <- ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chains_are_weighed_and_matched_by_alias() {
        let aliases = Aliases::of(&[LIBC]);
        let report = json!({"stacks": [
            {"pid": 7, "count": 2, "frames": ["touch", "raise", "_start"]},
            {"pid": 7, "count": 3, "frames": ["touch", "raise", "_start"]},
            {"pid": 7, "count": 4, "frames": ["touch", "gsignal"]},
            {"pid": 8, "count": 9, "frames": ["touch"]},
        ]});
        let rows = rows_with_leaf(&report, "stacks", 7, "touch", &aliases);
        assert_eq!(rows.len(), 3);
        let chains = weigh_chains(&rows, "count");
        assert_eq!(chains[0].1, 5, "{chains:?}");
        assert!(aliases.chain_is(&chains[0].0, &["touch", "__GI_raise", "_start"]));
        assert!(!aliases.chain_is(&chains[0].0, &["touch", "raise"]));
        assert!(!aliases.chain_is(&chains[1].0, &["touch", "malloc"]));
        assert_eq!(share_reaching_root(&chains, &aliases), 5.0 / 9.0);
        assert!(describe(&chains, 1).contains("touch <- raise <- _start"));
    }

    /// memtrace names glibc's functions as their DWARF says (blazesym), perf as the symbol
    /// table's global symbol does: one function each time.
    #[test]
    fn libc_functions_are_known_by_their_debug_names() {
        let aliases = Aliases::of(&[LIBC]);
        for (dwarf, symbol) in [
            ("__libc_start_main_impl", "__libc_start_main"),
            ("__GI_raise", "raise"),
            ("__GI_madvise", "__madvise"),
            ("__GI_madvise", "madvise"),
            (
                "__memcpy_avx_unaligned_erms",
                "__memmove_avx_unaligned_erms",
            ),
        ] {
            assert!(aliases.same(dwarf, symbol), "{dwarf} {symbol}");
        }
        assert!(!aliases.same("raise", "malloc"));
    }
}
