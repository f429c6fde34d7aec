//! For the layout tests: the offsets and sizes the compiler gave CPython's structs, read from
//! the DWARF of an interpreter's detached debug file, so that memtrace's tables are checked
//! against the build itself rather than against headers copied by hand.
//!
//! A query is `Type.member.member…` (the offset of the last member from the start of `Type`,
//! through nested struct members) or `sizeof Type`. `Type` is a typedef's name or a struct's
//! tag. Only the compile units' top-level entries are scanned, and the scan stops once every
//! queried type is found.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use gimli::{
    constants, Abbreviations, AttributeValue, DebugAbbrev, DebugInfo, DebugLineStr, DebugStr,
    DebuggingInformationEntry, EndianSlice, LittleEndian, UnitHeader, UnitOffset,
};
use object::{CompressionFormat, Object, ObjectSection};

type Reader<'a> = EndianSlice<'a, LittleEndian>;
type Entry<'a> = DebuggingInformationEntry<Reader<'a>>;

/// The detached debug file of `binary`, where Debian's `-dbg` packages put it: under
/// /usr/lib/debug/.build-id, by the binary's GNU build id.
pub fn debug_file(binary: &Path) -> Result<PathBuf> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = object::File::parse(&*data)?;
    let id = elf
        .build_id()?
        .with_context(|| format!("{} has no GNU build id", binary.display()))?;
    let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
    ensure!(hex.len() > 2, "build id {hex} too short");
    let (dir, rest) = hex.split_at(2);
    Ok(PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{dir}/{rest}.debug"
    )))
}

/// The answer to each of `queries` (see the module's doc) in the DWARF of `debug_file`.
pub fn measure(debug_file: &Path, queries: &[&str]) -> Result<HashMap<String, u64>> {
    let data =
        std::fs::read(debug_file).with_context(|| format!("reading {}", debug_file.display()))?;
    let elf = object::File::parse(&*data)?;
    let sections = Sections::load(&elf)?;
    let dwarf = Dwarf::new(&sections)?;
    let roots: Vec<&str> = queries.iter().map(|query| root_of(query)).collect();
    let types = dwarf.find_types(&roots)?;
    let mut answers = HashMap::new();
    for query in queries {
        let answer = dwarf
            .answer(query, &types)
            .with_context(|| format!("{}: {query}", debug_file.display()))?;
        answers.insert(query.to_string(), answer);
    }
    Ok(answers)
}

/// The type a query starts from.
fn root_of(query: &str) -> &str {
    let path = query.strip_prefix("sizeof ").unwrap_or(query);
    path.split('.').next().unwrap_or(path)
}

/// The DWARF sections the lookups read, decompressed: Debian compresses them (SHF_COMPRESSED).
struct Sections<'d> {
    info: Cow<'d, [u8]>,
    abbrev: Cow<'d, [u8]>,
    str: Cow<'d, [u8]>,
    line_str: Cow<'d, [u8]>,
}

impl<'d> Sections<'d> {
    fn load(elf: &object::File<'d>) -> Result<Sections<'d>> {
        Ok(Sections {
            info: section(elf, ".debug_info")?,
            abbrev: section(elf, ".debug_abbrev")?,
            str: section(elf, ".debug_str")?,
            line_str: section(elf, ".debug_line_str")?,
        })
    }
}

/// The contents of section `name`, empty if it is absent. object's own decompression is a
/// feature memtrace does not enable, so zlib (what Debian's objcopy uses) is undone here.
fn section<'d>(elf: &object::File<'d>, name: &str) -> Result<Cow<'d, [u8]>> {
    let Some(section) = elf.section_by_name(name) else {
        return Ok(Cow::Borrowed(&[]));
    };
    let compressed = section.compressed_data()?;
    match compressed.format {
        CompressionFormat::None => Ok(Cow::Borrowed(compressed.data)),
        CompressionFormat::Zlib => {
            let size = usize::try_from(compressed.uncompressed_size)?;
            let mut data = Vec::with_capacity(size);
            flate2::read::ZlibDecoder::new(compressed.data)
                .read_to_end(&mut data)
                .with_context(|| format!("decompressing {name}"))?;
            ensure!(
                data.len() == size,
                "{name}: {} bytes, not {size}",
                data.len()
            );
            Ok(Cow::Owned(data))
        }
        format => bail!("{name}: unsupported compression {format:?}"),
    }
}

/// One compile unit, with the abbreviations its entries are read with.
struct Unit<'a> {
    header: UnitHeader<Reader<'a>>,
    abbrevs: Abbreviations,
}

/// A debugging information entry: its unit (an index in `Dwarf::units`) and offset there.
#[derive(Clone, Copy, Debug)]
struct Die {
    unit: usize,
    offset: UnitOffset,
}

