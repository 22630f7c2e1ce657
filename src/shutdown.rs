//! SIGINT and SIGTERM: the first asks the pass to stop (a cancellation token), a second one
//! exits at once; the exit code says which signal it was.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// 128 + the signal's number, as shells report it.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// The process's SIGINT and SIGTERM, as a stream.
struct SignalStream {
    #[cfg(unix)]
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl SignalStream {
    fn new() -> SignalStream {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handlers = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some((int, term)),
                _ => None,
            };
            SignalStream { handlers }
        }
        #[cfg(not(unix))]
        SignalStream {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((int, term)) = self.handlers.as_mut() {
            return tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
        }
        // Without signal handlers there is nothing to wait for but Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() -> Signal {
    SignalStream::new().next().await
}

/// What the signals asked for so far.
#[derive(Clone)]
pub struct Shutdown {
    /// Fires at the first signal.
    pub cancel: CancellationToken,
    first: Arc<Mutex<Option<Signal>>>,
}

impl Shutdown {
    /// Listens for signals from now on: the first cancels `cancel`, the second exits the
    /// process at once with its exit code.
    pub fn listen() -> Shutdown {
        let shutdown = Shutdown {
            cancel: CancellationToken::new(),
            first: Arc::new(Mutex::new(None)),
        };
        let watcher = shutdown.clone();
        let mut stream = SignalStream::new();
        tokio::spawn(async move {
            let first = stream.next().await;
            tracing::warn!(
                signal = ?first,
                "stopping: requests in flight are cancelled, what was fetched is stored; a second signal exits at once"
            );
            if let Ok(mut s) = watcher.first.lock() {
                *s = Some(first);
            }
            watcher.cancel.cancel();
            let second = stream.next().await;
            eprintln!("pcsync: second signal ({second:?}): exiting now");
            std::process::exit(second.exit_code());
        });
        shutdown
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<Signal> {
        self.first.lock().ok().and_then(|s| *s)
    }
}
