//! Whether a binary holds a CPython interpreter (the `python3.X` executable, which links
//! libpython in on Debian, or `libpython3.X.so`), and which version: its exported
//! `_PyRuntime` (the interpreter's global state) and `Py_Version` (`PY_VERSION_HEX`, in its
//! read-only data).
use object::{Object, ObjectSection, ObjectSymbol};

/// A binary's interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// `_PyRuntime`'s address in the binary (as in its program headers).
    pub runtime: u64,
    /// `PyCode_Type`'s: every code object's type.
    pub code_type: u64,
    pub major: u8,
    pub minor: u8,
    pub micro: u8,
}

impl std::fmt::Display for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// The interpreter in `elf`, if it exports one. Versions before 3.11 have no `Py_Version`
/// and are not found (their stacks stay native).
pub fn find(elf: &object::File) -> Option<Interpreter> {
    let (mut runtime, mut code_type, mut version) = (None, None, None);
    for symbol in elf.dynamic_symbols() {
        match symbol.name() {
            Ok("_PyRuntime") => runtime = Some(symbol.address()),
            Ok("PyCode_Type") => code_type = Some(symbol.address()),
            Ok("Py_Version") => version = Some(symbol.address()),
            _ => {}
        }
    }
    let hex = read_u32(elf, version?)?;
    Some(Interpreter {
        runtime: runtime?,
        code_type: code_type?,
        major: (hex >> 24) as u8,
        minor: (hex >> 16) as u8,
        micro: (hex >> 8) as u8,
    })
}

/// The 4-byte little-endian value at `address`, from the section that holds it.
fn read_u32(elf: &object::File, address: u64) -> Option<u32> {
    let section = elf.sections().find(|section| {
        (section.address()..section.address() + section.size()).contains(&address)
    })?;
    let data = section.data().ok()?;
    let at = (address - section.address()) as usize;
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Debian's interpreter: the version it reports of itself.
    #[test]
    fn finds_debians_python_and_its_version() {
        let python = "/usr/bin/python3.11";
        let image = std::fs::read(python).expect("python3.11 installed (cargo xtask setup)");
        let elf = object::File::parse(&*image).unwrap();
        let found = find(&elf).expect("an interpreter in python3.11");
        let said = Command::new(python)
            .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
            .output()
            .unwrap();
        assert_eq!(
            found.to_string(),
            String::from_utf8_lossy(&said.stdout).trim()
        );
        assert_ne!(found.runtime, 0);
    }

    #[test]
    fn a_binary_without_an_interpreter_has_none() {
        let image = std::fs::read("/bin/true").unwrap();
        let elf = object::File::parse(&*image).unwrap();
        assert_eq!(find(&elf), None);
    }
}
