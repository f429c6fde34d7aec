//! Errors the user must act on, and the exit code each maps to.
use std::fmt;

/// Exit codes, documented in the help and the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const GATE_FAILED: i32 = 3;
    pub const COMMAND_NOT_FOUND: i32 = 127;
}

/// Bad input: the user asked for something that cannot be done as asked (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// The command to trace does not exist or cannot be executed (exit 127, like a shell).
#[derive(Debug)]
pub struct CommandNotFound(pub String);

impl fmt::Display for CommandNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: command not found", self.0)
    }
}
impl std::error::Error for CommandNotFound {}

/// A pipeline gate fired (`--max-swap-in-rate`, ...): the report was written (exit 3).
#[derive(Debug)]
pub struct GateFailed(pub String);

impl fmt::Display for GateFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for GateFailed {}

/// A usage error, as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<UsageError>().is_some() {
        exit::USAGE
    } else if error.downcast_ref::<GateFailed>().is_some() {
        exit::GATE_FAILED
    } else if error.downcast_ref::<CommandNotFound>().is_some() {
        exit::COMMAND_NOT_FOUND
    } else {
        exit::FAILURE
    }
}
