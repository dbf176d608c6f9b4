//! The thread-local re-entrancy guard: while a thread runs shim code, every
//! libc call it makes (the client's sockets, std's file I/O, the log) goes
//! straight to the real function.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads inside the shim right now (the client's helper threads run
/// while their parent holds a guard), for [`busy`].
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether some thread is inside the shim: sockets made now are (almost
/// surely) the client's, and are moved out of the application's fd range.
#[inline]
pub fn busy() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// In a forked child no other thread exists.
pub fn fork_child() {
    let inside = INSIDE.try_with(|c| c.get()).unwrap_or(false);
    ACTIVE.store(usize::from(inside), Ordering::Relaxed);
}

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Held while the shim works on the application's behalf.
pub struct Guard(());

impl Guard {
    /// Enters the shim; `None` if this thread is already inside (or its
    /// thread-locals are gone), in which case the caller passes through.
    #[inline]
    pub fn enter() -> Option<Guard> {
        INSIDE
            .try_with(|c| {
                if c.get() {
                    None
                } else {
                    c.set(true);
                    ACTIVE.fetch_add(1, Ordering::Relaxed);
                    Some(Guard(()))
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|c| c.set(false));
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}