struct Dwarf<'a> {
    units: Vec<Unit<'a>>,
    str: DebugStr<Reader<'a>>,
    line_str: DebugLineStr<Reader<'a>>,
}

impl<'a> Dwarf<'a> {
    fn new(sections: &'a Sections) -> Result<Dwarf<'a>> {
        let info = DebugInfo::new(&sections.info, LittleEndian);
        let abbrev = DebugAbbrev::new(&sections.abbrev, LittleEndian);
        let mut units = Vec::new();
        let mut headers = info.units();
        while let Some(header) = headers.next()? {
            let abbrevs = header.abbreviations(&abbrev)?;
            units.push(Unit { header, abbrevs });
        }
        ensure!(!units.is_empty(), "no .debug_info");
        Ok(Dwarf {
            units,
            str: DebugStr::new(&sections.str, LittleEndian),
            line_str: DebugLineStr::new(&sections.line_str, LittleEndian),
        })
    }

    fn entry(&self, die: Die) -> Result<Entry<'a>> {
        let unit = &self.units[die.unit];
        Ok(unit.header.entry(&unit.abbrevs, die.offset)?)
    }

    /// The entry's `DW_AT_name`, if it has one in a form read here.
    fn name(&self, entry: &Entry<'a>) -> Result<Option<&'a [u8]>> {
        let name = match entry.attr_value(constants::DW_AT_name) {
            Some(AttributeValue::String(name)) => name,
            Some(AttributeValue::DebugStrRef(offset)) => self.str.get_str(offset)?,
            Some(AttributeValue::DebugLineStrRef(offset)) => self.line_str.get_str(offset)?,
            _ => return Ok(None),
        };
        Ok(Some(name.slice()))
    }

    /// The entry's `DW_AT_type`, within its unit or (`DW_FORM_ref_addr`) in another.
    fn type_of(&self, die: Die, entry: &Entry<'a>) -> Result<Option<Die>> {
        match entry.attr_value(constants::DW_AT_type) {
            Some(AttributeValue::UnitRef(offset)) => Ok(Some(Die { offset, ..die })),
            Some(AttributeValue::DebugInfoRef(target)) => {
                let unit = self
                    .units
                    .partition_point(|unit| unit.header.offset().0 <= target.0)
                    .checked_sub(1)
                    .context("reference before the first unit")?;
                let offset = target
                    .to_unit_offset(&self.units[unit].header)
                    .context("reference out of its unit")?;
                Ok(Some(Die { unit, offset }))
            }
            None => Ok(None),
            Some(other) => bail!("DW_AT_type of form {other:?}"),
        }
    }

    /// The struct or union that `die` names through typedefs and qualifiers, if it is
    /// defined there (not only declared).
    fn definition(&self, mut die: Die) -> Result<Option<Die>> {
        loop {
            let entry = self.entry(die)?;
            match entry.tag() {
                constants::DW_TAG_structure_type | constants::DW_TAG_union_type => {
                    let declared = entry.attr_value(constants::DW_AT_declaration).is_some();
                    return Ok((!declared).then_some(die));
                }
                constants::DW_TAG_typedef
                | constants::DW_TAG_const_type
                | constants::DW_TAG_volatile_type
                | constants::DW_TAG_atomic_type => match self.type_of(die, &entry)? {
                    Some(next) => die = next,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
    }

    /// Where each of `roots` is defined: the first definition in the compile units,
    /// reached from a typedef of that name or a struct of that tag.
    fn find_types(&self, roots: &[&str]) -> Result<HashMap<String, Die>> {
        let wanted: HashSet<&str> = roots.iter().copied().collect();
        let mut found = HashMap::new();
        // Struct tags that stand for a root (its own name, and those its typedefs name).
        let mut tags: HashMap<Vec<u8>, String> = roots
            .iter()
            .map(|root| (root.as_bytes().to_vec(), root.to_string()))
            .collect();
        // A typedef may name a struct declared in one unit and defined in an earlier one.
        for _pass in 0..2 {
            for unit in 0..self.units.len() {
                if found.len() == wanted.len() {
                    return Ok(found);
                }
                self.scan_unit(unit, &mut tags, &mut found)?;
            }
        }
        let missing: Vec<&str> = wanted
            .into_iter()
            .filter(|r| !found.contains_key(*r))
            .collect();
        ensure!(missing.is_empty(), "no definition of {missing:?}");
        Ok(found)
    }

    /// Looks at the unit's top-level entries for the roots not yet found.
    fn scan_unit(
        &self,
        unit: usize,
        tags: &mut HashMap<Vec<u8>, String>,
        found: &mut HashMap<String, Die>,
    ) -> Result<()> {
        let Unit { header, abbrevs } = &self.units[unit];
        let mut cursor = header.entries(abbrevs);
        if !cursor.next_entry()? || !cursor.current().is_some_and(|cu| cu.has_children()) {
            return Ok(());
        }
        cursor.next_entry()?;
        while let Some(entry) = cursor.current() {
            let die = Die {
                unit,
                offset: entry.offset(),
            };
            self.consider(die, entry, tags, found)?;
            cursor.next_sibling()?;
        }
        Ok(())
    }

    /// Records `entry` if it defines a root not yet found, or learns the tag of a root
    /// whose typedef names a struct only declared here.
    fn consider(
        &self,
        die: Die,
        entry: &Entry<'a>,
        tags: &mut HashMap<Vec<u8>, String>,
        found: &mut HashMap<String, Die>,
    ) -> Result<()> {
        let is_struct = matches!(
            entry.tag(),
            constants::DW_TAG_structure_type | constants::DW_TAG_union_type
        );
        if !is_struct && entry.tag() != constants::DW_TAG_typedef {
            return Ok(());
        }
        let Some(name) = self.name(entry)? else {
            return Ok(());
        };
        let Some(root) = tags.get(name).cloned() else {
            return Ok(());
        };
        if found.contains_key(&root) {
            return Ok(());
        }
        if let Some(definition) = self.definition(die)? {
            found.insert(root, definition);
        } else if let Some(tag) = self.declared_tag(die, entry)? {
            tags.entry(tag.to_vec()).or_insert(root);
        }
        Ok(())
    }

    /// The tag of the struct a typedef names, when that struct is only declared.
    fn declared_tag(&self, die: Die, entry: &Entry<'a>) -> Result<Option<&'a [u8]>> {
        if entry.tag() != constants::DW_TAG_typedef {
            return Ok(None);
        }
        let Some(target) = self.type_of(die, entry)? else {
            return Ok(None);
        };
        self.name(&self.entry(target)?)
    }

    fn answer(&self, query: &str, types: &HashMap<String, Die>) -> Result<u64> {
        let (sizeof, path) = match query.strip_prefix("sizeof ") {
            Some(path) => (true, path),
            None => (false, query),
        };
        let mut names = path.split('.');
        let root = names.next().context("empty query")?;
        let mut die = *types.get(root).context("type not found")?;
        let mut offset = 0;
        for name in names {
            let (member_offset, member_type) = self
                .member(die, name)?
                .with_context(|| format!("no member {name}"))?;
            offset += member_offset;
            die = member_type;
        }
        if sizeof {
            let entry = self.entry(self.definition(die)?.unwrap_or(die))?;
            let size = entry.attr_value(constants::DW_AT_byte_size);
            return size
                .and_then(|size| size.udata_value())
                .context("no byte size");
        }
        ensure!(path.contains('.'), "an offset query names a member");
        Ok(offset)
    }

    /// The offset and type of the member `name` of the struct or union `die` names, looking
    /// into anonymous struct and union members too.
    fn member(&self, die: Die, name: &str) -> Result<Option<(u64, Die)>> {
        let outer = self
            .definition(die)?
            .context("not a defined struct or union")?;
        let unit = &self.units[outer.unit];
        let mut cursor = unit.header.entries_at_offset(&unit.abbrevs, outer.offset)?;
        cursor.next_entry()?;
        if !cursor.current().is_some_and(|entry| entry.has_children()) {
            return Ok(None);
        }
        cursor.next_entry()?;
        while let Some(entry) = cursor.current() {
            if entry.tag() == constants::DW_TAG_member {
                let member = Die {
                    offset: entry.offset(),
                    ..outer
                };
                if let Some(found) = self.member_here(member, entry, name)? {
                    return Ok(Some(found));
                }
            }
            cursor.next_sibling()?;
        }
        Ok(None)
    }

    /// The member `name`'s offset and type if `member` is it, or an anonymous member
    /// that holds it.
    fn member_here(
        &self,
        member: Die,
        entry: &Entry<'a>,
        name: &str,
    ) -> Result<Option<(u64, Die)>> {
        // Union members and a struct's first member may have no location: offset 0.
        let location = match entry.attr_value(constants::DW_AT_data_member_location) {
            Some(value) => value
                .udata_value()
                .with_context(|| format!("member location {value:?}"))?,
            None => 0,
        };
        let member_type = self
            .type_of(member, entry)?
            .context("member without type")?;
        match self.name(entry)? {
            Some(member_name) if member_name == name.as_bytes() => {
                Ok(Some((location, member_type)))
            }
            Some(_) => Ok(None),
            None => Ok(self
                .member(member_type, name)?
                .map(|(offset, found)| (location + offset, found))),
        }
    }
}
