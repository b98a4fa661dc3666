fn main() -> std::process::ExitCode {
    return_large_allocations();
    hearth::cli::main()
}

/// glibc serves a freed large block's size from its heaps from then on
/// (the mmap threshold rises to it) and keeps those heaps: after a burst of
/// password hashes (~19 MiB each) the memory stayed taken. A fixed
/// threshold keeps every block over 4 MiB mapped on its own and returned
/// to the system when freed.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
