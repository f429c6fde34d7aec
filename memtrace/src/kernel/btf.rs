//! Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to find where a struct member lives:
//! the eBPF programs read a few kernel structs directly, and their layout differs between builds.
//! Format: Documentation/bpf/btf.rst (a header, then the type section, then the string section).
use std::collections::HashSet;

use anyhow::{bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
/// The most types a lookup follows (typedefs and qualifiers, anonymous members, arrays of
/// arrays): far more than any kernel type nests, and the end of a malformed BTF whose types
/// refer to themselves.
const MAX_DEPTH: usize = 64;

// Type kinds (btf_type.info bits 24-28).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One type, with what member lookups need.
#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// Size in bytes (int, struct, union, enum) or the referenced type id (typedef, const, ...).
    size_or_type: u32,
    /// Struct and union members: (name, type id, offset in bits).
    members: Vec<(u32, u32, u32)>,
    /// Arrays: (element type id, number of elements).
    array: Option<(u32, u32)>,
    /// Enums (plain or 64-bit): (name, value) in declaration order.
    enumerators: Vec<(u32, i64)>,
}

/// Where a member is: its byte offset from the start of the struct, and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub type_id: u32,
}

pub struct Btf {
    /// By type id; id 0 is void.
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    pub fn vmlinux() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path)
            .with_context(|| format!("reading the kernel's type information ({path}): the kernel needs CONFIG_DEBUG_INFO_BTF"))?;
        Self::parse(&data).with_context(|| format!("parsing {path}"))
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        let u16_at = |at: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(at..at + 2).context("truncated")?.try_into()?,
            ))
        };
        let u32_at = |at: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(at..at + 4).context("truncated")?.try_into()?,
            ))
        };
        if u16_at(0)? != MAGIC {
            bail!("not BTF (or not little-endian)");
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .context("string section out of bounds")?
            .to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            array: None,
            enumerators: Vec::new(),
        }];
        let mut at = header_len + type_off;
        let end = at + type_len;
        while at < end {
            let (name, info, size_or_type) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            // kind_flag: bitfield offsets in structs, signed values in enums.
            let bitfields = info >> 31 == 1;
            let mut ty = Type {
                name,
                kind,
                size_or_type,
                members: Vec::new(),
                array: None,
                enumerators: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    ty.array = Some((u32_at(at)?, u32_at(at + 8)?));
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(at + 8)?;
                        // With bitfields, the low 24 bits are the offset.
                        let offset = if bitfields {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        ty.members.push((u32_at(at)?, u32_at(at + 4)?, offset));
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let value = u32_at(at + 4)?;
                        let value = if bitfields {
                            i64::from(value as i32)
                        } else {
                            i64::from(value)
                        };
                        ty.enumerators.push((u32_at(at)?, value));
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let (low, high) = (u32_at(at + 4)?, u32_at(at + 8)?);
                        // Unsigned values above i64::MAX wrap; kernel enums do not go there.
                        let value = (u64::from(high) << 32 | u64::from(low)) as i64;
                        ty.enumerators.push((u32_at(at)?, value));
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC => at += 12 * vlen,
                _ => {} // ptr, fwd, typedef, qualifiers, func, float, type tag: nothing more
            }
            types.push(ty);
        }
        Ok(Self { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The id of the struct called `name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name) == name.as_bytes())
            .map(|id| id as u32)
    }

    /// Follows typedefs and qualifiers to the type they name (None for a chain that goes on
    /// and on: a malformed BTF's typedef of itself).
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..MAX_DEPTH {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Member `name` of the struct or union `id`, looking inside its anonymous members too (the
    /// kernel nests many fields in unnamed structs and unions).
    pub fn member(&self, id: u32, name: &str) -> Option<Member> {
        self.member_within(id, name, 0, &mut HashSet::new())
    }

    /// `member` at nesting `depth`, not looking into the types in `seen` again: a malformed BTF
    /// may nest a type in itself, and looking again could find nothing new anyway.
    fn member_within(
        &self,
        id: u32,
        name: &str,
        depth: usize,
        seen: &mut HashSet<u32>,
    ) -> Option<Member> {
        if depth >= MAX_DEPTH || !seen.insert(id) {
            return None;
        }
        let ty = self.resolve(id)?;
        for &(member_name, type_id, bits) in &ty.members {
            let found = if member_name == 0 {
                self.member_within(type_id, name, depth + 1, seen)
            } else if self.name(member_name) == name.as_bytes() {
                Some(Member { offset: 0, type_id })
            } else {
                None
            };
            if let Some(inner) = found {
                return Some(Member {
                    offset: (bits / 8).checked_add(inner.offset)?,
                    type_id: inner.type_id,
                });
            }
        }
        None
    }

    /// Member `name` of struct `struct_name`, or an error naming what is missing.
    pub fn struct_member(&self, struct_name: &str, name: &str) -> Result<Member> {
        let id = self
            .struct_id(struct_name)
            .with_context(|| format!("the kernel has no struct {struct_name}"))?;
        self.member(id, name)
            .with_context(|| format!("struct {struct_name} has no member {name}"))
    }

    /// Size in bytes of a type (arrays: of the whole array).
    pub fn size_of(&self, id: u32) -> Option<u32> {
        self.size_within(id, 0)
    }

    /// `size_of` at nesting `depth` (arrays of arrays); None where it does not fit in a u32.
    fn size_within(&self, id: u32, depth: usize) -> Option<u32> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let ty = self.resolve(id)?;
        match ty.array {
            Some((element, count)) => self.size_within(element, depth + 1)?.checked_mul(count),
            None => Some(ty.size_or_type),
        }
    }

    /// For an array type: its element type id.
    pub fn element_of(&self, id: u32) -> Option<u32> {
        self.resolve(id)?.array.map(|(element, _)| element)
    }

    /// The values of `enum name` (plain or 64-bit) in declaration order, e.g. the kernel's
    /// migratetype names. An enum declared without values (a forward declaration) is
    /// skipped.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>> {
        let ty = self
            .types
            .iter()
            .find(|t| {
                matches!(t.kind, KIND_ENUM | KIND_ENUM64)
                    && !t.enumerators.is_empty()
                    && self.name(t.name) == name.as_bytes()
            })
            .with_context(|| format!("no enum {name} in the kernel's type information"))?;
        Ok(ty
            .enumerators
            .iter()
            .map(|&(value_name, value)| {
                let value_name = String::from_utf8_lossy(self.name(value_name)).into_owned();
                (value_name, value)
            })
            .collect())
    }

    /// The name of a struct, union or other named type.
    pub fn type_name(&self, id: u32) -> Option<String> {
        let ty = self.resolve(id)?;
        Some(String::from_utf8_lossy(self.name(ty.name)).into_owned())
    }
}

/// Hand-made BTF blobs for tests: types as u32 words, with their names.
#[cfg(test)]
pub(crate) mod blob {
    pub const KIND_INT: u32 = super::KIND_INT;
    pub const KIND_ARRAY: u32 = super::KIND_ARRAY;
    pub const KIND_STRUCT: u32 = super::KIND_STRUCT;
    pub const KIND_ENUM: u32 = super::KIND_ENUM;
    pub const KIND_TYPEDEF: u32 = super::KIND_TYPEDEF;

    #[derive(Default)]
    pub struct Blob {
        strings: Vec<u8>,
        types: Vec<u32>,
        count: u32,
    }

    impl Blob {
        /// Adds a type: its name, `info` (kind << 24 | vlen, kind_flag at bit 31), size or
        /// type, then the words that follow (members, array, enumerators). Returns its id.
        pub fn add(&mut self, name: &str, info: u32, size_or_type: u32, rest: &[u32]) -> u32 {
            let name = self.name(name);
            self.types.extend([name, info, size_or_type]);
            self.types.extend(rest);
            self.count += 1;
            self.count
        }

        /// The offset of `text` in the string section ("" is 0).
        pub fn name(&mut self, text: &str) -> u32 {
            if self.strings.is_empty() {
                self.strings.push(0);
            }
            if text.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(text.as_bytes());
            self.strings.push(0);
            offset
        }

        pub fn bytes(&self) -> Vec<u8> {
            let types: Vec<u8> = self.types.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut data = Vec::new();
            data.extend(super::MAGIC.to_le_bytes());
            data.extend([1, 0]); // version, flags
            let (types_len, strings_len) = (types.len() as u32, self.strings.len() as u32);
            for v in [24, 0, types_len, types_len, strings_len] {
                data.extend(v.to_le_bytes());
            }
            data.extend(&types);
            data.extend(&self.strings);
            data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_enum(data: &[u8], name: &str) -> Result<Vec<(String, i64)>> {
        Btf::parse(data)?.enum_values(name)
    }

    /// bpftool's raw dump of the kernel's BTF; None where bpftool is missing (never under CI).
    fn bpftool_raw_dump() -> Option<String> {
        let output = std::process::Command::new("bpftool")
            .args([
                "btf",
                "dump",
                "file",
                "/sys/kernel/btf/vmlinux",
                "format",
                "raw",
            ])
            .output();
        let Some(output) = output.ok().filter(|o| o.status.success()) else {
            assert!(
                std::env::var("CI").is_err(),
                "bpftool is needed for this test under CI"
            );
            return None;
        };
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The kernel's own BTF, against bpftool's reading of it (`bpftool btf dump ... format raw`
    /// prints each member's bits_offset).
    #[test]
    fn offsets_match_bpftool() {
        let Ok(btf) = Btf::vmlinux() else {
            eprintln!("note: no /sys/kernel/btf/vmlinux here");
            return;
        };
        let Some(dump) = bpftool_raw_dump() else {
            return;
        };
        // Direct members of struct percpu_counter and task_struct, as bpftool prints them.
        for (strukt, member) in [("percpu_counter", "count"), ("percpu_counter", "counters")] {
            let header = format!("STRUCT '{strukt}' ");
            let block: Vec<&str> = dump
                .lines()
                .skip_while(|l| !l.contains(&header))
                .skip(1)
                .take_while(|l| l.starts_with('\t'))
                .collect();
            let bits: u32 = block
                .iter()
                .find(|l| l.trim_start().starts_with(&format!("'{member}' ")))
                .and_then(|l| l.split("bits_offset=").nth(1))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("bpftool shows no {strukt}.{member}"));
            assert_eq!(
                btf.struct_member(strukt, member).unwrap().offset,
                bits / 8,
                "{strukt}.{member}"
            );
        }
        // A member inside an unnamed struct: mm_struct's rss_stat is an array of counters.
        let rss = btf.struct_member("mm_struct", "rss_stat").unwrap();
        let element = btf.element_of(rss.type_id).unwrap();
        assert_eq!(btf.type_name(element).unwrap(), "percpu_counter");
        assert_eq!(
            btf.size_of(element),
            btf.struct_id("percpu_counter")
                .and_then(|id| btf.size_of(id))
        );
    }

    /// A hand-made BTF blob: enums are found past the other kinds' trailing data, a forward
    /// declaration is skipped, and signed and 64-bit values come out right.
    #[test]
    fn enum_values_from_a_small_blob() {
        let mut strings = b"\0".to_vec();
        let mut name = |text: &str| {
            let offset = strings.len() as u32;
            strings.extend_from_slice(text.as_bytes());
            strings.push(0);
            offset
        };
        let (int, s, m, small) = (name("int"), name("s"), name("m"), name("small"));
        let (a, b, target, big, three) = (
            name("A"),
            name("B"),
            name("target"),
            name("BIG"),
            name("THREE"),
        );
        let mut types: Vec<u32> = Vec::new();
        // [1] int: 4 bytes of encoding after the common part.
        types.extend([int, KIND_INT << 24, 4, 32]);
        // [2] struct s { int m; }
        types.extend([s, KIND_STRUCT << 24 | 1, 4, m, 1, 0]);
        // [3] enum small (signed) { A = -1, B = 7 }
        types.extend([
            small,
            1 << 31 | KIND_ENUM << 24 | 2,
            4,
            a,
            -1i32 as u32,
            b,
            7,
        ]);
        // [4] enum target; (a forward declaration: no values)
        types.extend([target, KIND_ENUM << 24, 4]);
        // [5] enum target (64-bit) { BIG = 1 << 40, THREE = 3 }
        types.extend([
            target,
            KIND_ENUM64 << 24 | 2,
            8,
            big,
            0,
            1 << 8,
            three,
            3,
            0,
        ]);
        let types: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut data = Vec::new();
        data.extend(MAGIC.to_le_bytes());
        data.extend([1, 0]); // version, flags
        for v in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(v.to_le_bytes());
        }
        data.extend(&types);
        data.extend(&strings);

        assert_eq!(
            parsed_enum(&data, "small").unwrap(),
            [("A".to_string(), -1), ("B".to_string(), 7)]
        );
        assert_eq!(
            parsed_enum(&data, "target").unwrap(),
            [("BIG".to_string(), 1 << 40), ("THREE".to_string(), 3)]
        );
        assert!(parsed_enum(&data, "s").is_err(), "a struct is not an enum");
        assert!(parsed_enum(&data, "missing").is_err());
        assert!(parsed_enum(&data[..data.len() - strings.len() - 4], "target").is_err());
    }

    /// enum migratetype from the kernel's BTF, against bpftool's reading of it.
    #[test]
    fn migratetype_matches_bpftool() {
        let Ok(values) = Btf::vmlinux().and_then(|btf| btf.enum_values("migratetype")) else {
            eprintln!("note: no /sys/kernel/btf/vmlinux here");
            return;
        };
        let Some(dump) = bpftool_raw_dump() else {
            return;
        };
        // "\t'MIGRATE_UNMOVABLE' val=0" lines under "ENUM 'migratetype' ...".
        let expected: Vec<(String, i64)> = dump
            .lines()
            .skip_while(|l| !l.contains("ENUM 'migratetype' "))
            .skip(1)
            .take_while(|l| l.starts_with('\t'))
            .filter_map(|l| {
                let (name, value) = l.trim().split_once(" val=")?;
                Some((name.trim_matches('\'').to_string(), value.parse().ok()?))
            })
            .collect();
        assert!(!expected.is_empty(), "bpftool shows no enum migratetype");
        assert_eq!(values, expected);
    }

    /// Found by fuzzing (cargo xtask fuzz btf), here cut down to the types that matter: types
    /// that refer to themselves (an anonymous member of its own struct, a typedef of itself,
    /// an array of itself) recursed until the stack overflowed or looped for ever, and sizes
    /// and offsets past 4 GiB overflowed.
    #[test]
    fn malformed_types_are_not_found_rather_than_crash() {
        use blob::*;
        let mut b = Blob::default();
        let x = b.name("x");
        // [1] struct s { struct s; int x; } -- its anonymous member is itself.
        let s = b.add("s", KIND_STRUCT << 24 | 2, 8, &[0, 1, 0, x, 3, 32]);
        // [2] typedef loop loop;
        let looped = b.add("loop", KIND_TYPEDEF << 24, 2, &[]);
        // [3] int
        let int = b.add("int", KIND_INT << 24, 4, &[32]);
        // [4] int[2^31]: 8 GiB.
        let huge = b.add("", KIND_ARRAY << 24, 0, &[int, int, 1 << 31]);
        // [5] an array of itself.
        let recursive = b.add("", KIND_ARRAY << 24, 0, &[5, int, 2]);
        // Structs nested 9 deep, each the anonymous member of the next at 512 MiB - 1 byte.
        let mut far = s;
        for _ in 0..9 {
            far = b.add("", KIND_STRUCT << 24 | 1, 8, &[0, far, u32::MAX - 7]);
        }
        let btf = Btf::parse(&b.bytes()).unwrap();

        assert_eq!(
            btf.member(s, "x"),
            Some(Member {
                offset: 4,
                type_id: int
            })
        );
        assert_eq!(btf.member(s, "missing"), None);
        assert_eq!(btf.member(looped, "x"), None);
        assert_eq!((btf.size_of(looped), btf.type_name(looped)), (None, None));
        assert_eq!(btf.size_of(huge), None);
        assert_eq!(btf.size_of(recursive), None);
        // x would be 4.5 GiB into the outermost struct.
        assert_eq!(btf.member(far, "x"), None);
    }
}
