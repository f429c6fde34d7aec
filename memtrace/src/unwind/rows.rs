//! A binary's unwind rows, from its `.eh_frame` (`.debug_frame` where that is all there is),
//! in the compact form the eBPF walk searches (`memtrace_common::unwind`). gimli evaluates
//! each FDE's instructions into rows; each row is cut to the few rules x86-64 code uses
//! (CFA from rsp or rbp, rbp saved on the stack, the PLT expression, a signal trampoline).
//! Anything else is an invalid row, where a walk ends and says so.
use anyhow::{Context, Result};
use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};
use memtrace_common::unwind::{rule, UnwindRow, RBP_LOST};
use object::{Object, ObjectSection};

/// The rules a binary's code follows, sorted by address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    /// Page-aligned address the rows' `pc`s are offsets from.
    pub base: u64,
    pub rows: Vec<UnwindRow>,
}

/// A row as gimli describes it, before it is cut to an offset from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: u8,
    pub cfa_offset: u16,
    pub rbp: i8,
}

impl Rule {
    pub const INVALID: Rule = Rule {
        kind: rule::INVALID,
        cfa_offset: 0,
        rbp: 0,
    };
}

/// The rows of an ELF image (a file's bytes, or the vDSO's); empty when it has no frame
/// information.
pub fn build(image: &[u8]) -> Result<Rows> {
    let elf = object::File::parse(image).context("not an ELF file")?;
    let ranges = ranges(&elf)?;
    Ok(compact(ranges))
}

/// Every (start, end, rule) the binary's frame information gives, FDE by FDE.
pub fn ranges(elf: &object::File) -> Result<Vec<(u64, u64, Rule)>> {
    let address = |name: &str| elf.section_by_name(name).map_or(0, |s| s.address());
    let mut bases = BaseAddresses::default()
        .set_text(address(".text"))
        .set_got(address(".got"));
    if let Some(section) = elf.section_by_name(".eh_frame") {
        let data = section.data().context("reading .eh_frame")?;
        bases = bases.set_eh_frame(section.address());
        let mut eh_frame = EhFrame::new(data, LittleEndian);
        eh_frame.set_address_size(8);
        return section_ranges(&eh_frame, &bases);
    }
    if let Some(section) = elf.section_by_name(".debug_frame") {
        let data = section.data().context("reading .debug_frame")?;
        let mut debug_frame = DebugFrame::new(data, LittleEndian);
        debug_frame.set_address_size(8);
        return section_ranges(&debug_frame, &bases);
    }
    Ok(Vec::new())
}

type Reader<'a> = gimli::EndianSlice<'a, LittleEndian>;

fn section_ranges<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
) -> Result<Vec<(u64, u64, Rule)>>
where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let mut ranges = Vec::new();
    let mut context = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next().context("reading frame information")? {
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        // A malformed FDE loses its function's rows, not the binary's.
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        let signal = fde.is_signal_trampoline();
        let Ok(mut table) = fde.rows(section, bases, &mut context) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let rule = if signal {
                Rule {
                    kind: rule::SIGNAL,
                    cfa_offset: 0,
                    rbp: 0,
                }
            } else {
                rule_of(row, section)
            };
            ranges.push((row.start_address(), row.end_address(), rule));
        }
    }
    Ok(ranges)
}

/// One gimli row, cut to what the eBPF walk follows.
pub fn rule_of<'a, S: UnwindSection<Reader<'a>>>(
    row: &gimli::UnwindTableRow<usize>,
    section: &S,
) -> Rule {
    match row.register(X86_64::RA) {
        Some(RegisterRule::Offset(-8)) => {}
        Some(RegisterRule::Undefined) => {
            return Rule {
                kind: rule::END,
                cfa_offset: 0,
                rbp: 0,
            }
        }
        _ => return Rule::INVALID,
    }
    let (kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = u16::try_from(*offset) else {
                return Rule::INVALID;
            };
            match *register {
                X86_64::RSP => (rule::CFA_RSP, offset),
                X86_64::RBP => (rule::CFA_RBP, offset),
                _ => return Rule::INVALID,
            }
        }
        CfaRule::Expression(expression) => {
            let Ok(expression) = expression.get(section) else {
                return Rule::INVALID;
            };
            match plt_threshold(expression.0.slice()) {
                Some(threshold) => (rule::PLT, threshold),
                None => return Rule::INVALID,
            }
        }
    };
    let rbp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(offset)) if offset % 8 == 0 => i8::try_from(offset / 8)
            .ok()
            .filter(|&w| w != 0 && w != RBP_LOST)
            .unwrap_or(RBP_LOST),
        Some(_) => RBP_LOST,
    };
    Rule {
        kind,
        cfa_offset,
        rbp,
    }
}

