//! How every command fails: one line on stderr and an exit code, the same
//! for `serve`, the admin commands, `run`, `bench` and `store`.

use std::fmt::Display;

/// A failed command: printed as `error: {message}`, then the process exits
/// with `exit_code`.
#[derive(Debug)]
pub struct Failure {
    /// The line.
    pub message: String,
    /// One of the `EXIT_*` codes.
    pub exit_code: u8,
}

/// The command failed: refused, invalid, or something went wrong.
pub const EXIT_FAILED: u8 = 1;
/// The command line or a setting was malformed (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// The server (or store) could not be reached: worth trying again
/// (`EX_UNAVAILABLE` of sysexits.h).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// `run`: the slots were not granted in time (`EX_TEMPFAIL`).
pub const EXIT_TIMED_OUT: u8 = 75;
/// `run`: the command could not be started (as a shell says).
pub const EXIT_CANNOT_RUN: u8 = 127;

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: EXIT_FAILED,
        }
    }

    /// `err` with its causes, exit code 1.
    pub fn of(err: impl std::error::Error) -> Self {
        Failure::new(with_causes(&err))
    }

    /// A malformed setting or argument: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }
}

impl From<ratekeeper_client::Error> for Failure {
    /// One line: the server's sentence and its code; 69 (EX_UNAVAILABLE)
    /// when the server could not be reached.
    fn from(err: ratekeeper_client::Error) -> Self {
        let exit_code = match err {
            ratekeeper_client::Error::Connect { .. } => EXIT_UNAVAILABLE,
            _ => EXIT_FAILED,
        };
        let (message, code) = (err.to_string(), err.code());
        let message = if message.contains(code) {
            message
        } else {
            format!("{message} ({code})")
        };
        Failure { message, exit_code }
    }
}

/// Fails with [`Failure::new`] and a formatted message.
macro_rules! fail {
    ($($message:tt)*) => {
        return Err($crate::failure::Failure::new(format!($($message)*)))
    };
}
pub(crate) use fail;

/// What was being done when an error happened, put before it.
pub trait Context<T> {
    /// `what: error`, where the error is written with each of its causes
    /// that it does not already mention.
    fn context(self, what: impl Display) -> Result<T, Failure>;
    /// [`Context::context`] with a message made only on failure.
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, Failure>;
}

impl<T, E: std::error::Error> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|err| Failure::new(format!("{what}: {}", with_causes(&err))))
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, Failure> {
        self.map_err(|err| Failure::new(format!("{}: {}", what(), with_causes(&err))))
    }
}

/// `err` and each of its sources that its text does not already contain.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_written_once() {
        let io = std::io::Error::other("disk on fire");
        let failed: Result<(), _> = Err(io);
        let failure = failed.context("cannot open the store").unwrap_err();
        assert_eq!(failure.message, "cannot open the store: disk on fire");
        assert_eq!(failure.exit_code, EXIT_FAILED);
    }
}
