//! Where in a function an entry uprobe costs least. x86-64 uprobes emulate a few instructions
//! (a push of a register, direct jumps, conditional jumps and calls, `nop`) and single-step any
//! other out of line, which costs a second trap. Measured here: 9 µs per call of glibc's free,
//! whose first instruction (`test rdi, rdi`) is single-stepped, against 0.7 µs for malloc,
//! whose first is `push r12`. So the probe goes on the first emulated instruction, provided the
//! ones before it cannot branch away and leave the argument registers as they were.
use std::path::Path;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};
use object::{Object, ObjectSection, ObjectSymbol};

/// Instructions looked at from the function's start.
const LOOK_AHEAD: usize = 8;
/// The System V argument registers, in order.
const ARGUMENT_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// A library's file, read once for all the functions looked up in it.
pub struct LibraryCode {
    data: Vec<u8>,
}

impl LibraryCode {
    pub fn read(library: &Path) -> Option<Self> {
        std::fs::read(library).ok().map(|data| Self { data })
    }

    /// The offset from `symbol`'s start for an entry probe that reads the first `arguments`
    /// arguments; 0 (the start) when nothing better is safe or the code is unreadable.
    pub fn entry_offset(&self, symbol: &str, arguments: usize) -> u64 {
        let Some((address, code)) = self.function_code(symbol) else {
            return 0;
        };
        best_offset(code, address, &ARGUMENT_REGISTERS[..arguments.min(6)])
    }

    /// The address of `symbol` (functions with several names share one).
    pub fn address(&self, symbol: &str) -> Option<u64> {
        self.function_code(symbol).map(|(address, _)| address)
    }

    /// The function's address and its first bytes.
    fn function_code(&self, symbol: &str) -> Option<(u64, &[u8])> {
        let file = object::File::parse(&*self.data).ok()?;
        let found = file
            .dynamic_symbols()
            .chain(file.symbols())
            .find(|s| s.name() == Ok(symbol) && s.address() != 0)?;
        let address = found.address();
        let section = file.section_by_index(found.section_index()?).ok()?;
        let (file_offset, size) = section.file_range()?;
        let start = file_offset + (address - section.address());
        let end = (start + 64).min(file_offset + size) as usize;
        Some((address, self.data.get(start as usize..end)?))
    }
}

/// The first emulated instruction reached by every call, with the arguments untouched.
fn best_offset(code: &[u8], address: u64, arguments: &[Register]) -> u64 {
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
            return instruction.ip() - address;
        }
        // Past this one, the probe could miss calls or read changed arguments.
        let writes_argument = info.info(&instruction).used_registers().iter().any(|used| {
            arguments.contains(&used.register().full_register())
                && !matches!(used.access(), OpAccess::Read | OpAccess::NoMemAccess)
        });
        if instruction.flow_control() != FlowControl::Next || writes_argument {
            break;
        }
    }
    0
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

    const FREE_ARGS: &[Register] = &[Register::RDI];

    #[test]
    fn an_emulated_first_instruction_is_the_site() {
        // push r12; push rbp
        assert_eq!(best_offset(&[0x41, 0x54, 0x55], 0x1000, FREE_ARGS), 0);
    }

    #[test]
    fn a_test_before_a_branch_is_skipped() {
        // test rdi, rdi; je +0xbf; push rbp (glibc 2.36's free)
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(best_offset(&code, 0x98ef0, FREE_ARGS), 3);
    }

    #[test]
    fn an_argument_written_first_keeps_the_start() {
        // mov rdi, rbx; push rbp
        assert_eq!(best_offset(&[0x48, 0x89, 0xdf, 0x55], 0x1000, FREE_ARGS), 0);
    }

    #[test]
    fn nothing_past_a_return() {
        // ret; push rbp
        assert_eq!(best_offset(&[0xc3, 0x55], 0x1000, FREE_ARGS), 0);
    }

    #[test]
    fn other_registers_may_change() {
        // mov rbx, rdi; sub rsp, 0x10; push rbp
        let code = [0x48, 0x89, 0xfb, 0x48, 0x83, 0xec, 0x10, 0x55];
        assert_eq!(best_offset(&code, 0x1000, FREE_ARGS), 7);
    }
}
