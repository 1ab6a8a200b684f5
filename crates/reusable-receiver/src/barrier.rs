//! An asymmetric memory barrier: a cheap *light* side, run by a stream for
//! every item it claims, and an expensive *heavy* side, run when a lease
//! ends while its stream may be claiming. Paired, they order a store before
//! a load on both sides, as two `fence(SeqCst)` would — the store-buffering
//! ("Dekker") pattern that [`LeaseCell`](crate::state::LeaseCell)'s claim
//! protocol needs: the stream stores its claim count then loads the
//! revocation flag; the ender stores the flag then loads the count; at
//! least one of them sees the other's store.
//!
//! On Linux the heavy side is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`,
//! which makes every running thread of the process pass through a full
//! memory barrier, and the light side is only a compiler fence — the use
//! the system call was made for (`man 2 membarrier`: `barrier()` paired with
//! `membarrier()` is ordered). That guarantee comes from the kernel and the
//! hardware, outside Rust's abstract memory model, as every asymmetric
//! barrier's does. Where the system call is missing or refused (another
//! OS, an old kernel, a seccomp filter), and under miri and loom, both
//! sides are `fence(SeqCst)`: the same protocol, checked by the loom models
//! and by miri. The choice is made once per process, before the first lease
//! exists, and never changes.

use std::sync::OnceLock;

use crate::loom::{Ordering, fence};

/// Which pair of barriers this process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// `fence(SeqCst)` on both sides.
    Fence,
    /// A compiler fence on the light side, `membarrier` on the heavy side.
    #[cfg_attr(
        any(not(target_os = "linux"), miri, async_patterns_loom),
        allow(dead_code)
    )]
    Membarrier,
}

static BARRIER: OnceLock<Barrier> = OnceLock::new();

impl Barrier {
    /// The process's barrier, chosen on first use.
    pub(crate) fn get() -> Barrier {
        *BARRIER.get_or_init(Barrier::choose)
    }

    #[cfg(all(target_os = "linux", not(miri), not(async_patterns_loom)))]
    fn choose() -> Barrier {
        if membarrier::register() {
            Barrier::Membarrier
        } else {
            Barrier::Fence
        }
    }

    #[cfg(not(all(target_os = "linux", not(miri), not(async_patterns_loom))))]
    fn choose() -> Barrier {
        Barrier::Fence
    }

    /// The fast side, between a store and a load.
    #[inline(always)]
    pub(crate) fn light(self) {
        match self {
            Barrier::Fence => fence(Ordering::SeqCst),
            Barrier::Membarrier => std::sync::atomic::compiler_fence(Ordering::SeqCst),
        }
    }

    /// The slow side, between a store and a load.
    pub(crate) fn heavy(self) {
        match self {
            Barrier::Fence => fence(Ordering::SeqCst),
            Barrier::Membarrier => {
                #[cfg(all(target_os = "linux", not(miri), not(async_patterns_loom)))]
                membarrier::private_expedited();
                #[cfg(not(all(target_os = "linux", not(miri), not(async_patterns_loom))))]
                unreachable!("membarrier is chosen on Linux only");
            }
        }
    }
}

#[cfg(all(target_os = "linux", not(miri), not(async_patterns_loom)))]
mod membarrier {
    // From `linux/membarrier.h`.
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn membarrier(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: `membarrier(cmd, flags = 0, cpu_id = 0)` reads and writes no
        // memory of ours; an unknown or refused command returns -1.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Registers the process for private expedited barriers; `false` if the
    /// kernel or a seccomp filter refuses.
    pub(super) fn register() -> bool {
        membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// A full memory barrier on every running thread of the process.
    pub(super) fn private_expedited() {
        if membarrier(CMD_PRIVATE_EXPEDITED) != 0 {
            // Registration succeeded, so the kernel documents no failure
            // here. Going on without the barrier could let two threads move
            // the same item out of a slot; stop instead.
            eprintln!(
                "async-patterns-reusable-receiver: membarrier failed after registration: {}",
                std::io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_made_once_and_kept() {
        let first = Barrier::get();
        assert_eq!(Barrier::get(), first);
        // Both sides run without failing, whichever pair was chosen.
        first.light();
        first.heavy();
        #[cfg(all(target_os = "linux", not(miri), not(async_patterns_loom)))]
        assert_eq!(
            first,
            if membarrier::register() {
                Barrier::Membarrier
            } else {
                Barrier::Fence
            }
        );
    }
}