/// The PLT's CFA expression, as every x86-64 linker writes it: `rsp + 8 + ((rip & 15) >= N) <<
/// 3`: the entry pushes a word at instruction offset N (11 in .plt, 10 in some variants).
pub fn plt_threshold(expression: &[u8]) -> Option<u16> {
    const BREG7_8: [u8; 2] = [0x77, 0x08];
    const BREG16_0: [u8; 2] = [0x80, 0x00];
    const LIT15_AND: [u8; 2] = [0x3f, 0x1a];
    const GE_LIT3_SHL_PLUS: [u8; 4] = [0x2a, 0x33, 0x24, 0x22];
    let [a, b, c, d, e, f, lit, g, h, i, j] = expression else {
        return None;
    };
    let matches = [*a, *b] == BREG7_8
        && [*c, *d] == BREG16_0
        && [*e, *f] == LIT15_AND
        && [*g, *h, *i, *j] == GE_LIT3_SHL_PLUS
        && (0x30..=0x4f).contains(lit);
    matches.then(|| u16::from(lit - 0x30))
}

/// Sorted, gap-marked, merged rows: a gap between FDEs gets an invalid row, and a row with
/// the same rule as the one before it (and no gap between) is dropped.
pub fn compact(mut ranges: Vec<(u64, u64, Rule)>) -> Rows {
    ranges.retain(|(start, end, _)| start < end);
    ranges.sort_by_key(|&(start, end, _)| (start, end));
    let Some(&(first, _, _)) = ranges.first() else {
        return Rows::default();
    };
    let base = first & !0xfff;
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(ranges.len());
    let mut covered_to = first;
    let push = |rows: &mut Vec<UnwindRow>, at: u64, rule: Rule| {
        let Ok(pc) = u32::try_from(at - base) else {
            return;
        };
        let row = UnwindRow {
            pc,
            cfa_offset: rule.cfa_offset,
            rbp: rule.rbp,
            kind: rule.kind,
        };
        match rows.last_mut() {
            // Same place (overlapping FDEs): the later one wins.
            Some(last) if last.pc == pc => *last = row,
            Some(last) if same_rule(last, &row) => {}
            _ => rows.push(row),
        }
    };
    for (start, end, rule) in ranges {
        if start > covered_to {
            push(&mut rows, covered_to, Rule::INVALID);
        }
        push(&mut rows, start, rule);
        covered_to = covered_to.max(end);
    }
    push(&mut rows, covered_to, Rule::INVALID);
    Rows { base, rows }
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.kind, a.cfa_offset, a.rbp) == (b.kind, b.cfa_offset, b.rbp)
}

/// The page index the walk starts its search from: entry p is the index of the row covering
/// `base + p * 4096` (0 when none does), entry `pages` the last row's.
pub fn page_index(rows: &Rows) -> Vec<u32> {
    use memtrace_common::unwind::PAGE_SHIFT;
    let Some(last) = rows.rows.last() else {
        return Vec::new();
    };
    let pages = (last.pc >> PAGE_SHIFT) as usize + 1;
    let mut index = Vec::with_capacity(pages + 1);
    let mut row = 0usize;
    for page in 0..pages {
        let start = (page as u32) << PAGE_SHIFT;
        while row + 1 < rows.rows.len() && rows.rows[row + 1].pc <= start {
            row += 1;
        }
        index.push(row as u32);
    }
    index.push(rows.rows.len() as u32 - 1);
    index
}

