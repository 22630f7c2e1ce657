//! pcsync's exit codes, apart from the command line so that the commands that return them
//! (the demo among them) need not reach back into `cli`.

/// pcsync's exit codes; the README documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every customer synced (or the command succeeded).
    Ok,
    /// The run could not proceed: configuration, database, authentication.
    Fatal,
    /// The run finished but some customers failed; their errors are in `pcsync.sync_errors`.
    Partial,
    /// Another pass holds the lock on this database; this one did not start.
    AlreadyRunning,
    /// Interrupted by SIGINT.
    Interrupted,
    /// Stopped by SIGTERM.
    Terminated,
    /// `pcsync status`: a monitoring plugin's state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Plugin(crate::status::State),
}

impl Exit {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Fatal => 1,
            Exit::Partial => 2,
            Exit::AlreadyRunning => 3,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
            Exit::Plugin(state) => state.code(),
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
