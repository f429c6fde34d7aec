//! CPython code objects read out of a live process: a Python frame points at its code object,
//! and a profile wants its function name, file and line.
//!
//! Everything is read with `pread` on `/proc/PID/mem`, checked before use: the process keeps
//! running, so an object may be freed or rewritten while it is read.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context};

use super::linetable;

/// Offsets in a CPython version's objects that code.rs needs.
#[derive(Clone, Copy, Debug)]
pub struct CodeLayout {
    /// `PyCodeObject.co_filename`, a `str`.
    pub code_filename: u64,
    /// `PyCodeObject.co_name`, a `str`.
    pub code_name: u64,
    /// `PyCodeObject.co_qualname`, a `str`.
    pub code_qualname: u64,
    /// `PyCodeObject.co_linetable`, a `bytes`.
    pub code_linetable: u64,
    /// `PyCodeObject.co_firstlineno`, a C `int`.
    pub code_firstlineno: u64,
    /// `PyCodeObject.co_code_adaptive`: the first instruction, where instruction indexes count from.
    pub code_code_adaptive: u64,
    /// `PyObject.ob_type`.
    pub object_type: u64,
    /// `PyASCIIObject.length`: the string's length in code points.
    pub str_length: u64,
    /// `PyASCIIObject.state`: the bit fields that say how the characters are stored.
    pub str_state: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub str_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters start.
    pub str_compact_size: u64,
    /// `PyBytesObject.ob_size` (from `PyVarObject`): the length in bytes.
    pub bytes_size: u64,
    /// `PyBytesObject.ob_sval`: where the bytes start.
    pub bytes_data: u64,
}

/// CPython 3.11 on 64-bit Linux, by `offsetof` and `sizeof` against its headers.
pub const LAYOUT_3_11: CodeLayout = CodeLayout {
    code_filename: 112,
    code_name: 120,
    code_qualname: 128,
    code_linetable: 136,
    code_firstlineno: 72,
    code_code_adaptive: 184,
    object_type: 8,
    str_length: 16,
    str_state: 32,
    str_ascii_size: 48,
    str_compact_size: 72,
    bytes_size: 16,
    bytes_data: 32,
};

/// A code object's names, place and line table, copied out of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeObject {
    pub name: String,
    pub qualname: String,
    pub filename: String,
    pub first_line: u32,
    pub line_table: Vec<u8>,
}

impl CodeObject {
    /// Line of the instruction at `index` (in 2-byte code units from co_code_adaptive); None if
    /// the table says none.
    pub fn line_of(&self, index: u32) -> Option<u32> {
        linetable::line_of(&self.line_table, self.first_line, index)
    }
}

/// The longest string read, in bytes of characters: names and paths are far shorter, so a
/// longer one is a stale or misread object.
const MAX_STR_BYTES: u64 = 64 << 10;
/// The longest line table read: a function of many thousand lines stays well below.
const MAX_LINE_TABLE: u64 = 1 << 20;

/// `state.kind`: bits 2..4 (after `interned:2`), the bytes per character: 1, 2 or 4.
const STATE_KIND_SHIFT: u32 = 2;
const STATE_KIND_MASK: u32 = 7;
/// `state.compact`: the characters follow the object's header.
const STATE_COMPACT: u32 = 1 << 5;
/// `state.ascii`: the characters are ASCII and follow the shorter `PyASCIIObject` header.
const STATE_ASCII: u32 = 1 << 6;

