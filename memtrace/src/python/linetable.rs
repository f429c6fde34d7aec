//! CPython 3.11's location table (`co_linetable`), read for lines only: a Python frame gives
//! an instruction index, and a profile wants the source line.
//!
//! The table is a run of entries. An entry starts with a byte whose top bit is set: bits 3..6
//! hold its code, bits 0..2 its length in code units, minus one. The bytes that follow it (top
//! bit clear) depend on the code:
//!
//! - 0..=9: short form, same line as the entry before; one byte of columns.
//! - 10..=12: one-line form, the line moves by `code - 10`; two bytes of columns.
//! - 13: no columns; the line moves by a signed varint.
//! - 14: long form; the line moves by a signed varint, then end line, column and end column.
//! - 15: no location; the running line does not move.
//!
//! The running line starts at `co_firstlineno`.

/// The code of the entries that carry no location.
const CODE_NONE: u8 = 15;
/// The code of the entries without columns, whose line delta is a signed varint.
const CODE_NO_COLUMNS: u8 = 13;
/// The code of the long entries, whose line delta is a signed varint.
const CODE_LONG: u8 = 14;
/// The first and last one-line codes: their line delta is the code minus the first.
const CODE_ONE_LINE: std::ops::RangeInclusive<u8> = 10..=12;

/// A run of code units that share one location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// First code unit of the run, counted from the first instruction.
    pub start: u32,
    /// One past the last code unit of the run.
    pub end: u32,
    /// The source line, or `None` when the table gives none (or a negative one).
    pub line: Option<u32>,
}

/// The entries of a table, in order; see [`entries`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    table: &'a [u8],
    pos: usize,
    unit: u32,
    line: i64,
}

/// Walks `table`, whose running line starts at `first_line` (the code's `co_firstlineno`).
pub fn entries(table: &[u8], first_line: u32) -> Entries<'_> {
    Entries {
        table,
        pos: 0,
        unit: 0,
        line: i64::from(first_line),
    }
}

/// The line of the code unit at `index`, as CPython's `PyCode_Addr2Line` gives it; `None` past
/// the table's end or where the table says the instruction has no line.
pub fn line_of(table: &[u8], first_line: u32, index: u32) -> Option<u32> {
    entries(table, first_line)
        .find(|entry| index < entry.end)
        .filter(|entry| index >= entry.start)?
        .line
}

impl Iterator for Entries<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let header = *self.table.get(self.pos)?;
        let code = (header >> 3) & 15;
        self.line = self
            .line
            .saturating_add(line_delta(code, &self.table[self.pos + 1..]));
        let start = self.unit;
        self.unit = self.unit.saturating_add(u32::from(header & 7) + 1);
        self.pos = next_header(self.table, self.pos);
        let line = (code != CODE_NONE)
            .then(|| u32::try_from(self.line).ok())
            .flatten();
        Some(Entry {
            start,
            end: self.unit,
            line,
        })
    }
}

/// How far an entry of `code` moves the running line; `rest` is what follows its first byte.
fn line_delta(code: u8, rest: &[u8]) -> i64 {
    match code {
        CODE_NO_COLUMNS | CODE_LONG => signed_varint(rest),
        _ if CODE_ONE_LINE.contains(&code) => i64::from(code - CODE_ONE_LINE.start()),
        _ => 0,
    }
}

/// The position of the entry after the one at `pos`: the next byte with its top bit set.
fn next_header(table: &[u8], pos: usize) -> usize {
    table[pos + 1..]
        .iter()
        .position(|byte| byte & 0x80 != 0)
        .map_or(table.len(), |offset| pos + 1 + offset)
}

/// A varint of the table: six bits a byte, least significant first, bit 6 set while more
/// follow. Bits past 64 are dropped: only a corrupt table has them.
fn varint(bytes: &[u8]) -> u64 {
    let mut value = 0u64;
    for (chunk, byte) in bytes.iter().enumerate() {
        let shift = 6 * chunk as u32;
        value |= u64::from(byte & 63).checked_shl(shift).unwrap_or(0);
        if byte & 64 == 0 {
            break;
        }
    }
    value
}

