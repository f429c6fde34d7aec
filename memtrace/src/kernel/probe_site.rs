//! Where in a function an entry uprobe costs least. x86-64 uprobes emulate a few instructions
//! (a push of a register, direct jumps, conditional jumps and calls, `nop`) and single-step any
//! other out of line, which costs a second trap. Measured here: 9 µs per call of glibc's free,
//! whose first instruction (`test rdi, rdi`) is single-stepped, against 0.7 µs for malloc,
//! whose first is `push r12`; jemalloc's malloc starts with `cmp rdi, 0x1000`, tcmalloc's and
//! mimalloc's with loads. So the probe goes on the first emulated instruction that every call
//! reaches, provided the arguments can still be read there: in their own registers, or in
//! registers the instructions before copied them to (the attach cookie says which,
//! `memtrace_common::arg_register`). A return probe shares the entry's site, so before it the
//! stack pointer must not move: the return address must be on top of the stack.
use std::{collections::HashMap, path::Path};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};
use memtrace_common::arg_register;
use object::{Object, ObjectSection, ObjectSymbol, SectionIndex};

/// Instructions looked at from the function's start.
const LOOK_AHEAD: usize = 12;
/// The System V argument registers, in order.
const ARGUMENT_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];
/// The registers the eBPF side can read an argument from, by `arg_register` code.
const READABLE: [(Register, u8); 15] = [
    (Register::RDI, arg_register::RDI),
    (Register::RSI, arg_register::RSI),
    (Register::RDX, arg_register::RDX),
    (Register::RCX, arg_register::RCX),
    (Register::R8, arg_register::R8),
    (Register::R9, arg_register::R9),
    (Register::RAX, arg_register::RAX),
    (Register::RBX, arg_register::RBX),
    (Register::RBP, arg_register::RBP),
    (Register::R10, arg_register::R10),
    (Register::R11, arg_register::R11),
    (Register::R12, arg_register::R12),
    (Register::R13, arg_register::R13),
    (Register::R14, arg_register::R14),
    (Register::R15, arg_register::R15),
];

/// Where an entry probe goes: bytes past the function's start, and the attach cookie that
/// tells the probe where each argument is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntrySite {
    pub offset: u64,
    pub cookie: u64,
}

/// A library's (or executable's) file, mapped once and its defined symbols indexed once, for
/// all the functions looked up in it.
pub struct LibraryCode {
    data: memmap2::Mmap,
    /// Each defined symbol's address and section (the dynamic table's first, as the loader
    /// binds them).
    symbols: HashMap<String, (u64, SectionIndex)>,
}

impl LibraryCode {
    pub fn read(library: &Path) -> Option<Self> {
        let file = std::fs::File::open(library).ok()?;
        // Safety: read only; a file rewritten under us gives wrong bytes, not unsafety in
        // practice (object checks every bound), as for every ELF reader that maps.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let mut symbols = HashMap::new();
        {
            let parsed = object::File::parse(&*data).ok()?;
            let defined = (parsed.dynamic_symbols().chain(parsed.symbols()))
                .filter(|s| s.is_definition() && s.address() != 0);
            for symbol in defined {
                let (Ok(name), Some(section)) = (symbol.name(), symbol.section_index()) else {
                    continue;
                };
                (symbols.entry(name.to_owned())).or_insert((symbol.address(), section));
            }
        }
        Some(Self { data, symbols })
    }

    /// The site for an entry probe on `symbol` that reads its first `arguments` arguments,
    /// with a return probe sharing it when `return_probe`; the function's start when nothing
    /// better is safe or the code is unreadable.
    pub fn entry_site(&self, symbol: &str, arguments: usize, return_probe: bool) -> EntrySite {
        let Some((address, code)) = self.function_code(symbol) else {
            return EntrySite::default();
        };
        best_site(code, address, arguments.min(6), return_probe)
    }

    /// The address of `symbol` (functions with several names share one).
    pub fn address(&self, symbol: &str) -> Option<u64> {
        self.symbols.get(symbol).map(|&(address, _)| address)
    }

    /// Whether the file defines `symbol` (dynamic or static symbol table).
    pub fn defines(&self, symbol: &str) -> bool {
        self.symbols.contains_key(symbol)
    }

    /// Every defined symbol's name, for finding an allocator's prefix.
    pub fn defined_names(&self) -> impl Iterator<Item = &str> {
        self.symbols.keys().map(String::as_str)
    }

    /// The function's address and its first bytes.
    fn function_code(&self, symbol: &str) -> Option<(u64, &[u8])> {
        let &(address, index) = self.symbols.get(symbol)?;
        let file = object::File::parse(&*self.data).ok()?;
        let section = file.section_by_index(index).ok()?;
        let (file_offset, size) = section.file_range()?;
        let start = file_offset + (address - section.address());
        let end = (start + 64).min(file_offset + size) as usize;
        Some((address, self.data.get(start as usize..end)?))
    }
}

