//! The code objects read from one address space: what names its stacks' Python frames. A
//! code object's address can hold another once it is freed (a module's code lives only
//! while the module is imported), so each is kept under its address and the check the walk
//! took of it (memtrace-common's `python::frame::check`): a frame is named only by the code
//! object it ran.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::code::CodeObject;

#[derive(Debug, Default)]
pub struct CodeObjects {
    /// By (address, check word).
    codes: HashMap<(u64, u64), Arc<CodeObject>>,
    /// Stacks whose frames' code objects were looked for.
    stacks: HashSet<u64>,
}

impl CodeObjects {
    pub fn get(&self, address: u64, check: u64) -> Option<&Arc<CodeObject>> {
        self.codes.get(&(address, check))
    }

    pub fn insert(&mut self, address: u64, check: u64, code: CodeObject) {
        self.codes.insert((address, check), Arc::new(code));
    }

    /// Notes stack `key` as looked at; false if it was already.
    pub fn first_look(&mut self, key: u64) -> bool {
        self.stacks.insert(key)
    }
}
