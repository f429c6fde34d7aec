//! GFP flags and migratetypes by the kernel's own names, as its trace output prints them.
//! The bit numbers of GFP flags change between kernel versions and configs, so the names come
//! from the running kernel: the print fmt of kmem:mm_page_alloc lists every (mask, name) pair
//! of its `__print_flags(...)` as a C constant expression, which this module evaluates.
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::kernel::btf;

/// Where tracefs may be mounted, newest convention first.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const FORMAT: &str = "events/kmem/mm_page_alloc/format";

/// The kernel's names for GFP flag combinations, in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GfpNames {
    /// (mask, name): composites come before the single bits they are made of.
    entries: Vec<(u64, String)>,
    /// What goes between names ("|" in every kernel so far).
    delim: String,
}

impl GfpNames {
    /// From tracefs: the print fmt of kmem:mm_page_alloc.
    pub fn from_tracefs() -> Result<Self> {
        let mut failures = Vec::new();
        for root in TRACEFS_ROOTS {
            let path = format!("{root}/{FORMAT}");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    return Self::from_format(&text).with_context(|| format!("parsing {path}"))
                }
                Err(err) => failures.push(format!("{path}: {err}")),
            }
        }
        bail!(
            "cannot read the GFP flag names of this kernel ({})",
            failures.join("; ")
        )
    }

    /// From the text of a format file (its "print fmt:" line).
    pub fn from_format(format: &str) -> Result<Self> {
        let line = format
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("print fmt:"))
            .context("no \"print fmt:\" line")?;
        // Other events print several flag sets; take the one of the gfp_flags field.
        let mut last_error = None;
        for (at, call) in line.match_indices("__print_flags(") {
            match flag_table(&line[at + call.len()..]) {
                Ok(Some(names)) => return Ok(names),
                Ok(None) => {}
                Err(err) => last_error = Some(err),
            }
        }
        match last_error {
            Some(err) => Err(err.context("reading the __print_flags table of gfp_flags")),
            None => bail!("the print fmt has no __print_flags(...) of gfp_flags"),
        }
    }

    /// A built-in table for this kernel generation (6.x bit numbers), for when tracefs cannot be
    /// read. Copied from the kmem:mm_page_alloc format of Linux 6.18 (x86-64).
    pub fn builtin() -> Self {
        Self {
            entries: BUILTIN_GFP
                .iter()
                .map(|&(mask, name)| (mask, name.to_string()))
                .collect(),
            delim: "|".to_string(),
        }
    }

    /// As the kernel's __print_flags (trace_print_flags_seq) prints them: each entry whose bits
    /// are all still set is printed and its bits cleared; leftover bits follow in hex. The print
    /// fmt itself says "none" for no flags at all.
    pub fn decode(&self, flags: u64) -> String {
        if flags == 0 {
            return "none".to_string();
        }
        let mut left = flags;
        let mut parts = Vec::new();
        for (mask, name) in &self.entries {
            if left == 0 {
                break;
            }
            if left & mask == *mask {
                parts.push(name.clone());
                left &= !mask;
            }
        }
        if left != 0 {
            parts.push(format!("0x{left:x}"));
        }
        parts.join(&self.delim)
    }
}

/// GFP names of Linux 6.18 (no CONFIG_KASAN_HW_TAGS, so no __GFP_SKIP_* bits), in its order.
const BUILTIN_GFP: [(u64, &str); 38] = [
    (0x1c24ca, "GFP_TRANSHUGE"),
    (0x1c20ca, "GFP_TRANSHUGE_LIGHT"),
    (0x100cca, "GFP_HIGHUSER_MOVABLE"),
    (0x100cc2, "GFP_HIGHUSER"),
    (0x100cc0, "GFP_USER"),
    (0x400cc0, "GFP_KERNEL_ACCOUNT"),
    (0xcc0, "GFP_KERNEL"),
    (0xc40, "GFP_NOFS"),
    (0x820, "GFP_ATOMIC"),
    (0xc00, "GFP_NOIO"),
    (0x2800, "GFP_NOWAIT"),
    (0x1, "GFP_DMA"),
    (0x4, "GFP_DMA32"),
    (0xc00, "__GFP_RECLAIM"),
    (0x1, "__GFP_DMA"),
    (0x2, "__GFP_HIGHMEM"),
    (0x4, "__GFP_DMA32"),
    (0x8, "__GFP_MOVABLE"),
    (0x10, "__GFP_RECLAIMABLE"),
    (0x20, "__GFP_HIGH"),
    (0x40, "__GFP_IO"),
    (0x80, "__GFP_FS"),
    (0x100, "__GFP_ZERO"),
    (0x400, "__GFP_DIRECT_RECLAIM"),
    (0x800, "__GFP_KSWAPD_RECLAIM"),
    (0x1000, "__GFP_WRITE"),
    (0x2000, "__GFP_NOWARN"),
    (0x4000, "__GFP_RETRY_MAYFAIL"),
    (0x8000, "__GFP_NOFAIL"),
    (0x10000, "__GFP_NORETRY"),
    (0x20000, "__GFP_MEMALLOC"),
    (0x40000, "__GFP_COMP"),
    (0x80000, "__GFP_NOMEMALLOC"),
    (0x100000, "__GFP_HARDWALL"),
    (0x200000, "__GFP_THISNODE"),
    (0x400000, "__GFP_ACCOUNT"),
    (0x800000, "__GFP_ZEROTAGS"),
    (0x1000000, "__GFP_NO_OBJ_EXT"),
];