/// The first emulated instruction reached by every call, with each argument still in some
/// register (and, for a return probe, the stack untouched).
fn best_site(code: &[u8], address: u64, arguments: usize, return_probe: bool) -> EntrySite {
    // For each argument, the registers holding it now.
    let mut holders: Vec<Vec<Register>> = ARGUMENT_REGISTERS[..arguments]
        .iter()
        .map(|&register| vec![register])
        .collect();
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for _ in 0..LOOK_AHEAD {
        if !decoder.can_decode() {
            break;
        }
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        if emulated(&instruction) {
            return EntrySite {
                offset: instruction.ip() - address,
                cookie: cookie(&holders),
            };
        }
        // Past a branch, the probe could miss calls.
        if instruction.flow_control() != FlowControl::Next {
            break;
        }
        let written: Vec<Register> = (info.info(&instruction).used_registers().iter())
            .filter(|used| !matches!(used.access(), OpAccess::Read | OpAccess::CondRead))
            .map(|used| used.register().full_register())
            .collect();
        if return_probe && written.contains(&Register::RSP) {
            break;
        }
        let copied_from = register_copy(&instruction);
        for held in &mut holders {
            let copy = copied_from.is_some_and(|source| held.contains(&source));
            held.retain(|register| !written.contains(register));
            if copy {
                held.push(instruction.op0_register());
            }
        }
        if holders.iter().any(|held| held.is_empty()) {
            break;
        }
    }
    EntrySite::default()
}

/// The source of `mov r64, r64`: the one write that keeps a value.
fn register_copy(instruction: &iced_x86::Instruction) -> Option<Register> {
    let is_gpr64 =
        |kind: OpKind, register: Register| kind == OpKind::Register && register.is_gpr64();
    (instruction.mnemonic() == Mnemonic::Mov
        && is_gpr64(instruction.op0_kind(), instruction.op0_register())
        && is_gpr64(instruction.op1_kind(), instruction.op1_register()))
    .then(|| instruction.op1_register())
}

/// The cookie for arguments held in `holders`: 0 for one in its own register.
fn cookie(holders: &[Vec<Register>]) -> u64 {
    let mut cookie = 0;
    for (index, held) in holders.iter().enumerate() {
        if held.contains(&ARGUMENT_REGISTERS[index]) {
            continue;
        }
        let code = held.iter().find_map(|register| {
            READABLE
                .iter()
                .find(|(readable, _)| readable == register)
                .map(|(_, code)| *code)
        });
        cookie |= u64::from(code.unwrap_or(0)) << (arg_register::BITS as usize * index);
    }
    cookie
}

/// Whether x86-64 uprobes emulate the instruction instead of single-stepping it.
fn emulated(instruction: &iced_x86::Instruction) -> bool {
    let direct = matches!(
        instruction.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    );
    match instruction.flow_control() {
        FlowControl::UnconditionalBranch | FlowControl::Call => direct,
        FlowControl::ConditionalBranch => direct && instruction.is_jcc_short_or_near(),
        FlowControl::Next => {
            (instruction.mnemonic() == Mnemonic::Push
                && instruction.op0_kind() == OpKind::Register
                && instruction.op0_register().is_gpr64())
                || (instruction.mnemonic() == Mnemonic::Nop && instruction.len() == 1)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &[u8], arguments: usize, return_probe: bool) -> (u64, u64) {
        let site = best_site(code, 0x1000, arguments, return_probe);
        (site.offset, site.cookie)
    }

    #[test]
    fn an_emulated_first_instruction_is_the_site() {
        // push r12; push rbp
        assert_eq!(site(&[0x41, 0x54, 0x55], 1, true), (0, 0));
    }

    #[test]
    fn a_test_before_a_branch_is_skipped() {
        // test rdi, rdi; je +0xbf; push rbp (glibc 2.36's free)
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(site(&code, 1, false), (3, 0));
    }

    #[test]
    fn jemalloc_malloc_probes_its_first_branch() {
        // cmp rdi, 0x1000; ja +0x93 (Debian's libjemalloc.so.2, malloc)
        let code = [0x48, 0x81, 0xff, 0, 0x10, 0, 0, 0x0f, 0x87, 0x93, 0, 0, 0];
        assert_eq!(site(&code, 1, true), (7, 0));
    }

    #[test]
    fn an_argument_copied_away_is_read_where_it_went() {
        // mov rax, [rip+0xb449]; mov rsi, rdi; mov rdi, fs:[rax]; cmp rsi, 0x400;
        // ja +0x29 (Debian's libmimalloc.so.2, malloc: the size moves to rsi)
        let code = [
            0x48, 0x8b, 0x05, 0x49, 0xb4, 0, 0, 0x48, 0x89, 0xfe, 0x64, 0x48, 0x8b, 0x38, 0x48,
            0x81, 0xfe, 0, 4, 0, 0, 0x77, 0x29,
        ];
        let rsi = u64::from(arg_register::RSI);
        assert_eq!(site(&code, 1, true), (21, rsi));
        assert_eq!(arg_register::of(rsi, 0), arg_register::RSI);
    }

    #[test]
    fn an_argument_overwritten_keeps_the_start() {
        // mov rdi, rbx; push rbp
        assert_eq!(site(&[0x48, 0x89, 0xdf, 0x55], 1, false), (0, 0));
    }

    #[test]
    fn a_return_probe_needs_the_stack_untouched() {
        // sub rsp, 0x10; push rbp: fine for free, not for a function with a return probe
        let code = [0x48, 0x83, 0xec, 0x10, 0x55];
        assert_eq!(site(&code, 1, false), (4, 0));
        assert_eq!(site(&code, 1, true), (0, 0));
    }

    #[test]
    fn nothing_past_a_return() {
        // ret; push rbp
        assert_eq!(site(&[0xc3, 0x55], 1, false), (0, 0));
    }

    #[test]
    fn other_registers_may_change() {
        // mov rbx, rdi; sub rsp, 0x10; push rbp
        let code = [0x48, 0x89, 0xfb, 0x48, 0x83, 0xec, 0x10, 0x55];
        assert_eq!(site(&code, 1, false), (7, 0));
    }
}
