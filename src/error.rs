//! The error type of every fallible core operation.

use std::fmt;

/// What went wrong, as a closed set that maps one-to-one onto the C result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No task with that id is in the registry.
    NotFound,
    /// An argument was malformed, missing or over a configured limit.
    InvalidArgument,
    /// A task with that id is already in the registry.
    DuplicateId,
    /// The pending queue is at its configured maximum.
    QueueFull,
    /// The manager was shut down and accepts no new tasks.
    ShutDown,
    /// The call does not fit the task's or the manager's current state.
    InvalidState,
    /// A wait ended before the awaited change happened.
    Timeout,
    /// A bug inside the library (a caught panic); the manager keeps working.
    Internal,
}

/// An error with its kind and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// Builds an error of `kind` explained by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// An [`ErrorKind::InvalidArgument`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// An [`ErrorKind::NotFound`] error naming the task id.
    pub fn not_found(task_id: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("no task with id {task_id:?}"))
    }

    /// An [`ErrorKind::InvalidState`] error.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The result of a core operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
