//! pcsync's exit codes, apart from the command line so that the commands that return them
//! (the demo among them) need not reach back into `cli`.

/// pcsync's exit codes; the README documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every customer synced (or the command succeeded).
    Ok = 0,
    /// The run could not proceed: configuration, database, authentication.
    Fatal = 1,
    /// The run finished but some customers failed; their errors are in `pcsync.sync_errors`.
    Partial = 2,
    /// Another pass holds the lock on this database; this one did not start.
    AlreadyRunning = 3,
    /// Interrupted by SIGINT.
    Interrupted = 130,
    /// Stopped by SIGTERM.
    Terminated = 143,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