/// The table of one `__print_flags(` call, `args` being the text after its parenthesis: None
/// if it prints another field than gfp_flags.
fn flag_table(args: &str) -> Result<Option<GfpNames>> {
    let mut p = Parser::new(tokenize(args)?);
    if !p
        .skip_argument()?
        .contains(&Token::Ident("gfp_flags".to_string()))
    {
        return Ok(None);
    }
    let delim = p.string().context("expected the delimiter string")?;
    let mut entries = Vec::new();
    // Entries are `{ mask, "name" }` up to the closing parenthesis.
    while !p.eat(")") {
        p.expect(",")?;
        p.expect("{")?;
        let mask = p.expression()?.convert(ULONG).raw;
        p.expect(",")?;
        // `{ 0, ((void *)0) }`: a NULL name ends the table, as in the kernel.
        let Some(name) = p.string() else { break };
        entries.push((mask, name));
        p.expect("}")?;
    }
    if entries.is_empty() {
        bail!("the table has no names");
    }
    Ok(Some(GfpNames { entries, delim }))
}

/// A C integer type, as far as constant expressions need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ty {
    bits: u32,
    signed: bool,
}

const INT: Ty = Ty {
    bits: 32,
    signed: true,
};
const UINT: Ty = Ty {
    bits: 32,
    signed: false,
};
const LONG: Ty = Ty {
    bits: 64,
    signed: true,
};
const ULONG: Ty = Ty {
    bits: 64,
    signed: false,
};

impl Ty {
    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    /// The type of a cast like `( gfp_t)`. LP64: long is 64 bits. gfp_t has been unsigned int
    /// since it was introduced; the kernel's __force is already gone from the print fmt.
    fn named(words: &[String]) -> Option<Ty> {
        let words: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .filter(|w| !matches!(*w, "const" | "volatile" | "__force"))
            .collect();
        Some(match words.join(" ").as_str() {
            "gfp_t" | "unsigned" | "unsigned int" | "u32" | "__u32" => UINT,
            "int" | "signed" | "signed int" | "s32" | "__s32" => INT,
            "long" | "long int" | "signed long" | "long long" | "s64" | "__s64" => LONG,
            "unsigned long" | "unsigned long int" | "unsigned long long" | "u64" | "__u64"
            | "size_t" => ULONG,
            _ => return None,
        })
    }

    /// C's usual arithmetic conversions, for types no narrower than int.
    fn common(self, other: Ty) -> Ty {
        if self.bits != other.bits {
            if self.bits > other.bits {
                self
            } else {
                other
            }
        } else {
            Ty {
                bits: self.bits,
                signed: self.signed && other.signed,
            }
        }
    }
}

/// A value of a C constant expression: its bits (masked to the type's width) and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    raw: u64,
    ty: Ty,
}

impl Value {
    fn new(raw: u64, ty: Ty) -> Self {
        Self {
            raw: raw & ty.mask(),
            ty,
        }
    }

    /// Conversion as C does it: sign-extend a negative int, truncate to a narrower type.
    fn convert(self, to: Ty) -> Self {
        let wide = if self.ty.signed && self.ty.bits == 32 {
            self.raw as u32 as i32 as i64 as u64
        } else {
            self.raw
        };
        Self::new(wide, to)
    }

    fn binary(self, op: &str, other: Value) -> Result<Value> {
        if op == "<<" || op == ">>" {
            return self.shift(op, other);
        }
        let ty = self.ty.common(other.ty);
        let (a, b) = (self.convert(ty).raw, other.convert(ty).raw);
        Ok(Value::new(
            match op {
                "|" => a | b,
                "^" => a ^ b,
                "&" => a & b,
                _ => bail!("unsupported operator {op}"),
            },
            ty,
        ))
    }

    /// A shift has the type of its left operand; shifting by its width or more is undefined.
    fn shift(self, op: &str, count: Value) -> Result<Value> {
        let count = count.convert(LONG).raw as i64;
        if !(0..i64::from(self.ty.bits)).contains(&count) {
            bail!("shift by {count} of a {}-bit value", self.ty.bits);
        }
        let raw = if op == "<<" {
            self.raw << count
        } else if self.ty.signed {
            (self.convert(LONG).raw as i64 >> count) as u64
        } else {
            self.raw >> count
        };
        Ok(Value::new(raw, self.ty))
    }
}

