//! An ELF file as binutils' `readelf` reads it (its build id, loadable segments and function
//! symbols): the oracle for the mappings and names memtrace puts in profiles.
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
}
