//! An ELF file as binutils' `readelf` reads it (its build id, loadable segments, function
//! symbols and unwind tables): the oracle for the mappings and names memtrace puts in profiles,
//! and for how the unwinding fixtures were compiled.
use std::{path::Path, process::Command};

pub struct ElfView {
    /// `readelf -n`'s "Build ID", in hex.
    pub build_id: Option<String>,
    /// Loadable segments: (file offset, virtual address, size in the file).
    loads: Vec<(u64, u64, u64)>,
    /// Function symbols of every symbol table, the file's and its separate debug file's:
    /// (address, size, name without its version).
    functions: Vec<(u64, u64, String)>,
}

fn readelf(args: &[&str], path: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("readelf (binutils): {e}"));
    assert!(out.status.success(), "readelf {args:?} {}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// readelf's numbers: hex with or without 0x, sizes in decimal unless 0x.
fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

fn size(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The function symbols of every symbol table: (address, size, name without its version).
fn function_symbols(path: &Path) -> Vec<(u64, u64, String)> {
    // `  12: 0000000000001139    34 FUNC    GLOBAL DEFAULT   14 touch_pages`
    readelf(&["-sW"], path)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [_, value, size_text, kind, _, _, ndx, name, ..] = f[..] else {
                return None;
            };
            let (start, len) = (hex(value)?, size(size_text)?);
            let code = matches!(kind, "FUNC" | "IFUNC") && ndx != "UND" && len > 0;
            let name = name.split('@').next().unwrap_or(name).to_owned();
            code.then_some((start, len, name))
        })
        .collect()
}

