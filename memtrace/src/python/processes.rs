//! The Python processes the stack walk serves: each is given to the kernel with its
//! interpreter's addresses and layout when its mappings are read, and the code objects its
//! stacks name are read from its memory as those stacks first appear, while it lives (a
//! report is written after the traced program has exited).
use std::collections::{HashMap, HashSet};
use std::fs::File;

use anyhow::Result;
use aya::maps::{HashMap as KernelHashMap, MapData};
use memtrace_common::{
    python::{frame, PythonProcess, PythonStack},
    UserStack,
};
use serde::Serialize;

use super::{
    code::{self, CodeObject},
    frames,
    interpreter::Interpreter,
    layout,
};
use crate::{
    kernel::{
        tables::{self, RecordedStack},
        tracer::Tracer,
    },
    trace::memory_maps::MapsCache,
};

/// What the report says of the Python processes and their frames' names.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PythonFigures {
    /// Processes with an interpreter memtrace walks, and with one it does not support.
    pub processes: u64,
    pub unsupported_processes: u64,
    /// Code objects read; and frames (counted once per distinct stack) whose code object
    /// could not be read (freed before memtrace read it, as a module's code is once
    /// imported): they show as `<python frame>`.
    pub code_objects: u64,
    pub unnamed_frames: u64,
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
    /// The code object at `address`, if it is still the one the walk's `check` was taken of.
    fn read_code(&self, address: u64, check: u64) -> Option<CodeObject> {
        let memory = self.memory.as_ref()?;
        let layout = &self.layout.code;
        let identity = code::read_identity(memory, address, layout)
            .map_err(|err| log::debug!("python code object {address:#x}: {err:#}"))
            .ok()?;
        if identity.code_type != self.code_type || identity.check() != check {
            log::debug!("python code object {address:#x}: freed since its frame ran");
            return None;
        }
        code::read_code(memory, address, layout)
            .map_err(|err| log::debug!("python code object {address:#x}: {err:#}"))
            .ok()
    }
}

pub struct PythonProcesses {
    enabled: bool,
    /// The process and stack of the last event looked at.
    last_stack: (u32, u64),
    kernel: KernelHashMap<MapData, u32, PythonProcess>,
    stacks: KernelHashMap<MapData, u64, UserStack>,
    python_stacks: KernelHashMap<MapData, u64, PythonStack>,
    processes: HashMap<u32, Process>,
    /// Processes whose version is not supported, and the versions already said to be.
    unsupported: HashSet<u32>,
    said: HashSet<(u8, u8)>,
    pub figures: PythonFigures,
}

impl PythonProcesses {
    /// `enabled`: false leaves every process's stacks native (`--no-python-frames`).
    pub fn new(tracer: &mut Tracer, enabled: bool) -> Result<Self> {
        let (stacks, python_stacks) = tracer.owned_stack_tables()?;
        Ok(Self {
            last_stack: (0, 0),
            python_stacks,
            enabled,
            kernel: KernelHashMap::try_from(tracer.take_map("PYTHON_PROCESSES")?)?,
            stacks,
            processes: HashMap::new(),
            unsupported: HashSet::new(),
            said: HashSet::new(),
            figures: PythonFigures::default(),
        })
    }

    /// `pid`'s mappings were read: it runs `interpreter` (loaded with `bias`), or none.
    pub fn on_mappings(&mut self, pid: u32, interpreter: Option<(Interpreter, u64)>) {
        let Some((interpreter, bias)) = interpreter.filter(|_| self.enabled) else {
            // An exec replaced the interpreter (or it never was one).
            if self.processes.remove(&pid).is_some() {
                let _ = self.kernel.remove(&pid);
            }
            return;
        };
        let Some(layout) = layout::for_version(interpreter.major, interpreter.minor) else {
            if self.unsupported.insert(pid) {
                self.figures.unsupported_processes += 1;
            }
            if self.said.insert((interpreter.major, interpreter.minor)) {
                log::warn!(
                    "pid {pid} runs Python {interpreter}, whose frames memtrace cannot read \
                     (it reads 3.11's): its stacks show the interpreter's native frames"
                );
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

    /// An event of `pid` on user stack `key` (of any process): the code objects its Python
    /// frames name are read now, while they exist, into `maps` (kept with the process's
    /// address space).
    pub fn on_stack(&mut self, pid: u32, key: u64, maps: &mut MapsCache) {
        // A loop's events repeat their stack: no lookups for the one just looked at.
        if std::mem::replace(&mut self.last_stack, (pid, key)) == (pid, key) {
            return;
        }
        let Some(process) = self.processes.get(&pid) else {
            return;
        };
        let codes = maps.python_codes_now(pid);
        if key == 0 || !codes.first_look(key) {
            return;
        }
        let Ok(stack) = self.stacks.get(&key, 0) else {
            return;
        };
        let Some(python_key) = RecordedStack::of(&stack).python_key else {
            return;
        };
        let python = tables::python_words(&self.python_stacks, python_key);
        for (word, check) in frames::pairs(&python) {
            let address = frame::decode(word).0;
            if codes.get(address, check).is_some() {
                continue;
            }
            match process.read_code(address, check) {
                Some(code) => {
                    self.figures.code_objects += 1;
                    codes.insert(address, check, code);
                }
                None => self.figures.unnamed_frames += 1,
            }
        }
    }

    /// Drops what is kept of processes that exited.
    pub fn forget(&mut self, exists: impl Fn(u32) -> bool) {
        self.processes.retain(|&pid, _| exists(pid));
        self.unsupported.retain(|&pid| exists(pid));
    }
}
