//! Symbolized stacks and process names held once, shared by whoever holds them (the rolling
//! fault profile, the heap profiles): the same code at other addresses, as address-space
//! randomization places it in each process, is the same stack.
use std::{
    collections::HashSet,
    hash::{Hash, Hasher},
    sync::Arc,
};

use crate::report::{CodeFile, Frame};

/// A symbolized stack, innermost frames first.
#[derive(Debug)]
pub struct Stack {
    pub user: Vec<Frame>,
    pub kernel: Vec<Frame>,
}

impl Stack {
    /// A stack of frames from many processes: a frame no symbol names and no file holds
    /// shows as `[unknown]` (its address means nothing across processes, each placed
    /// elsewhere). One in a file keeps its place there, for the profile's reader to name.
    pub fn new(user: Vec<Frame>, kernel: Vec<Frame>) -> Self {
        let name_unknown = |mut frame: Frame| {
            if frame.function.is_none() && frame.mapping.is_none() {
                frame.function = Some("[unknown]".to_owned());
                frame.offset = 0;
            }
            frame
        };
        Self {
            user: user.into_iter().map(name_unknown).collect(),
            kernel: kernel.into_iter().map(name_unknown).collect(),
        }
    }

    /// What makes two stacks the same: each frame's function, offset and module, and its
    /// place in its file (the same in every process that maps the file).
    fn identity(&self) -> impl Iterator<Item = FrameIdentity<'_>> + '_ {
        (self.kernel.iter().chain(&self.user)).map(|f| {
            let place = (f.mapping.as_ref()).map(|m| (&*m.file, m.file_offset(f.address)));
            (f.function.as_deref(), f.offset, f.module.as_deref(), place)
        })
    }
}

/// A frame as stacks are compared: function, offset, module, (file, file offset).
type FrameIdentity<'a> = (
    Option<&'a str>,
    u64,
    Option<&'a str>,
    Option<(&'a CodeFile, u64)>,
);

/// Shared by content.
#[derive(Debug)]
struct Held(Arc<Stack>);

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.0.user.len() == other.0.user.len() && self.0.identity().eq(other.0.identity())
    }
}

impl Eq for Held {}

impl Hash for Held {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.user.len().hash(state);
        self.0.identity().for_each(|frame| frame.hash(state));
    }
}

/// Every stack and process name held, once.
#[derive(Default)]
pub struct Interned {
    stacks: HashSet<Held>,
    comms: HashSet<Arc<str>>,
}

impl Interned {
    /// The held copy of `stack` (held from now on if new).
    pub fn stack(&mut self, stack: Stack) -> Arc<Stack> {
        let stack = Held(Arc::new(stack));
        if let Some(held) = self.stacks.get(&stack) {
            return Arc::clone(&held.0);
        }
        let shared = Arc::clone(&stack.0);
        self.stacks.insert(stack);
        shared
    }

    /// The held copy of `comm` (held from now on if new).
    pub fn comm(&mut self, comm: String) -> Arc<str> {
        if let Some(held) = self.comms.get(comm.as_str()) {
            return Arc::clone(held);
        }
        let comm: Arc<str> = comm.into();
        self.comms.insert(Arc::clone(&comm));
        comm
    }

    /// Lets go of the stacks and names nobody else holds.
    pub fn forget_unused(&mut self) {
        self.stacks.retain(|held| Arc::strong_count(&held.0) > 1);
        self.comms.retain(|comm| Arc::strong_count(comm) > 1);
    }

    /// Distinct stacks and process names held.
    pub fn held(&self) -> (usize, usize) {
        (self.stacks.len(), self.comms.len())
    }
}