/// One token of the print fmt's C text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Number(Value),
    Str(String),
    Ident(String),
    Punct(&'static str),
}

/// Longest first, so "<<" is not read as two "<". More than masks use: the whole rest of the
/// print fmt line is read, and it may print other fields after the table.
const PUNCTS: [&str; 34] = [
    "<<", ">>", "->", "==", "!=", "<=", ">=", "&&", "||", "(", ")", "{", "}", "[", "]", ",", "|",
    "&", "^", "~", "*", "/", "%", "!", "?", ":", "-", "+", "<", ">", "=", ".", ";", "'",
];

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(c) = rest.chars().next() {
        let len = if c.is_ascii_digit() {
            let len = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            tokens.push(Token::Number(literal(&rest[..len])?));
            len
        } else if c.is_ascii_alphabetic() || c == '_' {
            let len = rest
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..len].to_string()));
            len
        } else if c == '"' {
            let (string, len) = string_literal(rest)?;
            tokens.push(Token::Str(string));
            len
        } else {
            let punct = PUNCTS
                .iter()
                .find(|p| rest.starts_with(**p))
                .with_context(|| format!("unexpected {c:?} in the print fmt"))?;
            tokens.push(Token::Punct(punct));
            punct.len()
        };
        rest = rest[len..].trim_start();
    }
    Ok(tokens)
}

/// A string literal at the start of `text` (which starts with '"'), and its length in `text`.
fn string_literal(text: &str) -> Result<(String, usize)> {
    let mut string = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((string, at + 1)),
            // Escapes: only the escaped character matters for names and delimiters.
            '\\' => string.extend(chars.next().map(|(_, c)| c)),
            c => string.push(c),
        }
    }
    bail!("unterminated string in the print fmt")
}

/// An integer literal such as `1UL`, `0x10` or `0`, with its C type.
fn literal(text: &str) -> Result<Value> {
    let digits_end = text.find(['u', 'U', 'l', 'L']).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let suffix = suffix.to_ascii_lowercase();
    if !["", "u", "l", "ul", "lu", "ll", "ull", "llu"].contains(&suffix.as_str()) {
        bail!("bad integer literal {text:?}");
    }
    let (unsigned, long) = (suffix.contains('u'), suffix.contains('l'));
    let (radix, body, decimal) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex, false)
    } else if let Some(hex) = digits.strip_prefix("0X") {
        (16, hex, false)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..], false)
    } else {
        (10, digits, true)
    };
    let value = u64::from_str_radix(body, radix)
        .with_context(|| format!("bad integer literal {text:?}"))?;
    // C picks the first type that holds the value; hex and octal may also be unsigned.
    let fits = |ty: Ty| value <= ty.mask() >> u32::from(ty.signed);
    let candidates: &[Ty] = match (long, unsigned, decimal) {
        (false, false, true) => &[INT, LONG],
        (false, false, false) => &[INT, UINT, LONG, ULONG],
        (false, true, _) => &[UINT, ULONG],
        (true, false, true) => &[LONG],
        (true, false, false) => &[LONG, ULONG],
        (true, true, _) => &[ULONG],
    };
    let ty = candidates
        .iter()
        .copied()
        .find(|&ty| fits(ty))
        .with_context(|| format!("integer literal {text:?} is too large"))?;
    Ok(Value::new(value, ty))
}

/// Recursive descent over the tokens of a `__print_flags(...)` argument list.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Operands being read, one inside the other (see `unary`).
    depth: usize,
}

/// How deep operands may nest (parentheses, casts, `~`): the kernel's masks go about 10 deep;
/// deeper is not a mask, and would overflow the stack.
const MAX_NESTING: usize = 256;

/// Binary operators by C precedence, loosest first.
const LEVELS: [&[&str]; 4] = [&["|"], &["^"], &["&"], &["<<", ">>"]];

