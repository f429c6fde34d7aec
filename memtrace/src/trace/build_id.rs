//! The GNU build id of an ELF file (its `NT_GNU_BUILD_ID` note, as `readelf -n` prints it):
//! what profile servers (Parca, Pyroscope, `go tool pprof`) find a binary's symbols by.
use std::fs::File;

use object::{
    elf,
    read::{
        elf::{FileHeader, ProgramHeader, SectionHeader},
        ReadCache, ReadRef,
    },
    Endianness, FileKind,
};

/// The build id in lower-case hex; None for a file that is not ELF or has no such note.
/// Only the headers and the notes are read, never the whole file (binaries can be large).
pub fn gnu_build_id(file: &File) -> Option<String> {
    let data = ReadCache::new(file);
    let id = match FileKind::parse(&data).ok()? {
        FileKind::Elf64 => note::<elf::FileHeader64<Endianness>, _>(&data),
        FileKind::Elf32 => note::<elf::FileHeader32<Endianness>, _>(&data),
        _ => None,
    }?;
    Some(id.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The note's bytes: from the note segments (what a loaded binary keeps even when its section
/// headers are stripped), else from the note sections.
fn note<'data, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'data>>(
    data: R,
) -> Option<&'data [u8]> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let is_build_id =
        |name: &[u8], kind: u32| name == elf::ELF_NOTE_GNU && kind == elf::NT_GNU_BUILD_ID;
    for segment in header.program_headers(endian, data).ok()? {
        let Ok(Some(mut notes)) = segment.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if is_build_id(note.name(), note.n_type(endian)) {
                return Some(note.desc());
            }
        }
    }
    let sections = header.sections(endian, data).ok()?;
    for section in sections.iter() {
        let Ok(Some(mut notes)) = section.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if is_build_id(note.name(), note.n_type(endian)) {
                return Some(note.desc());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `readelf -n`'s reading of the file's build id (the oracle).
    fn readelf_build_id(path: &str) -> Option<String> {
        let out = Command::new("readelf").args(["-n", path]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .map(str::to_owned)
    }

    #[test]
    fn matches_readelf() {
        for path in ["/bin/true", "/usr/lib/x86_64-linux-gnu/libc.so.6"] {
            let expected = readelf_build_id(path).expect("readelf -n shows a build id");
            let file = File::open(path).unwrap();
            assert_eq!(gnu_build_id(&file), Some(expected), "{path}");
        }
        let own = std::env::current_exe().unwrap();
        let file = File::open(&own).unwrap();
        assert_eq!(gnu_build_id(&file), readelf_build_id(own.to_str().unwrap()));
    }

    #[test]
    fn not_elf_has_none() {
        let file = File::open("/etc/passwd").unwrap();
        assert_eq!(gnu_build_id(&file), None);
    }
}
