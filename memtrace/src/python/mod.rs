//! CPython frames in user stacks: which interpreter a process runs (`interpreter`, `layout`),
//! giving it to the stack walk (`processes`), reading the code objects its frames name out of
//! its memory (`code`, `linetable`, `codes`), and putting the Python frames in place of the
//! interpreter's native frames (`frames`).
pub mod code;
pub mod codes;
#[cfg(test)]
mod dwarf_check;
pub mod frames;
pub mod interpreter;
pub mod layout;
pub mod linetable;
pub mod processes;

pub use codes::CodeObjects;