/// Reads the code object at `address` of the process whose `/proc/PID/mem` is `mem` (pread,
/// through `FileExt::read_exact_at`). Returns an error if any read fails or an object is
/// implausible: no type, a negative length, a string of more than 64 KiB of characters or of a
/// kind other than compact 1, 2 or 4 bytes, a line table over 1 MiB, a negative first line.
pub fn read_code(mem: &File, address: u64, layout: &CodeLayout) -> anyhow::Result<CodeObject> {
    let header = read_code_header(mem, address, layout)?;
    let field = |offset: u64| word(&header, offset);
    let first_line = i32::from_ne_bytes(bytes_at(&header, layout.code_firstlineno));
    let first_line = u32::try_from(first_line)
        .with_context(|| format!("negative co_firstlineno {first_line}"))?;
    let string = |offset: u64, what: &str| {
        read_str(mem, field(offset), layout).with_context(|| format!("reading {what}"))
    };
    let code = CodeObject {
        name: string(layout.code_name, "co_name")?,
        qualname: string(layout.code_qualname, "co_qualname")?,
        filename: string(layout.code_filename, "co_filename")?,
        first_line,
        line_table: read_bytes_object(mem, field(layout.code_linetable), layout)
            .context("reading co_linetable")?,
    };
    Ok(code)
}

/// The fields of a code object that say whether it is the one a frame ran: its type, and
/// the objects the walk's check is made of (memtrace-common's `python::frame::check`).
pub struct Identity {
    pub code_type: u64,
    pub filename: u64,
    pub name: u64,
}

impl Identity {
    pub fn check(&self) -> u64 {
        memtrace_common::python::frame::check(self.filename, self.name)
    }
}

/// The code object's [`Identity`] at `address`, in one read.
pub fn read_identity(mem: &File, address: u64, layout: &CodeLayout) -> anyhow::Result<Identity> {
    let fields = [
        (layout.object_type, 8),
        (layout.code_filename, 8),
        (layout.code_name, 8),
    ];
    let header = read(mem, address, span(&fields)).context("reading the code object")?;
    Ok(Identity {
        code_type: word(&header, layout.object_type),
        filename: word(&header, layout.code_filename),
        name: word(&header, layout.code_name),
    })
}

/// The code object's fields up to the last one read, in one read.
fn read_code_header(mem: &File, address: u64, layout: &CodeLayout) -> anyhow::Result<Vec<u8>> {
    let fields = [
        (layout.code_filename, 8),
        (layout.code_name, 8),
        (layout.code_qualname, 8),
        (layout.code_linetable, 8),
        (layout.code_firstlineno, 4),
    ];
    read_object_header(mem, address, layout, &fields).context("reading the code object")
}

/// A `str` object's characters, decoded by the kind its `state` gives.
fn read_str(mem: &File, address: u64, layout: &CodeLayout) -> anyhow::Result<String> {
    let fields = [(layout.str_length, 8), (layout.str_state, 4)];
    let header = read_object_header(mem, address, layout, &fields)?;
    let length = object_len(&header, layout.str_length)?;
    let state = u32::from_ne_bytes(bytes_at(&header, layout.str_state));
    let kind = (state >> STATE_KIND_SHIFT) & STATE_KIND_MASK;
    ensure!(
        state & STATE_COMPACT != 0,
        "not a compact string (state {state:#x})"
    );
    ensure!(
        matches!(kind, 1 | 2 | 4),
        "bad string kind {kind} (state {state:#x})"
    );
    let ascii = state & STATE_ASCII != 0;
    ensure!(!ascii || kind == 1, "ASCII string of kind {kind}");
    let size = length.saturating_mul(u64::from(kind));
    ensure!(size <= MAX_STR_BYTES, "string of {length} characters");
    let data_offset = if ascii {
        layout.str_ascii_size
    } else {
        layout.str_compact_size
    };
    let data = read(mem, offset_address(address, data_offset)?, size)?;
    decode(&data, kind, ascii)
}

/// A `bytes` object's contents.
fn read_bytes_object(mem: &File, address: u64, layout: &CodeLayout) -> anyhow::Result<Vec<u8>> {
    let header = read_object_header(mem, address, layout, &[(layout.bytes_size, 8)])?;
    let length = object_len(&header, layout.bytes_size)?;
    ensure!(length <= MAX_LINE_TABLE, "bytes object of {length} bytes");
    read(mem, offset_address(address, layout.bytes_data)?, length)
}

