//! Exported names that need machine-level control: the C-variadic
//! `execl`/`execlp`/`execle` (their bodies are C, `csrc/variadic.c`) and
//! `vfork`.
//!
//! Each is a naked function: no frame, no prologue, so the jump reaches
//! its target with the caller's registers (including `%al`, the variadic
//! SSE count) and stack exactly as the caller left them.
//!
//! `vfork`: a vfork child shares the parent's memory, so shim hooks that
//! run in it (Python's `_posixsubprocess` calls `dup2`, `close_range` and
//! `chdir` between `vfork` and `exec`) would rewrite the parent's fd table.
//! While the shim holds any SealFS state, `vfork` is `fork` (POSIX allows
//! it; the fork handlers keep the tables consistent); otherwise it jumps to
//! the real `vfork` with the caller's return address on the stack, so the
//! vfork child never returns through a frame of ours.

use crate::process::sealfs_vfork_target;

extern "C" {
    fn sealfs_c_execl();
    fn sealfs_c_execlp();
    fn sealfs_c_execle();
}

/// `int execl(const char *path, const char *arg, ... /*, NULL */)`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execl() {
    // SAFETY: a tail jump with the caller's untouched registers and stack
    // to a C function of exactly execl's prototype.
    core::arch::naked_asm!("jmp {}", sym sealfs_c_execl)
}

/// `int execlp(const char *file, const char *arg, ... /*, NULL */)`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execlp() {
    // SAFETY: as for execl, to a C function of execlp's prototype.
    core::arch::naked_asm!("jmp {}", sym sealfs_c_execlp)
}

/// `int execle(const char *path, const char *arg, ... /*, NULL, envp */)`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execle() {
    // SAFETY: as for execl, to a C function of execle's prototype.
    core::arch::naked_asm!("jmp {}", sym sealfs_c_execle)
}

/// `pid_t vfork(void)`: `fork` while the shim holds state, else the real one.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    // SAFETY: realigns the stack to 16 bytes for the call (it is 8 off at
    // entry), calls a plain no-argument function that returns an address,
    // restores the stack and jumps there: the target (real vfork or fork,
    // both of vfork's prototype) returns straight to our caller.
    core::arch::naked_asm!("sub rsp, 8", "call {t}", "add rsp, 8", "jmp rax", t = sym sealfs_vfork_target)
}
