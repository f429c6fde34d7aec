//! The code objects read from one address space: what names its stacks' Python frames. A
//! code object's address can be reused by another once it is freed (a module's code lives
//! only while the module is imported), so each stack keeps the code objects its frames had
//! when it was first seen, and an address is read again when its identity changed.
use std::collections::HashMap;
use std::sync::Arc;

use super::code::CodeObject;

/// What identifies a code object at an address: its type and the objects it names (name,
/// qualified name, file, line table) and its first line.
pub type Identity = [u64; 6];

/// The code objects of each stack's Python frames (None: could not be read).
pub type StackCodes = Arc<[Option<Arc<CodeObject>>]>;

#[derive(Debug, Default)]
pub struct CodeObjects {
    by_address: HashMap<u64, (Identity, Arc<CodeObject>)>,
    stacks: HashMap<u64, StackCodes>,
}

impl CodeObjects {
    /// The code object read at `address` when it had `identity`.
    pub fn known(&self, address: u64, identity: &Identity) -> Option<Arc<CodeObject>> {
        let (known, code) = self.by_address.get(&address)?;
        (known == identity).then(|| Arc::clone(code))
    }

    pub fn insert(&mut self, address: u64, identity: Identity, code: Arc<CodeObject>) {
        self.by_address.insert(address, (identity, code));
    }

    pub fn has_stack(&self, key: u64) -> bool {
        self.stacks.contains_key(&key)
    }

    pub fn set_stack(&mut self, key: u64, codes: Vec<Option<Arc<CodeObject>>>) {
        self.stacks.insert(key, codes.into());
    }

    /// The code objects of stack `key`'s Python frames, innermost first.
    pub fn stack(&self, key: u64) -> Option<&StackCodes> {
        self.stacks.get(&key)
    }
}