/// The start of the object at `address`, to cover its type and `fields` (offset, width),
/// after checking it has a type: a zero type is freed or never-written memory.
fn read_object_header(
    mem: &File,
    address: u64,
    layout: &CodeLayout,
    fields: &[(u64, u64)],
) -> anyhow::Result<Vec<u8>> {
    ensure!(address != 0, "null object pointer");
    let len = span(fields).max(layout.object_type + 8);
    let header = read(mem, address, len)?;
    ensure!(
        word(&header, layout.object_type) != 0,
        "object at {address:#x} has no type"
    );
    Ok(header)
}

/// The bytes from an object's start that cover every (offset, width) of `fields`.
fn span(fields: &[(u64, u64)]) -> u64 {
    fields
        .iter()
        .map(|(offset, width)| offset + width)
        .max()
        .unwrap_or(0)
}

/// A `Py_ssize_t` length in an object's header, which must not be negative.
fn object_len(header: &[u8], offset: u64) -> anyhow::Result<u64> {
    let length = i64::from_ne_bytes(bytes_at(header, offset));
    u64::try_from(length).with_context(|| format!("negative object length {length}"))
}

/// Characters of `kind` bytes each into a `String`. Lone surrogates, which a `str` may hold
/// (file names decoded with `surrogateescape`), become U+FFFD.
fn decode(data: &[u8], kind: u32, ascii: bool) -> anyhow::Result<String> {
    if ascii {
        ensure!(data.is_ascii(), "ASCII string with a byte above 0x7f");
        return Ok(data.iter().map(|&byte| char::from(byte)).collect());
    }
    let width = kind as usize;
    data.chunks_exact(width)
        .map(|unit| {
            let point = match unit {
                [byte] => u32::from(*byte),
                [a, b] => u32::from(u16::from_ne_bytes([*a, *b])),
                [a, b, c, d] => u32::from_ne_bytes([*a, *b, *c, *d]),
                _ => unreachable!("kind checked to be 1, 2 or 4"),
            };
            code_point(point)
        })
        .collect()
}

/// One code point as a `char`: U+FFFD for a surrogate, an error past U+10FFFF.
fn code_point(point: u32) -> anyhow::Result<char> {
    if (0xd800..0xe000).contains(&point) {
        return Ok(char::REPLACEMENT_CHARACTER);
    }
    match char::from_u32(point) {
        Some(c) => Ok(c),
        None => bail!("code point {point:#x} past U+10FFFF"),
    }
}

/// `len` bytes of the process's memory at `address`.
fn read(mem: &File, address: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len)?];
    mem.read_exact_at(&mut buf, address)
        .with_context(|| format!("reading {len} bytes at {address:#x}"))?;
    Ok(buf)
}

/// `address + offset`, which must not wrap.
fn offset_address(address: u64, offset: u64) -> anyhow::Result<u64> {
    address
        .checked_add(offset)
        .with_context(|| format!("object at {address:#x} runs past the address space"))
}

/// The pointer-sized word at `offset` in `buf`.
fn word(buf: &[u8], offset: u64) -> u64 {
    u64::from_ne_bytes(bytes_at(buf, offset))
}

