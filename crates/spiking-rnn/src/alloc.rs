//! A global allocator for programs that use this crate: the system allocator, with blocks of
//! 4 KiB and more aligned to 64 bytes (a cache line). Install it in a binary with
//! `#[global_allocator] static A: spiking_rnn::CacheLineAligned = spiking_rnn::CacheLineAligned;`.
//!
//! Why: the hot loops stream rows of `W_hh` and of the gate gradients as 64-byte vectors. glibc
//! returns large blocks 16 bytes past a page boundary, so each such vector straddles two cache
//! lines. On the project's machine batch-1 inference measured ~1.3× faster with aligned buffers
//! (README, Speed). `Vec<f32>` only asks for 4-byte alignment; threading an aligned buffer type
//! through every parameter and workspace vector would touch the whole API, and the allocator
//! crates that align large blocks are C libraries. Results do not depend on the alignment.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct CacheLineAligned;

/// Below this size the request is passed on unchanged (small blocks are not streamed).
const LARGE: usize = 4096;
const LINE: usize = 64;

fn widened(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // Fails only for a size within 64 bytes of `isize::MAX`; such a block keeps the asked-for
        // alignment, and `dealloc` agrees because it widens the same way.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block is allocated and freed by `System` with the same widened layout (which
// depends only on the size and alignment asked for), and satisfies the caller's alignment.
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(widened(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(widened(layout))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, widened(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = widened(new);
        if new.align() == old.align() {
            return System.realloc(ptr, old, new_size);
        }
        // Crossing the size threshold changes the alignment: move the block.
        let moved = System.alloc(new);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            System.dealloc(ptr, old);
        }
        moved
    }
}
