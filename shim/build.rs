//! Compiles the C part of the shim: the C-variadic `execl`/`execlp`/`execle`
//! wrappers and the `vfork` trampoline, which stable Rust cannot define.

fn main() {
    println!("cargo:rerun-if-changed=csrc/variadic.c");
    cc::Build::new()
        .file("csrc/variadic.c")
        .flag_if_supported("-fvisibility=default")
        .warnings(true)
        .compile("sealfs_variadic");
}