impl ElfView {
    pub fn read(path: &Path) -> Self {
        let build_id = readelf(&["-n"], path)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .map(str::to_owned);
        let loads = readelf(&["-lW"], path)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&"LOAD")).then_some(())?;
                Some((hex(f[1])?, hex(f[2])?, hex(f[4])?))
            })
            .collect();
        let mut functions = function_symbols(path);
        // Its separate debug file, where gdb (and blazesym) look for it by build id.
        if let Some(id) = build_id.as_deref().filter(|id| id.len() > 2) {
            let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
            if Path::new(&debug).is_file() {
                functions.extend(function_symbols(Path::new(&debug)));
            }
        }
        Self {
            build_id,
            loads,
            functions,
        }
    }

    /// The virtual address (as symbols give them) of `file_offset`, if a segment loads it.
    pub fn address_of(&self, file_offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(offset, _, len)| (*offset..offset + len).contains(&file_offset))
            .map(|(offset, vaddr, _)| file_offset - offset + vaddr)
    }

    /// The names of the function symbols covering `file_offset`.
    pub fn functions_at(&self, file_offset: u64) -> Vec<&str> {
        let Some(address) = self.address_of(file_offset) else {
            return Vec::new();
        };
        self.functions
            .iter()
            .filter(|(start, len, _)| (*start..start + len).contains(&address))
            .map(|(.., name)| name.as_str())
            .collect()
    }

    /// The function symbols: (address, size, name without its version).
    pub fn functions(&self) -> impl Iterator<Item = (u64, u64, &str)> {
        self.functions
            .iter()
            .map(|(start, len, name)| (*start, *len, name.as_str()))
    }

    /// Every name of the function called `name`: the names of the function symbols at its
    /// address (a C library's `raise`, `gsignal` and `__GI_raise`; `__libc_start_main` and
    /// `__libc_start_main_impl`). Empty when no function symbol has that name.
    pub fn aliases(&self, name: &str) -> Vec<&str> {
        let starts: Vec<u64> = self
            .functions
            .iter()
            .filter(|(.., n)| n == name)
            .map(|(start, ..)| *start)
            .collect();
        let mut names: Vec<&str> = self
            .functions
            .iter()
            .filter(|(start, ..)| starts.contains(start))
            .map(|(.., n)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// An FDE of .eh_frame: the code it covers and the CFA rule of each of its rows (`rsp+8`,
/// `rbp+16`, `exp` for an expression), as `readelf -wF` interprets them.
#[derive(Debug)]
pub struct Fde {
    pub start: u64,
    pub end: u64,
    pub cfa: Vec<String>,
}

/// A CIE or an FDE as `readelf -wF` lists it.
struct FrameEntry {
    offset: String,
    /// An FDE's CIE (by offset); None for a CIE.
    cie: Option<String>,
    range: Option<(u64, u64)>,
    cfa: Vec<String>,
}

/// The FDEs of `path`'s .eh_frame. An FDE that changes nothing (a leaf using no stack) has
/// its CIE's initial rows.
pub fn fdes(path: &Path) -> Vec<Fde> {
    let mut entries: Vec<FrameEntry> = Vec::new();
    for line in readelf(&["-wF"], path).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 4 && matches!(fields[3], "FDE" | "CIE") {
            // `00000018 0000000000000014 0000001c FDE cie=00000000 pc=0000000000001630..0000000000001652`
            // `00000000 0000000000000014 00000000 CIE "zR" cf=1 df=-8 ra=16`
            let cie = fields.iter().find_map(|f| f.strip_prefix("cie="));
            let range = fields.iter().find_map(|f| f.strip_prefix("pc="));
            let range = range
                .and_then(|r| r.split_once(".."))
                .and_then(|(start, end)| Some((hex(start)?, hex(end)?)));
            entries.push(FrameEntry {
                offset: fields[0].to_owned(),
                cie: cie.map(str::to_owned),
                range,
                cfa: Vec::new(),
            });
            continue;
        }
        // `0000000000001940 rsp+8    u     u     c-8` (16 digits: not the 8 of `00000224 ZERO
        // terminator`); the column header starts with `LOC`.
        if let ([location, cfa, ..], Some(entry)) = (fields.as_slice(), entries.last_mut()) {
            if location.len() == 16 && hex(location).is_some() {
                entry.cfa.push((*cfa).to_owned());
            }
        }
    }
    let initial_rows = |cie: &str| {
        entries
            .iter()
            .find(|e| e.cie.is_none() && e.offset == cie)
            .map(|e| e.cfa.clone())
            .unwrap_or_default()
    };
    entries
        .iter()
        .filter_map(|e| {
            let ((start, end), cie) = (e.range?, e.cie.as_deref()?);
            let cfa = match e.cfa.is_empty() {
                true => initial_rows(cie),
                false => e.cfa.clone(),
            };
            Some(Fde { start, end, cfa })
        })
        .collect()
}

/// The CFA rules of the rows covering `start..end` (a function's).
pub fn cfa_rules_of(fdes: &[Fde], start: u64, end: u64) -> Vec<&str> {
    fdes.iter()
        .filter(|f| f.start < end && start < f.end)
        .flat_map(|f| f.cfa.iter().map(String::as_str))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_workloads_function() {
        let path = crate::workload("fault_touch");
        let elf = ElfView::read(&path);
        assert!(elf.build_id.as_deref().is_some_and(|id| id.len() >= 16));
        let (start, _, _) = elf
            .functions
            .iter()
            .find(|(.., name)| name == "touch_pages")
            .expect("touch_pages in the symbol table")
            .clone();
        // The text segment maps file offsets to addresses one to one, shifted.
        let (offset, vaddr, _) = *elf
            .loads
            .iter()
            .find(|(_, vaddr, len)| (*vaddr..vaddr + len).contains(&start))
            .expect("a segment loads touch_pages");
        let file_offset = start - vaddr + offset;
        assert_eq!(elf.address_of(file_offset), Some(start));
        assert_eq!(elf.functions_at(file_offset + 1), ["touch_pages"]);
    }

    #[test]
    fn names_a_functions_aliases() {
        let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        let elf = ElfView::read(libc);
        let names = elf.aliases("raise");
        assert!(
            names.contains(&"raise") && names.contains(&"gsignal"),
            "{names:?}"
        );
        assert!(elf.aliases("no such function").is_empty());
    }

    #[test]
    fn reads_cfa_rules() {
        // Built with frame pointers: after the prologue, the CFA is rbp-based.
        let path = crate::workload("fault_touch");
        let elf = ElfView::read(&path);
        let (start, len, _) = elf
            .functions()
            .find(|(.., name)| *name == "touch_pages")
            .unwrap();
        let fdes = fdes(&path);
        let rules = cfa_rules_of(&fdes, start, start + len);
        assert_eq!(rules.first(), Some(&"rsp+8"), "{rules:?}");
        assert!(rules.contains(&"rbp+16"), "{rules:?}");
    }
}
