//! glibc's heap thresholds, pinned once so that a training step's freed buffers serve the next
//! step instead of being handed back to the system and page-faulted in again.
//!
//! A training step allocates and frees the same large buffers every time: layer outputs, their
//! gradients, and, in a dendritic layer, one output per dendrite copy. glibc serves a buffer
//! from its heap once a freed one of that size has raised its mmap threshold, and hands the
//! top of the heap back to the system (`brk`) whenever more than its trim threshold (twice the
//! mmap threshold) is free there. A dendritic convolution frees its copies' outputs together,
//! so with 3 dendrites every step gave back about 20 MB and faulted it in again: about 5,000
//! page faults a step, a fifth of its time (`docs/performance.md`).
//!
//! [`retain_freed_memory`] pins the mmap threshold at glibc's maximum (32 MiB: larger buffers
//! still come from and go back to the system directly) and the trim threshold at 1 GiB, once
//! per process, at the first dendritic forward pass. The price is that up to that much freed
//! memory stays with the process, as with any caching allocator. glibc is left as it is where
//! the user says so (`PERFORATED_HEAP=system`), where the user already tuned its allocator
//! (`MALLOC_*` variables, or a `glibc.malloc.` tunable in `GLIBC_TUNABLES`), and on other C
//! libraries, which have no such thresholds.

/// The mmap threshold pinned: glibc's largest (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// The trim threshold pinned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Pins glibc's mmap and trim thresholds (see the module docs), once; does nothing where the
/// user tuned the allocator or the C library is not glibc.
pub(crate) fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if !user_tuned(|name| std::env::var_os(name)) {
                pin();
            }
        });
    }
}

/// Whether the environment (`var`) keeps glibc as it is: `PERFORATED_HEAP=system`, or one of
/// glibc's malloc parameters already set.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn user_tuned(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    const MALLOC_VARS: [&str; 5] = [
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "MALLOC_MMAP_MAX_",
        "MALLOC_ARENA_MAX",
    ];
    var("PERFORATED_HEAP").is_some_and(|v| v == "system")
        || MALLOC_VARS.iter().any(|name| var(name).is_some())
        || var("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin() {
    // Both together: setting either one turns off glibc's adjustment of both.
    // SAFETY: `mallopt` changes two of the allocator's parameters, under its own lock; it
    // touches no memory of ours.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !set {
        tracing::debug!(target: "perforated", "glibc refused the heap thresholds; left as they were");
    }
}

#[cfg(test)]
mod tests {
    use super::user_tuned;
    use std::ffi::OsString;

    fn env<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            set.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn a_user_tuned_allocator_is_left_alone() {
        assert!(!user_tuned(env(&[])));
        assert!(!user_tuned(env(&[("PERFORATED_HEAP", "pinned")])));
        assert!(user_tuned(env(&[("PERFORATED_HEAP", "system")])));
        assert!(!user_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.cpu.x86_rep_movsb_threshold=10000000"
        )])));
        assert!(user_tuned(env(&[("MALLOC_TRIM_THRESHOLD_", "131072")])));
        assert!(user_tuned(env(&[("MALLOC_ARENA_MAX", "2")])));
        assert!(user_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.cpu.x86_rep_movsb_threshold=1:glibc.malloc.trim_threshold=1"
        )])));
    }
}