impl Parser {
    fn new(tokens: Vec<Token>) -> Self {
        Self {
            tokens,
            at: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += usize::from(token.is_some());
        token
    }

    /// Consumes `punct` if it comes next.
    fn eat(&mut self, punct: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Punct(p)) if *p == punct);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, punct: &str) -> Result<()> {
        if self.eat(punct) {
            return Ok(());
        }
        bail!("expected {punct:?}, found {}", self.describe_next())
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            Some(token) => format!("{token:?}"),
            None => "the end".to_string(),
        }
    }

    /// A string literal, if one comes next.
    fn string(&mut self) -> Option<String> {
        let Some(Token::Str(s)) = self.peek() else {
            return None;
        };
        let s = s.clone();
        self.at += 1;
        Some(s)
    }

    /// Skips one argument up to the comma that ends it (not consumed) and returns its tokens.
    fn skip_argument(&mut self) -> Result<&[Token]> {
        let start = self.at;
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => bail!("unbalanced parentheses"),
                Some(Token::Punct("," | ")" | "}" | "]")) if depth == 0 => break,
                Some(Token::Punct("(" | "{" | "[")) => depth += 1,
                Some(Token::Punct(")" | "}" | "]")) => depth -= 1,
                _ => {}
            }
            self.at += 1;
        }
        self.expect(",")?;
        Ok(&self.tokens[start..self.at - 1])
    }

    /// A constant expression of integer literals, casts, `~`, shifts, `&`, `^` and `|`.
    fn expression(&mut self) -> Result<Value> {
        self.binary(0)
    }

    fn binary(&mut self, level: usize) -> Result<Value> {
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut value = self.binary(level + 1)?;
        while let Some(op) = ops.iter().find(|op| self.eat(op)) {
            value = value.binary(op, self.binary(level + 1)?)?;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<Value> {
        if self.depth >= MAX_NESTING {
            bail!("a flag mask nested more than {MAX_NESTING} deep");
        }
        self.depth += 1;
        let value = self.operand();
        self.depth -= 1;
        value
    }

    fn operand(&mut self) -> Result<Value> {
        match self.next() {
            Some(Token::Number(value)) => Ok(value),
            Some(Token::Punct("~")) => {
                let value = self.unary()?;
                Ok(Value::new(!value.raw, value.ty))
            }
            // Identifiers in these expressions only name types: `(` then one is a cast.
            Some(Token::Punct("(")) if matches!(self.peek(), Some(Token::Ident(_))) => {
                let ty = self.cast_type()?;
                Ok(self.unary()?.convert(ty))
            }
            Some(Token::Punct("(")) => {
                let value = self.expression()?;
                self.expect(")")?;
                Ok(value)
            }
            token => bail!("unexpected {token:?} in a flag mask"),
        }
    }

    /// The type name of a cast, up to and including its `)`.
    fn cast_type(&mut self) -> Result<Ty> {
        let mut words = Vec::new();
        while let Some(Token::Ident(word)) = self.peek() {
            words.push(word.clone());
            self.at += 1;
        }
        self.expect(")")?;
        Ty::named(&words).with_context(|| format!("unknown type ( {})", words.join(" ")))
    }
}

/// Names of enum migratetype values, from the kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateTypes {
    names: BTreeMap<u32, String>,
}

/// enum migratetype of Linux 6.18 without CONFIG_CMA, as its BTF has it.
const BUILTIN_MIGRATETYPES: [(&str, i64); 8] = [
    ("MIGRATE_UNMOVABLE", 0),
    ("MIGRATE_MOVABLE", 1),
    ("MIGRATE_RECLAIMABLE", 2),
    ("MIGRATE_PCPTYPES", 3),
    ("MIGRATE_HIGHATOMIC", 3),
    ("__MIGRATE_TYPE_END", 3),
    ("MIGRATE_ISOLATE", 4),
    ("MIGRATE_TYPES", 5),
];

impl MigrateTypes {
    pub fn from_btf() -> Result<Self> {
        Self::from_parsed_btf(&btf::Btf::vmlinux()?)
    }

    /// enum migratetype of `btf`.
    pub fn from_parsed_btf(btf: &btf::Btf) -> Result<Self> {
        let types = Self::from_values(btf.enum_values("migratetype")?);
        if types.names.is_empty() {
            bail!("enum migratetype in the kernel's BTF names no migratetype");
        }
        Ok(types)
    }

    pub fn builtin() -> Self {
        Self::from_values(
            BUILTIN_MIGRATETYPES
                .iter()
                .map(|&(name, value)| (name.to_string(), value)),
        )
    }

    /// The enum's values, minus its markers: `__MIGRATE_TYPE_END` and the counts
    /// MIGRATE_PCPTYPES and MIGRATE_TYPES are not types. The first name of a value wins.
    fn from_values(values: impl IntoIterator<Item = (String, i64)>) -> Self {
        let mut names = BTreeMap::new();
        for (name, value) in values {
            let marker = name.starts_with("__") || name.ends_with("TYPES");
            if let (false, Ok(value)) = (marker, u32::try_from(value)) {
                names.entry(value).or_insert(name);
            }
        }
        Self { names }
    }