/// The rule the rows give for `address` (a binary address), as the eBPF walk finds it: for
/// tests and the oracle check.
pub fn lookup(rows: &Rows, address: u64) -> Option<&UnwindRow> {
    let offset = u32::try_from(address.checked_sub(rows.base)?).ok()?;
    let at = rows.rows.partition_point(|row| row.pc <= offset);
    rows.rows[..at].last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::UnwindContext;
    use memtrace_common::unwind::PAGE_SHIFT;

    /// The eBPF walk's search, step for step: the page's first row, then a binary search up
    /// to the next page's.
    fn search_as_the_walk_does(rows: &Rows, index: &[u32], address: u64) -> Option<UnwindRow> {
        let offset = address.checked_sub(rows.base)?;
        let page = (offset >> PAGE_SHIFT) as usize;
        if page + 1 >= index.len() {
            return None;
        }
        let (mut low, mut high) = (index[page], index[page + 1] + 1);
        for _ in 0..13 {
            if high - low <= 1 {
                break;
            }
            let middle = low + (high - low) / 2;
            if u64::from(rows.rows[middle as usize].pc) <= offset {
                low = middle;
            } else {
                high = middle;
            }
        }
        let row = rows.rows[low as usize];
        (u64::from(row.pc) <= offset).then_some(row)
    }

    /// Every row gimli evaluates from the binary's .eh_frame, at its first and last address,
    /// found by the eBPF walk's search with the same rule; and gimli's own lookup by address
    /// (through .eh_frame_hdr, another path) agrees at each.
    fn check_binary(path: &str) -> usize {
        let Ok(data) = std::fs::read(path) else {
            assert!(
                !std::env::var("CI").is_ok_and(|ci| ci == "true"),
                "{path} missing (cargo xtask setup installs it)"
            );
            return 0;
        };
        let elf = object::File::parse(&*data).unwrap();
        let ranges = ranges(&elf).unwrap();
        assert!(!ranges.is_empty(), "{path}: no rows");
        let rows = compact(ranges.clone());
        let index = page_index(&rows);
        let eh_frame_section = elf.section_by_name(".eh_frame").unwrap();
        let hdr_section = elf.section_by_name(".eh_frame_hdr").unwrap();
        let address = |name: &str| elf.section_by_name(name).map_or(0, |s| s.address());
        let bases = BaseAddresses::default()
            .set_eh_frame(eh_frame_section.address())
            .set_eh_frame_hdr(hdr_section.address())
            .set_text(address(".text"))
            .set_got(address(".got"));
        let eh_frame = EhFrame::new(eh_frame_section.data().unwrap(), LittleEndian);
        let hdr = gimli::EhFrameHdr::new(hdr_section.data().unwrap(), LittleEndian)
            .parse(&bases, 8)
            .unwrap();
        let table = hdr.table().unwrap();
        let mut context = Box::new(UnwindContext::new());
        let mut checked = 0;
        for &(start, end, rule) in &ranges {
            for at in [start, end - 1] {
                let found = search_as_the_walk_does(&rows, &index, at)
                    .unwrap_or_else(|| panic!("{path}: no row for {at:#x}"));
                assert_eq!(
                    (found.kind, found.cfa_offset, found.rbp),
                    (rule.kind, rule.cfa_offset, rule.rbp),
                    "{path}: at {at:#x}"
                );
                assert_eq!(Some(&found), lookup(&rows, at), "{path}: at {at:#x}");
                if rule.kind == rule::SIGNAL {
                    continue;
                }
                let row = table
                    .unwind_info_for_address(
                        &eh_frame,
                        &bases,
                        &mut context,
                        at,
                        EhFrame::cie_from_offset,
                    )
                    .unwrap_or_else(|e| panic!("{path}: gimli has no row at {at:#x}: {e}"));
                assert_eq!(rule_of(row, &eh_frame), rule, "{path}: at {at:#x}");
                checked += 1;
            }
        }
        // Past the last FDE, nothing: the walk ends there.
        let (_, last_end, _) = ranges.iter().max_by_key(|r| r.1).unwrap();
        let past = search_as_the_walk_does(&rows, &index, *last_end);
        assert!(past.is_none_or(|row| row.kind == rule::INVALID), "{path}");
        checked
    }

    #[test]
    fn rows_agree_with_gimli_for_libc() {
        check_binary("/lib/x86_64-linux-gnu/libc.so.6");
    }

    #[test]
    fn rows_agree_with_gimli_for_python() {
        check_binary("/usr/bin/python3.11");
    }

    #[test]
    fn rows_agree_with_gimli_for_redis() {
        check_binary("/usr/bin/redis-server");
    }

    #[test]
    fn rows_agree_with_gimli_for_this_rust_binary() {
        let exe = std::env::current_exe().unwrap();
        assert!(check_binary(exe.to_str().unwrap()) > 1000);
    }

    #[test]
    fn plt_expression_is_recognized() {
        // As in every x86-64 binary's .plt FDE (readelf --debug-dump=frames).
        let expression = [
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ];
        assert_eq!(plt_threshold(&expression), Some(11));
        assert_eq!(plt_threshold(&expression[..10]), None);
    }

    #[test]
    fn gaps_between_functions_are_invalid_and_equal_rules_merge() {
        let rsp = |offset| Rule {
            kind: rule::CFA_RSP,
            cfa_offset: offset,
            rbp: 0,
        };
        let rows = compact(vec![
            (0x1000, 0x1004, rsp(8)),
            (0x1004, 0x1010, rsp(8)),
            (0x1020, 0x1030, rsp(16)),
        ]);
        let kinds: Vec<(u32, u8, u16)> = (rows.rows.iter())
            .map(|r| (r.pc, r.kind, r.cfa_offset))
            .collect();
        assert_eq!(
            kinds,
            [
                (0, rule::CFA_RSP, 8),
                (0x10, rule::INVALID, 0),
                (0x20, rule::CFA_RSP, 16),
                (0x30, rule::INVALID, 0)
            ]
        );
    }
}
