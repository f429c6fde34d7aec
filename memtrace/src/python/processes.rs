//! The Python processes the stack walk serves: each is given to the kernel with its
//! interpreter's addresses and layout when its mappings are read, and the code objects its
//! stacks name are read from its memory as those stacks first appear, while it lives (a
//! report is written after the traced program has exited).
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use anyhow::Result;
use aya::maps::{HashMap as KernelHashMap, MapData};
use memtrace_common::{
    python::{frame, PythonProcess},
    UserStack,
};
use serde::Serialize;

use super::{
    code::{self, CodeObject},
    codes::Identity,
    interpreter::Interpreter,
    layout, CodeObjects,
};
use crate::{kernel::tracer::Tracer, trace::memory_maps::MapsCache};

/// What the report says of the Python processes and their frames' names.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PythonFigures {
    /// Processes with an interpreter memtrace walks, and with one it does not support.
    pub processes: u64,
    pub unsupported_processes: u64,
    /// Code objects read, and those that could not be (their frames show as
    /// `<python frame>`).
    pub code_objects: u64,
    pub unreadable_code_objects: u64,
}

/// A Python process being traced.
struct Process {
    layout: &'static layout::Layout,
    /// The address of its `PyCode_Type`: a code object's type.
    code_type: u64,
    /// Its memory (None: could not be opened).
    memory: Option<File>,
}

impl Process {
    /// The code object at `address`: read again only when what identifies it changed.
    fn code_at(&self, address: u64, codes: &mut CodeObjects) -> Option<Arc<CodeObject>> {
        let memory = self.memory.as_ref()?;
        let layout = &self.layout.code;
        let identity = identity(memory, address, layout)
            .map_err(|err| log::debug!("python code object {address:#x}: {err:#}"))
            .ok()?;
        if identity[0] != self.code_type {
            log::debug!("python code object {address:#x}: not a code object any more");
            return None;
        }
        if let Some(code) = codes.known(address, &identity) {
            return Some(code);
        }
        let code = code::read_code(memory, address, layout)
            .map_err(|err| log::debug!("python code object {address:#x}: {err:#}"))
            .ok()?;
        let code = Arc::new(code);
        codes.insert(address, identity, Arc::clone(&code));
        Some(code)
    }
}

pub struct PythonProcesses {
    kernel: KernelHashMap<MapData, u32, PythonProcess>,
    stacks: KernelHashMap<MapData, u64, UserStack>,
    processes: HashMap<u32, Process>,
    /// Versions already said to be unsupported.
    said: HashSet<(u8, u8)>,
    pub figures: PythonFigures,
}

impl PythonProcesses {
    pub fn new(tracer: &mut Tracer) -> Result<Self> {
        Ok(Self {
            kernel: KernelHashMap::try_from(tracer.take_map("PYTHON_PROCESSES")?)?,
            stacks: tracer.owned_user_stacks()?,
            processes: HashMap::new(),
            said: HashSet::new(),
            figures: PythonFigures::default(),
        })
    }

    /// `pid`'s mappings were read: it runs `interpreter` (loaded with `bias`), or none.
    pub fn on_mappings(&mut self, pid: u32, interpreter: Option<(Interpreter, u64)>) {
        let Some((interpreter, bias)) = interpreter else {
            // An exec replaced the interpreter (or it never was one).
            if self.processes.remove(&pid).is_some() {
                let _ = self.kernel.remove(&pid);
            }
            return;
        };
        let Some(layout) = layout::for_version(interpreter.major, interpreter.minor) else {
            if self.said.insert((interpreter.major, interpreter.minor)) {
                log::warn!(
                    "pid {pid} runs Python {interpreter}, whose frames memtrace cannot read \
                     (it reads 3.11's): its stacks show the interpreter's native frames"
                );
                self.figures.unsupported_processes += 1;
            }
            return;
        };
        let runtime = interpreter.runtime.wrapping_add(bias);
        if let Err(err) = self.kernel.insert(pid, layout.process(runtime), 0) {
            log::debug!("python process {pid}: {err}");
            return;
        }
        if !self.processes.contains_key(&pid) {
            self.figures.processes += 1;
        }
        // Opened again at each read of the mappings: an exec gives the process new memory.
        let memory = File::open(format!("/proc/{pid}/mem")).ok();
        let code_type = interpreter.code_type.wrapping_add(bias);
        self.processes.insert(
            pid,
            Process {
                layout,
                code_type,
                memory,
            },
        );
    }

    /// An event of `pid` on user stack `key`: the code objects its Python frames name are
    /// read now, while they exist, into `maps` (kept with the process's address space).
    pub fn on_stack(&mut self, pid: u32, key: u64, maps: &mut MapsCache) {
        let Some(process) = self.processes.get(&pid) else {
            return;
        };
        let codes = maps.python_codes_now(pid);
        if key == 0 || codes.has_stack(key) {
            return;
        }
        let Ok(stack) = self.stacks.get(&key, 0) else {
            return;
        };
        let words = stack.frames.iter().take_while(|&&word| word != 0);
        let found = words
            .filter(|&&word| frame::is_python(word))
            .map(|&word| {
                let address = frame::decode(word).0;
                let code = process.code_at(address, codes);
                self.figures.code_objects += 1;
                if code.is_none() {
                    self.figures.unreadable_code_objects += 1;
                }
                code
            })
            .collect();
        codes.set_stack(key, found);
    }

    /// Whether `pid` is a Python process the walk serves.
    pub fn contains(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Drops what is kept of processes that exited.
    pub fn forget(&mut self, exists: impl Fn(u32) -> bool) {
        self.processes.retain(|&pid, _| exists(pid));
    }
}

/// What identifies the code object at `address` (see `Identity`), in one read.
fn identity(memory: &File, address: u64, layout: &code::CodeLayout) -> Result<Identity> {
    use std::os::unix::fs::FileExt;
    let fields = [
        layout.object_type,
        layout.code_name,
        layout.code_qualname,
        layout.code_filename,
        layout.code_linetable,
        layout.code_firstlineno,
    ];
    let length = fields.iter().max().copied().unwrap_or(0) + 8;
    let mut bytes = vec![0u8; length as usize];
    memory.read_exact_at(&mut bytes, address)?;
    let mut identity = [0u64; 6];
    for (value, &offset) in identity.iter_mut().zip(&fields) {
        let at = offset as usize;
        *value = u64::from_ne_bytes(bytes[at..at + 8].try_into()?);
    }
    // co_firstlineno is an int: the word holds the next field's bytes too.
    identity[5] &= 0xffff_ffff;
    Ok(identity)
}
