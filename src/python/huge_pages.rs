//! The extension module's allocator: the system allocator, with large buffers (codes, masks,
//! indices, restored weights: tens of MB per tensor) marked for transparent huge pages. Fresh
//! anonymous memory is otherwise faulted in 4 KiB at a time, which on a 16M-element layer costs
//! more than the kernel that fills it. Only the Python extension installs it; the Rust library
//! leaves the allocator to the application.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct HugePageAlloc;

/// Buffers from this size on get the hint (a few huge pages at least).
const HINT_FROM: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Advises huge pages for the whole 2 MiB extents inside `[ptr, ptr + size)`.
fn advise(ptr: *mut u8, size: usize) {
    #[cfg(linux_syscalls)]
    if !ptr.is_null() && size >= HINT_FROM {
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize + size) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE only
            // changes how its pages are backed, never their contents. A failure (THP disabled)
            // leaves ordinary pages, so the result is ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(linux_syscalls))]
    let _ = (ptr, size, HINT_FROM, HUGE_PAGE);
}

// SAFETY: every method forwards to `System` with the same arguments and returns its result; the
// hint does not touch the memory.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        advise(p, new_size);
        p
    }
}
