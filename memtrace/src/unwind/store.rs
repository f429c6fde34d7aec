//! The kernel's unwind arrays, filled binary by binary: rows and page indexes are written in
//! place through a shared mapping of the arrays (a syscall per row would cost more than
//! building the rows), each binary's extent through the table array. Space is handed out in
//! order and never reclaimed during a trace; a binary that does not fit is counted, and its
//! code is walked by frame pointers.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, Map, MapData};
use memtrace_common::unwind::{UnwindRow, UnwindTable};
use serde::Serialize;

use super::rows::{page_index, Rows};

/// An array map shared with the kernel, written in place.
struct MappedArray<T> {
    pointer: *mut T,
    len: usize,
    _map: MapData,
}

impl<T: Copy> MappedArray<T> {
    fn new(map: Map, len: u32) -> Result<Self> {
        let Map::Array(data) = map else {
            bail!("an unwind array is not an array map");
        };
        let bytes = len as usize * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of the map's own fd, at its size (created BPF_F_MMAPABLE);
        // unmapped on drop, before the fd closes.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping an unwind array");
        }
        Ok(Self {
            pointer: pointer.cast(),
            len: len as usize,
            _map: data,
        })
    }

    fn write(&mut self, at: usize, values: &[T]) {
        assert!(at + values.len() <= self.len, "unwind array overrun");
        // SAFETY: in bounds (checked above) of a mapping we own.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.pointer.add(at), values.len())
        };
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, at its size.
        unsafe { libc::munmap(self.pointer.cast(), self.len * std::mem::size_of::<T>()) };
    }
}

/// How big the kernel's arrays are.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub rows: u32,
    pub pages: u32,
    pub tables: u32,
}

impl Capacity {
    /// Tables for `mib` MiB of kernel memory: one row in 16 bytes of the budget as page index
    /// (a 4 KiB page of code holds ~20 rows on average), tables for a thousand binaries.
    pub fn of_mib(mib: u32) -> Self {
        let bytes = u64::from(mib.max(1)) << 20;
        let row_bytes = bytes * 15 / 16;
        Self {
            rows: (row_bytes / 8) as u32,
            pages: ((bytes - row_bytes) / 8) as u32,
            tables: 4096,
        }
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.rows) * 8
            + u64::from(self.pages) * 8
            + u64::from(self.tables) * std::mem::size_of::<UnwindTable>() as u64
    }
}

/// What the tables hold and took, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableFigures {
    /// Binaries with a table in the kernel.
    pub binaries: u64,
    pub rows: u64,
    /// Kernel memory the tables use, and the arrays' size (`--unwind-memory`).
    pub kernel_bytes: u64,
    pub capacity_bytes: u64,
    /// Binaries that got no table because the arrays were full: their code is walked by
    /// frame pointers.
    pub binaries_without_room: u64,
    /// Executable files with no frame information, or that could not be read.
    pub binaries_without_frame_info: u64,
    /// Time spent building and writing tables.
    pub build_ms: f64,
}

pub struct TableStore {
    rows: MappedArray<UnwindRow>,
    pages: MappedArray<u64>,
    tables: Array<MapData, UnwindTable>,
    capacity: Capacity,
    next_row: u32,
    next_page: u32,
    next_table: u32,
    pub figures: TableFigures,
}

impl TableStore {
    pub fn new(rows: Map, pages: Map, tables: Map, capacity: Capacity) -> Result<Self> {
        Ok(Self {
            rows: MappedArray::new(rows, capacity.rows)?,
            pages: MappedArray::new(pages, capacity.pages)?,
            tables: Array::try_from(tables)?,
            capacity,
            next_row: 0,
            next_page: 0,
            next_table: 0,
            figures: TableFigures {
                capacity_bytes: capacity.bytes(),
                ..TableFigures::default()
            },
        })
    }

    /// Writes a binary's rows; returns its table's index, None when it does not fit.
    pub fn add(&mut self, rows: &Rows) -> Result<Option<u32>> {
        if rows.rows.is_empty() {
            self.figures.binaries_without_frame_info += 1;
            return Ok(None);
        }
        let index = page_index(rows);
        let fits = self.next_table < self.capacity.tables
            && rows.rows.len() as u64 + u64::from(self.next_row) <= u64::from(self.capacity.rows)
            && index.len() as u64 + u64::from(self.next_page) <= u64::from(self.capacity.pages);
        if !fits {
            self.figures.binaries_without_room += 1;
            return Ok(None);
        }
        self.rows.write(self.next_row as usize, &rows.rows);
        let index: Vec<u64> = index.into_iter().map(u64::from).collect();
        self.pages.write(self.next_page as usize, &index);
        let table = UnwindTable {
            base: rows.base,
            first_row: self.next_row,
            rows: rows.rows.len() as u32,
            first_page: self.next_page,
            pages: index.len() as u32 - 1,
        };
        let id = self.next_table;
        self.tables
            .set(id, table, 0)
            .context("writing an unwind table")?;
        self.next_row += table.rows;
        self.next_page += index.len() as u32;
        self.next_table += 1;
        self.figures.binaries += 1;
        self.figures.rows += u64::from(table.rows);
        self.figures.kernel_bytes = u64::from(self.next_row) * 8
            + u64::from(self.next_page) * 8
            + u64::from(self.next_table) * std::mem::size_of::<UnwindTable>() as u64;
        Ok(Some(id))
    }
}
