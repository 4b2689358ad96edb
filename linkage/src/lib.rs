//! How the executables are linked, so that starting one loads no shared library but libc.
//!
//! Every `multipass` command is a new process, and the dynamic loader's work is part of what each
//! one costs: on the machines we measure, every shared library it maps and relocates adds about
//! 0.15 ms (docs/PERFORMANCE.md, "Per-command cost"). A Rust executable for `*-linux-gnu` loads
//! two besides libc:
//!
//! - `libgcc_s.so.1`, the unwinder that panics use. [`configure`] has the linker take the same
//!   unwinder from GCC's static `libgcc_eh.a` instead, as `gcc -static-libgcc` does for C++
//!   programs and as Rust does itself for `crt-static` targets. (GCC 12's unwinder finds unwind
//!   tables with glibc's `_dl_find_object`, so `dpkg-shlibdeps` asks for libc6 2.35 or later.)
//! - `libm.so.6`, for one function: `pow`, which tokio's multi-thread scheduler calls when it
//!   averages how long tasks take to poll. This crate defines [`pow`], so the linker, which rustc
//!   runs with `--as-needed`, finds nothing left for libm to provide and leaves it out.
//!
//! This is about start-up only: a library that glibc loads later, to look a name up through NSS
//! (`libnss_systemd.so.2` needs libm), is still loaded then, and finds [`pow`] defined.
//!
//! Each executable's package calls [`configure`] from its build script and names this crate in
//! its `main.rs` (`use multipass_linkage as _;`), which is what links [`pow`] in.
//! `tests/tests/linkage.rs` checks the executables that come out, and the system scenario
//! `tests/system/scenario-security.sh` the installed ones; `daemon/tests/unwinding.rs` checks
//! that panics still unwind with the static unwinder.

use std::path::PathBuf;

/// Sets the linking up for the package whose build script calls it.
///
/// Does nothing unless the target is `linux-gnu` with a dynamically linked libc: elsewhere there
/// is no `libgcc_s` to avoid, or Rust links `libgcc_eh` itself.
pub fn configure() {
    println!("cargo::rerun-if-changed=build.rs");
    let cfg = |name: &str| std::env::var(format!("CARGO_CFG_TARGET_{name}")).unwrap_or_default();
    if cfg("OS") != "linux"
        || cfg("ENV") != "gnu"
        || cfg("FEATURE").split(',').any(|f| f == "crt-static")
    {
        return;
    }
    // The standard library asks for `-lgcc_s`. A linker script of that name, in a directory
    // searched before the compiler's own, hands the linker the static archive instead.
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("write the libgcc_s linker script into OUT_DIR");
    println!("cargo::rustc-link-search=native={}", dir.display());
}

/// `pow(3)`, for the executable's own callers, from the `libm` crate (a port of musl's, within
/// one unit in the last place). Nothing that calls it reads `errno`, which musl's `pow` leaves
/// alone where glibc's may set it.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::pow;

    #[test]
    fn pow_gives_the_values_tokio_asks_for() {
        // tokio raises a smoothing factor below 1 to the number of tasks polled in a batch.
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(0.5, 3.0), 0.125);
        assert_eq!(pow(0.9, 0.0), 1.0);
        let decay = pow(0.9, 61.0);
        assert!((decay - 0.001_617_309_27).abs() < 1e-12, "{decay}");
        assert!(pow(0.9, 1e6) >= 0.0 && pow(0.9, 1e6) < 1e-300);
    }
}