/// A signed varint: the magnitude shifted left by one, the sign in the lowest bit.
fn signed_varint(bytes: &[u8]) -> i64 {
    let raw = varint(bytes);
    let magnitude = (raw >> 1) as i64;
    if raw & 1 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::process::Command;

    /// The interpreter whose tables these tests read, and whose answers they check against.
    const PYTHON: &str = "/usr/bin/python3.11";

    /// Compiles functions of many shapes and prints, for every code object inside, its table,
    /// its first line, and the line of each code unit by `co_positions()`.
    const ORACLE: &str = r#"
import json, types
parts = []
parts.append('''def simple(a, b):
    c = a + b

    for i in range(c):
        c += i
    return c
''')
parts.append('''f_lambda = lambda x: (x +
    1)
''')
parts.append('''def gen(n):
    for i in range(n):
        yield i * 2
    return [j for j in range(n)]
''')
parts.append('''def handlers(a):
    try:
        x = a + 1
    except ValueError as e:
        pass
    finally:
        a = 0
    with open(a) as fh:
        pass
    r = a + b + c + d + e + f + g + h + i + j + k + l + m + n + o + p + q + s + t + u + v + w
    return x
async def coroutine(a, z):
    async with a as b:
        await b
    async for q in z:
        pass
''')
body = ["def long_function(x):", "    total = 0", "    for i in range(x):"]
for k in range(320):
    body.append(f"        total += i * {k} + len('{'y' * (k % 150)}')")
    if k % 50 == 0:
        body.extend(["        # a gap of comments"] * 70)
body.append("    return (total,\n            x)")
parts.append("\n".join(body) + "\n")
parts.append("\n" * 1000 + "def far_away(q):\n    return q\n")

def walk(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk(const)

for code in walk(compile("\n".join(parts), "<oracle>", "exec")):
    print(json.dumps({
        "qualname": code.co_qualname,
        "first_line": code.co_firstlineno,
        "table": code.co_linetable.hex(),
        "lines": [position[0] for position in code.co_positions()],
    }))
"#;

    /// One code object as the interpreter describes it.
    #[derive(serde::Deserialize)]
    struct Oracle {
        qualname: String,
        first_line: u32,
        table: String,
        lines: Vec<Option<u32>>,
    }

    fn from_hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    fn oracle() -> Vec<Oracle> {
        let output = Command::new(PYTHON).args(["-c", ORACLE]).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The codes of a table's entries, and whether one of its varints spans several bytes.
    fn coverage(table: &[u8]) -> (BTreeSet<u8>, bool) {
        let mut codes = BTreeSet::new();
        let mut long_varint = false;
        for (pos, byte) in table.iter().enumerate() {
            if byte & 0x80 != 0 {
                let code = (byte >> 3) & 15;
                codes.insert(code);
                let varint_first = table.get(pos + 1).copied().unwrap_or(0);
                long_varint |= matches!(code, 13 | 14) && varint_first & 64 != 0;
            }
        }
        (codes, long_varint)
    }

    #[test]
    fn lines_match_the_interpreter() {
        let codes = oracle();
        assert!(codes.iter().any(|code| code.first_line >= 1000));
        assert!(codes.iter().any(|code| code.lines.len() > 300));
        let mut seen = BTreeSet::new();
        let mut long_varint = false;
        for code in &codes {
            let table = from_hex(&code.table);
            let (table_codes, table_long) = coverage(&table);
            seen.extend(table_codes);
            long_varint |= table_long;
            for (index, expected) in code.lines.iter().enumerate() {
                let index = index as u32;
                let got = line_of(&table, code.first_line, index);
                assert_eq!(got, *expected, "{} at code unit {index}", code.qualname);
            }
            let past = code.lines.len() as u32;
            assert_eq!(line_of(&table, code.first_line, past), None);
        }
        assert_eq!(seen, (0..16).collect(), "every entry code appears");
        assert!(long_varint, "a varint of several bytes appears");
    }

    #[test]
    fn entries_are_contiguous() {
        for code in oracle() {
            let table = from_hex(&code.table);
            let mut unit = 0;
            for entry in entries(&table, code.first_line) {
                assert_eq!(entry.start, unit, "{}", code.qualname);
                assert!(entry.end > entry.start);
                unit = entry.end;
            }
            assert_eq!(unit as usize, code.lines.len(), "{}", code.qualname);
        }
    }

    #[test]
    fn corrupt_tables_do_not_panic() {
        let tables: [&[u8]; 5] = [
            &[],
            &[0x00, 0x7f],
            &[
                0xf0, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f,
            ],
            &[0xe8],
            &[0xf7, 0x41],
        ];
        for table in tables {
            for index in 0..16 {
                let _ = line_of(table, u32::MAX, index);
            }
        }
    }
}