    /// The name of a migratetype value, or the number if it has none.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str) -> Result<u64> {
        let mut p = Parser::new(tokenize(text)?);
        let value = p.expression()?;
        if p.peek().is_some() {
            bail!("trailing {}", p.describe_next());
        }
        Ok(value.convert(ULONG).raw)
    }

    #[test]
    fn evaluates_c_constant_expressions() {
        for (text, expected) in [
            ("0", 0),
            ("1UL", 1),
            ("0x10", 16),
            ("010", 8),
            ("1UL << 40", 1 << 40),
            ("(((1UL))) << (10)", 1 << 10),
            // C precedence: << binds tighter than &, & tighter than ^, ^ tighter than |.
            ("1 << 2 | 1", 5),
            ("1 | 2 & 3", 3),
            ("6 & 3 << 1", 6),
            ("3 ^ 1 | 4", 6),
            ("((1UL << 10) | (1UL << 11)) & ~(1UL << 10)", 1 << 11),
            ("0x100 >> 4", 0x10),
            // ~ of an int is sign-extended when widened; of a gfp_t (unsigned int) it is not.
            ("~0", u64::MAX),
            ("( unsigned long)~0", u64::MAX),
            ("( gfp_t)~0", 0xffff_ffff),
            ("~( gfp_t)0", 0xffff_ffff),
            ("( unsigned long)(( gfp_t)1 << 31)", 0x8000_0000),
            // A cast truncates.
            ("( gfp_t)(1UL << 40)", 0),
            ("( gfp_t)((((1UL))) << (6))", 0x40),
            ("( const unsigned long long)3", 3),
            ("0xffffffff", 0xffff_ffff),
            ("0xffffffffffffffff", u64::MAX),
            ("4294967296", 1 << 32),
        ] {
            assert_eq!(eval(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        for text in [
            "",
            "1 +",
            "1 + 2",
            "(1",
            "1)",
            "1 2",
            "1 << 64",
            "( gfp_t)1 << 32",
            "1 << -1",
            "( struct page *)0",
            "( widget_t)1",
            "0x",
            "09",
            "1UUL",
            "1LUL",
            "99999999999999999999",
            "REC->gfp_flags",
            "\"text\"",
            "1 @ 2",
            "\"unterminated",
        ] {
            assert!(eval(text).is_err(), "{text:?} should not evaluate");
        }
    }

    /// Found by reading (then confirmed with the proc_text fuzz target): operands nested
    /// thousands deep overflowed the stack.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize, operator: &str| {
            format!("{}1{}", operator.repeat(depth), ")".repeat(depth))
        };
        assert_eq!(eval(&nested(200, "(")).unwrap(), 1);
        assert!(eval(&nested(100_000, "(")).is_err());
        assert!(eval(&"~".repeat(100_000)).is_err());
        let format = format!(
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {{{}, \"X\"}})",
            nested(100_000, "(")
        );
        assert!(GfpNames::from_format(&format).is_err());
    }

    fn table(entries: &[(u64, &str)]) -> GfpNames {
        GfpNames {
            entries: entries.iter().map(|&(m, n)| (m, n.to_string())).collect(),
            delim: "|".to_string(),
        }
    }

    #[test]
    fn decodes_like_print_flags() {
        let names = table(&[
            (0b011, "BOTH"),
            (0b001, "ONE"),
            (0b010, "TWO"),
            (0b100, "FOUR"),
        ]);
        assert_eq!(names.decode(0), "none");
        assert_eq!(names.decode(0b001), "ONE");
        assert_eq!(names.decode(0b010), "TWO");
        // A composite takes its bits before the single ones can.
        assert_eq!(names.decode(0b011), "BOTH");
        assert_eq!(names.decode(0b111), "BOTH|FOUR");
        assert_eq!(names.decode(0b101), "ONE|FOUR");
        // Bits without a name follow in hex.
        assert_eq!(names.decode(0x13), "BOTH|0x10");
        assert_eq!(names.decode(0xf0), "0xf0");
        assert_eq!(names.decode(u64::MAX), "BOTH|FOUR|0xfffffffffffffff8");
    }

    #[test]
    fn reads_a_hand_written_table() {
        // Other fields and operators around the table do not matter.
        let format = "name: x\nformat:\n\tfield:int y;\n\n\
            print fmt: \"y=%d flags=%s %d\", REC->y, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, \"/\", \
            {( unsigned long)(( gfp_t)3), \"BOTH\"}, {( unsigned long)1UL, \"ONE\"}, { 0, ((void *)0) } ) : \"none\", REC->y % 2 >= 1\n";
        let names = GfpNames::from_format(format).unwrap();
        assert_eq!(names.entries, [(3, "BOTH".into()), (1, "ONE".into())]);
        assert_eq!(names.decode(7), "BOTH/0x4");
        // A table without the NULL entry, and one of another field before it.
        let format = "print fmt: \"%s %s\", __print_flags(REC->other, \"|\", {1, \"X\"}), \
            __print_flags(REC->gfp_flags, \"|\", {1UL << 1, \"TWO\"})";
        let names = GfpNames::from_format(format).unwrap();
        assert_eq!(names.entries, [(2, "TWO".into())]);
    }

    #[test]
    fn reports_bad_formats() {
        for format in [
            "",
            "name: mm_page_alloc\n",
            "print fmt: \"%d\", REC->order",
            "print fmt: \"%s\", __print_flags(REC->other, \"|\", {1, \"X\"})",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", { 0, ((void *)0) })",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {1UL << 99, \"X\"})",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {( float)1, \"X\"})",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {1, \"X\"",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\" {1, \"X\"})",
            "print fmt: \"%s\", __print_flags(REC->gfp_flags",
        ] {
            let err = GfpNames::from_format(format);
            assert!(err.is_err(), "{format:?} gave {err:?}");
        }
    }

    /// events/kmem/mm_page_alloc/format of Linux 6.18.44 (x86-64) as this machine has it.
    const REAL_FORMAT: &str = r#"name: mm_page_alloc
ID: 653
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:unsigned long pfn;	offset:8;	size:8;	signed:0;
	field:unsigned int order;	offset:16;	size:4;	signed:0;
	field:unsigned long gfp_flags;	offset:24;	size:8;	signed:0;
	field:int migratetype;	offset:32;	size:4;	signed:1;

print fmt: "page=%p pfn=0x%lx order=%d migratetype=%d gfp_flags=%s", REC->pfn != -1UL ? (((struct page *)vmemmap_base) + (REC->pfn)) : ((void *)0), REC->pfn != -1UL ? REC->pfn : 0, REC->order, REC->migratetype, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)(((((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)) | (( gfp_t)((((1UL))) << (18))) | (( gfp_t)((((1UL))) << (19))) | (( gfp_t)((((1UL))) << (13)))) & ~(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11))))) | (( gfp_t)((((1UL))) << (10)))), "GFP_TRANSHUGE"}, {( unsigned long)((((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)) | (( gfp_t)((((1UL))) << (18))) | (( gfp_t)((((1UL))) << (19))) | (( gfp_t)((((1UL))) << (13)))) & ~(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11))))), "GFP_TRANSHUGE_LIGHT"}, {( unsigned long)((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)), "GFP_HIGHUSER_MOVABLE"}, {( unsigned long)(((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))), "GFP_HIGHUSER"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))), "GFP_USER"}, {( unsigned long)(((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))) | (( gfp_t)((((1UL))) << (22)))), "GFP_KERNEL_ACCOUNT"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6)))), "GFP_NOFS"}, {( unsigned long)((( gfp_t)((((1UL))) << (5)))|(( gfp_t)((((1UL))) << (11)))), "GFP_ATOMIC"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11))))), "GFP_NOIO"}, {( unsigned long)((( gfp_t)((((1UL))) << (11))) | (( gfp_t)((((1UL))) << (13)))), "GFP_NOWAIT"}, {( unsigned long)(( gfp_t)((((1UL))) << (0))), "GFP_DMA"}, {( unsigned long)(( gfp_t)((((1UL))) << (2))), "GFP_DMA32"}, {( unsigned long)(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))), "__GFP_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (0))), "__GFP_DMA"}, {( unsigned long)(( gfp_t)((((1UL))) << (1))), "__GFP_HIGHMEM"}, {( unsigned long)(( gfp_t)((((1UL))) << (2))), "__GFP_DMA32"}, {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}, {( unsigned long)(( gfp_t)((((1UL))) << (4))), "__GFP_RECLAIMABLE"}, {( unsigned long)(( gfp_t)((((1UL))) << (5))), "__GFP_HIGH"}, {( unsigned long)(( gfp_t)((((1UL))) << (6))), "__GFP_IO"}, {( unsigned long)(( gfp_t)((((1UL))) << (7))), "__GFP_FS"}, {( unsigned long)(( gfp_t)((((1UL))) << (8))), "__GFP_ZERO"}, {( unsigned long)(( gfp_t)((((1UL))) << (10))), "__GFP_DIRECT_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (11))), "__GFP_KSWAPD_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (12))), "__GFP_WRITE"}, {( unsigned long)(( gfp_t)((((1UL))) << (13))), "__GFP_NOWARN"}, {( unsigned long)(( gfp_t)((((1UL))) << (14))), "__GFP_RETRY_MAYFAIL"}, {( unsigned long)(( gfp_t)((((1UL))) << (15))), "__GFP_NOFAIL"}, {( unsigned long)(( gfp_t)((((1UL))) << (16))), "__GFP_NORETRY"}, {( unsigned long)(( gfp_t)((((1UL))) << (17))), "__GFP_MEMALLOC"}, {( unsigned long)(( gfp_t)((((1UL))) << (18))), "__GFP_COMP"}, {( unsigned long)(( gfp_t)((((1UL))) << (19))), "__GFP_NOMEMALLOC"}, {( unsigned long)(( gfp_t)((((1UL))) << (20))), "__GFP_HARDWALL"}, {( unsigned long)(( gfp_t)((((1UL))) << (21))), "__GFP_THISNODE"}, {( unsigned long)(( gfp_t)((((1UL))) << (22))), "__GFP_ACCOUNT"}, {( unsigned long)(( gfp_t)((((1UL))) << (23))), "__GFP_ZEROTAGS"}, {( unsigned long)(( gfp_t)((((1UL))) << (24))), "__GFP_NO_OBJ_EXT"}, { 0, ((void *)0) } ) : "none"
"#;

    #[test]
    fn reads_the_real_format() {
        let names = GfpNames::from_format(REAL_FORMAT).unwrap();
        assert_eq!(names, GfpNames::builtin());
        // Values and text seen in this kernel's own trace output (options/fields gives the value).
        for (flags, text) in [
            (0x140dca, "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP"),
            (0x140cca, "GFP_HIGHUSER_MOVABLE|__GFP_COMP"),
            (0x141cca, "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP"),
            (0x153cca, "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"),
            (0x3d24ca, "GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE"),
            (0x500cc2, "GFP_HIGHUSER|__GFP_ACCOUNT"),
            (0x440dc0, "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"),
            (0x52cc0, "GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"),
            (0x52cd0, "GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"),
            (0x152c4a, "GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL"),
            (0x148c40, "GFP_NOFS|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL"),
            (0x52830, "GFP_ATOMIC|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"),
            (0x2800, "GFP_NOWAIT"),
            (0x42800, "GFP_NOWAIT|__GFP_COMP"),
            (0x252800, "GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP|__GFP_THISNODE"),
            (0xd2050, "__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC"),
        ] {
            assert_eq!(names.decode(flags), text, "{flags:#x}");
        }
        // Worked out from the table: composites first, aliases of the same mask never print.
        for (flags, text) in [
            (0, "none"),
            (0x1c20ca, "GFP_TRANSHUGE_LIGHT"),
            (0xc00, "GFP_NOIO"),
            (0x1, "GFP_DMA"),
            (0x4000000, "0x4000000"),
            (0x80000cc0, "GFP_KERNEL|0x80000000"),
        ] {
            assert_eq!(names.decode(flags), text, "{flags:#x}");
        }
    }

    #[test]
    fn names_migratetypes() {
        let types = MigrateTypes::builtin();
        for (value, name) in [
            (0, "MIGRATE_UNMOVABLE"),
            (1, "MIGRATE_MOVABLE"),
            (2, "MIGRATE_RECLAIMABLE"),
            (3, "MIGRATE_HIGHATOMIC"),
            (4, "MIGRATE_ISOLATE"),
            (5, "5"),
            (99, "99"),
        ] {
            assert_eq!(types.name(value), name);
        }
        // With CMA, a value of its own follows HIGHATOMIC.
        let with_cma = MigrateTypes::from_values(
            [
                ("MIGRATE_HIGHATOMIC", 3),
                ("MIGRATE_CMA", 4),
                ("__MIGRATE_TYPE_END", 4),
            ]
            .map(|(n, v)| (n.to_string(), v)),
        );
        assert_eq!(with_cma.name(4), "MIGRATE_CMA");
        assert_eq!(
            MigrateTypes::from_values([("X".to_string(), -1)]).name(0),
            "0"
        );
    }

    #[test]
    fn migratetypes_from_this_kernel() {
        let Ok(types) = MigrateTypes::from_btf() else {
            eprintln!("note: no /sys/kernel/btf/vmlinux here");
            return;
        };
        let builtin = MigrateTypes::builtin();
        for value in 0..3 {
            assert_eq!(types.name(value), builtin.name(value));
        }
    }

    const ENABLE: &str = "events/kmem/mm_page_alloc/enable";

    /// A tracefs instance of the test's own, so it neither disturbs nor sees other tracing.
    /// Removed on drop, also when the test fails.
    struct Instance {
        dir: std::path::PathBuf,
    }

    impl Instance {
        fn create() -> std::io::Result<Self> {
            let root = TRACEFS_ROOTS
                .iter()
                .map(|root| std::path::Path::new(root).join("instances"))
                .find(|dir| dir.is_dir())
                .ok_or(std::io::ErrorKind::NotFound)?;
            let dir = root.join(format!("memtrace-gfp-test-{}", std::process::id()));
            std::fs::create_dir(&dir)?;
            Ok(Self { dir })
        }

        fn write(&self, file: &str, text: &str) -> Result<()> {
            let path = self.dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {text:?} to {path:?}"))
        }

        fn read(&self, file: &str) -> Result<String> {
            let path = self.dir.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))
        }
    }

    impl Drop for Instance {
        fn drop(&mut self) {
            // Disabled first: the kernel refuses to remove an instance that is in use.
            let _ = std::fs::write(self.dir.join(ENABLE), "0");
            if let Err(err) = std::fs::remove_dir(&self.dir) {
                eprintln!("warning: cannot remove {:?}: {err}", self.dir);
            }
        }
    }

    /// Page allocations of several kinds, in this thread: anonymous pages (some of them huge),
    /// page cache, pipe buffers.
    fn allocate_pages() -> Result<()> {
        use std::io::{Read, Seek, Write};
        const HUGE: usize = 2 << 20;
        // Fresh from the kernel (not the allocator, which may hand back memory another test
        // freed and so already touched): every page touched below is allocated.
        let length = 4 * HUGE;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let anonymous = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        anyhow::ensure!(
            anonymous != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let start = anonymous as usize;
        let aligned = start.next_multiple_of(HUGE) - start;
        // SAFETY: writes and advice inside the mapping made above, at page-aligned (the huge
        // part 2 MiB-aligned) addresses; it is unmapped once, after the last write.
        unsafe {
            let base = anonymous.cast::<u8>();
            libc::madvise(base.add(aligned).cast(), 2 * HUGE, libc::MADV_HUGEPAGE);
            for offset in (0..length).step_by(4096) {
                base.add(offset).write_volatile(1);
            }
            libc::munmap(anonymous, length);
        }

        let mut file = tempfile::tempfile()?;
        file.write_all(&vec![7u8; 1 << 20])?;
        file.sync_all()?;
        file.rewind()?;
        file.read_to_end(&mut Vec::new())?;

        let (mut reader, mut writer) = std::io::pipe()?;
        let chunk = vec![9u8; 32 << 10];
        writer.write_all(&chunk)?;
        reader.read_exact(&mut vec![0u8; chunk.len()])?;
        Ok(())
    }

    /// `key=value` of a trace line, the value up to the next space.
    fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..].split(' ').next()
    }

    fn number(text: &str) -> Option<u64> {
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    }

    fn events(trace: &str) -> Vec<&str> {
        trace
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(" mm_page_alloc: "))
            .collect()
    }

    /// THE ORACLE: this kernel's own text for the page allocations of this test, against
    /// decode() of their values. The ring buffer keeps records, not text, so one buffer read
    /// twice, once as text and once with options/fields (values), gives both for the same events.
    #[test]
    fn decodes_like_this_kernel() -> Result<()> {
        // Under CI the oracle must run: a machine that cannot is a failure, not a pass.
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let instance = match Instance::create() {
            Ok(instance) => instance,
            Err(err) => {
                assert!(!in_ci, "no tracefs instance under CI: {err}");
                eprintln!("note: no tracefs instance ({err}): needs root and tracefs");
                return Ok(());
            }
        };
        if !instance.dir.join("options/fields").exists() {
            assert!(!in_ci, "this kernel's trace has no options/fields");
            eprintln!("note: this kernel's trace has no options/fields");
            return Ok(());
        }
        // The thread's id: tests run on threads of their own.
        let tid = std::fs::read_link("/proc/thread-self")?;
        let tid = tid
            .file_name()
            .context("/proc/thread-self")?
            .to_string_lossy();
        instance.write(
            "events/kmem/mm_page_alloc/filter",
            &format!("common_pid == {tid}"),
        )?;
        instance.write(ENABLE, "1")?;
        allocate_pages()?;
        instance.write(ENABLE, "0")?;
        let text = instance.read("trace")?;
        instance.write("options/fields", "1")?;
        let fields = instance.read("trace")?;
        let (text, fields) = (events(&text), events(&fields));
        assert_eq!(text.len(), fields.len(), "the same events, read twice");

        let names = GfpNames::from_tracefs()?;
        let types = MigrateTypes::from_btf()?;
        let mut seen = BTreeMap::new();
        for (text, fields) in text.iter().zip(&fields) {
            let value = |line, key| field(line, key).and_then(number);
            let raw_pfn = value(fields, "pfn").context(fields.to_string())?;
            // The text prints a failed allocation's pfn (-1) as 0.
            let pfn = if raw_pfn == u64::MAX { 0 } else { raw_pfn };
            assert_eq!(value(text, "pfn"), Some(pfn), "{text}\n{fields}");
            assert_eq!(
                value(text, "order"),
                value(fields, "order"),
                "{text}\n{fields}"
            );
            let flags = value(fields, "gfp_flags").context(fields.to_string())?;
            let kernel = field(text, "gfp_flags").context(text.to_string())?;
            assert_eq!(names.decode(flags), kernel, "{flags:#x}: {text}");
            let migratetype = value(text, "migratetype").context(text.to_string())?;
            assert_eq!(value(fields, "migratetype"), Some(migratetype));
            let migratetype = types.name(migratetype as u32);
            assert!(migratetype.starts_with("MIGRATE_"), "{migratetype}: {text}");
            *seen.entry((kernel, migratetype)).or_insert(0) += 1;
        }
        eprintln!(
            "{} allocations compared with the kernel's text:",
            text.len()
        );
        for ((flags, migratetype), count) in &seen {
            eprintln!("  {count:>6}  {flags}  {migratetype}");
        }
        assert!(text.len() >= 20, "only {} allocations traced", text.len());
        Ok(())
    }
}