/// `N` bytes at `offset` in `buf`; the callers read `buf` to cover every offset they pass
/// (see [`span`]).
fn bytes_at<const N: usize>(buf: &[u8], offset: u64) -> [u8; N] {
    let start = offset as usize;
    buf[start..start + N].try_into().expect("N bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// The interpreter whose objects these tests read, and whose answers they check against.
    const PYTHON: &str = "/usr/bin/python3.11";

    /// Defines functions with names of every string kind, a method, a nested function, prints
    /// what the interpreter says of each code object, then keeps them alive until stdin closes.
    const SCRIPT: &str = r#"
import json, sys

def café(x):
    return x + 1

def функция():
    pass

def 𠀀(a,
       b):
    return a * b

class Klass:
    def method(self):
        return [i for i in range(3)]

def outer():
    def inner(y):
        for i in range(y):
            y += i
        return y
    return inner

inner = outer()

def described(function):
    code = function.__code__
    return {
        "address": id(code),
        "name": code.co_name,
        "qualname": code.co_qualname,
        "filename": code.co_filename,
        "first_line": code.co_firstlineno,
        "line_table": code.co_linetable.hex(),
        "lines": [position[0] for position in code.co_positions()],
    }

functions = [café, функция, 𠀀, Klass.method, outer, inner, described]
print(json.dumps([described(function) for function in functions]), flush=True)
sys.stdin.read()
"#;

    /// One code object as the interpreter describes it.
    #[derive(serde::Deserialize, Debug)]
    struct Oracle {
        address: u64,
        name: String,
        qualname: String,
        filename: String,
        first_line: u32,
        line_table: String,
        lines: Vec<Option<u32>>,
    }

    /// The interpreter, killed (it alone, by its id) and reaped however the test ends.
    struct Interpreter(std::process::Child);

    impl Drop for Interpreter {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Starts the script from a file whose name is not ASCII, and reads what it prints.
    fn start(dir: &std::path::Path) -> (Interpreter, Vec<Oracle>) {
        let script = dir.join("prueba_código.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let child = Command::new(PYTHON)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut interpreter = Interpreter(child);
        let stdout = interpreter.0.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let oracle = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        (interpreter, oracle)
    }

    #[test]
    fn reads_code_objects_of_a_live_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let (interpreter, oracle) = start(dir.path());
        let mem = File::open(format!("/proc/{}/mem", interpreter.0.id())).unwrap();
        assert_eq!(oracle.len(), 7);
        for expected in &oracle {
            let code = read_code(&mem, expected.address, &LAYOUT_3_11)
                .unwrap_or_else(|err| panic!("{expected:?}: {err:#}"));
            assert_eq!(code.name, expected.name);
            assert_eq!(code.qualname, expected.qualname);
            assert_eq!(code.filename, expected.filename);
            assert_eq!(code.first_line, expected.first_line);
            assert_eq!(hex(&code.line_table), expected.line_table);
            for (index, line) in expected.lines.iter().enumerate() {
                assert_eq!(
                    code.line_of(index as u32),
                    *line,
                    "{} {index}",
                    code.qualname
                );
            }
        }
        assert!(read_code(&mem, 0, &LAYOUT_3_11).is_err());
    }

    /// Bit fields of `state` for a compact string of `kind`.
    fn compact_state(kind: u32, ascii: bool) -> u32 {
        (kind << STATE_KIND_SHIFT) | STATE_COMPACT | if ascii { STATE_ASCII } else { 0 }
    }

    /// Writes `bytes` at `offset` in `object`.
    fn put(object: &mut [u8], offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        object[start..start + bytes.len()].copy_from_slice(bytes);
    }

    /// A fake `str` laid out as CPython 3.11 lays one, in this process's memory.
    fn fake_str(state: u32, length: i64, data: &[u8]) -> Vec<u8> {
        let layout = LAYOUT_3_11;
        let ascii = state & STATE_ASCII != 0;
        let header = if ascii {
            layout.str_ascii_size
        } else {
            layout.str_compact_size
        };
        let mut object = vec![0; header as usize + data.len() + 4];
        put(&mut object, layout.object_type, &1u64.to_ne_bytes());
        put(&mut object, layout.str_length, &length.to_ne_bytes());
        put(&mut object, layout.str_state, &state.to_ne_bytes());
        put(&mut object, header, data);
        object
    }

    fn fake_ascii(text: &str) -> Vec<u8> {
        fake_str(compact_state(1, true), text.len() as i64, text.as_bytes())
    }

    /// A fake `bytes` object of `length` bytes, of which `data` is written.
    fn fake_bytes(length: i64, data: &[u8]) -> Vec<u8> {
        let layout = LAYOUT_3_11;
        let mut object = vec![0; layout.bytes_data as usize + data.len() + 1];
        put(&mut object, layout.object_type, &1u64.to_ne_bytes());
        put(&mut object, layout.bytes_size, &length.to_ne_bytes());
        put(&mut object, layout.bytes_data, data);
        object
    }

    /// The parts of a fake code object, each kept alive while it is read.
    struct Fake {
        name: Vec<u8>,
        qualname: Vec<u8>,
        filename: Vec<u8>,
        table: Vec<u8>,
        first_line: i32,
    }

    impl Fake {
        fn valid() -> Fake {
            let ucs2: Vec<u8> = "Ωmega".encode_utf16().flat_map(u16::to_ne_bytes).collect();
            let ucs4: Vec<u8> = "𠀀é"
                .chars()
                .flat_map(|c| u32::from(c).to_ne_bytes())
                .collect();
            Fake {
                name: fake_ascii("name"),
                qualname: fake_str(compact_state(2, false), 5, &ucs2),
                filename: fake_str(compact_state(4, false), 2, &ucs4),
                table: fake_bytes(3, &[0x80, 0x00, 0xf8]),
                first_line: 7,
            }
        }

        /// Reads the fake through this process's /proc/self/mem.
        fn read(&self) -> anyhow::Result<CodeObject> {
            let layout = LAYOUT_3_11;
            let mut code = vec![0u8; layout.code_code_adaptive as usize];
            let address = |object: &Vec<u8>| (object.as_ptr() as u64).to_ne_bytes();
            put(&mut code, layout.object_type, &1u64.to_ne_bytes());
            put(&mut code, layout.code_name, &address(&self.name));
            put(&mut code, layout.code_qualname, &address(&self.qualname));
            put(&mut code, layout.code_filename, &address(&self.filename));
            put(&mut code, layout.code_linetable, &address(&self.table));
            put(
                &mut code,
                layout.code_firstlineno,
                &self.first_line.to_ne_bytes(),
            );
            let mem = File::open("/proc/self/mem")?;
            read_code(&mem, code.as_ptr() as u64, &layout)
        }
    }

    #[test]
    fn reads_strings_of_every_kind() {
        let code = Fake::valid().read().unwrap();
        let expected = CodeObject {
            name: "name".into(),
            qualname: "Ωmega".into(),
            filename: "𠀀é".into(),
            first_line: 7,
            line_table: vec![0x80, 0x00, 0xf8],
        };
        assert_eq!(code, expected);
        assert_eq!(code.line_of(0), Some(7));
        assert_eq!(code.line_of(1), None);
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let mut fake = Fake::valid();
        fake.name = fake_str(compact_state(2, false), 1, &0xdc80u16.to_ne_bytes());
        assert_eq!(fake.read().unwrap().name, "\u{fffd}");
    }

    /// A change that makes a valid fake implausible.
    type Spoil = fn(&mut Fake);

    /// Each implausible object, and a word of the error it must give.
    #[test]
    fn refuses_implausible_objects() {
        let cases: [(&str, Spoil); 10] = [
            ("kind 3", |f| {
                f.name = fake_str(compact_state(3, false), 1, b"abc")
            }),
            ("not a compact", |f| {
                f.name = fake_str(1 << STATE_KIND_SHIFT, 1, b"a")
            }),
            ("ASCII string of kind", |f| {
                f.name = fake_str(compact_state(2, true), 1, b"ab")
            }),
            ("above 0x7f", |f| {
                f.name = fake_str(compact_state(1, true), 1, &[0xe9])
            }),
            ("characters", |f| {
                f.name = fake_str(compact_state(1, true), 65537, b"a")
            }),
            ("negative object length", |f| {
                f.name = fake_str(compact_state(1, true), -1, b"")
            }),
            ("past U+10FFFF", |f| {
                f.name = fake_str(compact_state(4, false), 1, &0x110000u32.to_ne_bytes())
            }),
            ("has no type", |f| f.qualname = vec![0; 64]),
            ("bytes object of", |f| {
                f.table = fake_bytes((1 << 20) + 1, &[])
            }),
            ("negative co_firstlineno", |f| f.first_line = -1),
        ];
        for (word, spoil) in cases {
            let mut fake = Fake::valid();
            spoil(&mut fake);
            let err = format!("{:#}", fake.read().unwrap_err());
            assert!(err.contains(word), "{word:?} not in {err:?}");
        }
    }
}
