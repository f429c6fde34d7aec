//! Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to find where a struct member lives:
//! the eBPF programs read a few kernel structs directly, and their layout differs between builds.
//! Format: Documentation/bpf/btf.rst (a header, then the type section, then the string section).
use anyhow::{bail, Context, Result};

const MAGIC: u16 = 0xeb9f;

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
        }];
        let mut at = header_len + type_off;
        let end = at + type_len;
        while at < end {
            let (name, info, size_or_type) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfields = info >> 31 == 1;
            let mut ty = Type {
                name,
                kind,
                size_or_type,
                members: Vec::new(),
                array: None,
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
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
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

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        loop {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
    }

    /// Member `name` of the struct or union `id`, looking inside its anonymous members too (the
    /// kernel nests many fields in unnamed structs and unions).
    pub fn member(&self, id: u32, name: &str) -> Option<Member> {
        let ty = self.resolve(id)?;
        for &(member_name, type_id, bits) in &ty.members {
            let found = if member_name == 0 {
                self.member(type_id, name)
            } else if self.name(member_name) == name.as_bytes() {
                Some(Member { offset: 0, type_id })
            } else {
                None
            };
            if let Some(inner) = found {
                return Some(Member {
                    offset: bits / 8 + inner.offset,
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
        let ty = self.resolve(id)?;
        match ty.array {
            Some((element, count)) => Some(self.size_of(element)? * count),
            None => Some(ty.size_or_type),
        }
    }

    /// For an array type: its element type id.
    pub fn element_of(&self, id: u32) -> Option<u32> {
        self.resolve(id)?.array.map(|(element, _)| element)
    }

    /// The name of a struct, union or other named type.
    pub fn type_name(&self, id: u32) -> Option<String> {
        let ty = self.resolve(id)?;
        Some(String::from_utf8_lossy(self.name(ty.name)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own BTF, against bpftool's reading of it (`bpftool btf dump ... format raw`
    /// prints each member's bits_offset).
    #[test]
    fn offsets_match_bpftool() {
        let Ok(btf) = Btf::vmlinux() else {
            eprintln!("note: no /sys/kernel/btf/vmlinux here");
            return;
        };
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
            return;
        };
        let dump = String::from_utf8_lossy(&output.stdout);
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
}
