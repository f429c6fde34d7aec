//! Errors the user must act on, and the exit code each maps to.

/// Exit codes, documented in the help and the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const GATE_FAILED: i32 = 3;
    pub const COMMAND_NOT_FOUND: i32 = 127;
}

/// Bad input: the user asked for something that cannot be done as asked (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The command to trace does not exist or cannot be executed (exit 127, like a shell).
#[derive(Debug, thiserror::Error)]
#[error("{0}: command not found")]
pub struct CommandNotFound(pub String);

/// A pipeline gate fired (`--max-swap-in-rate`, ...): the report was written (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateFailed(pub String);

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
