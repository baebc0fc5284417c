//! The proxy's memory allocator: mimalloc, with a short per-thread stack of freed 8 KiB blocks
//! that is handed out again first.
//!
//! Why 8 KiB: it is the size of hyper's HTTP/1 read buffer. Every request and response takes
//! its bytes from that buffer, and both connections of a proxied exchange read again while the
//! message they read is still in flight (the downstream one to notice a client that leaves
//! mid-request, the upstream one to notice an idle connection closing). The buffer is shared
//! then, so hyper takes a fresh 8 KiB block, and the old one is freed once the message is
//! done: two blocks a request. mimalloc serves blocks up to 1 KiB from a free list per size;
//! larger ones take its generic path, about ten times the instructions. The stack makes those
//! two blocks as cheap as a small allocation.
//!
//! Every block on a stack came from mimalloc with the same size and an alignment it satisfies,
//! so any block may go back to mimalloc, whichever thread frees it. A thread's stack is given
//! back to mimalloc when the thread ends.

#![allow(unsafe_code)] // A global allocator can only be written with `unsafe impl`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;

use mimalloc::MiMalloc;

/// The size of the blocks kept: hyper's HTTP/1 read buffer.
pub const BLOCK: usize = 8 * 1024;

/// Blocks kept per thread at most (512 KiB).
pub const KEPT: usize = 64;

/// mimalloc, with freed [`BLOCK`]-sized blocks kept per thread (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// A thread's freed blocks.
struct Stack {
    len: Cell<usize>,
    blocks: [Cell<*mut u8>; KEPT],
}

impl Stack {
    const fn empty() -> Self {
        Self {
            len: Cell::new(0),
            blocks: [const { Cell::new(ptr::null_mut()) }; KEPT],
        }
    }

    fn pop(&self) -> Option<*mut u8> {
        let len = self.len.get().checked_sub(1)?;
        self.len.set(len);
        Some(self.blocks[len].replace(ptr::null_mut()))
    }

    /// Keeps `block`, unless the stack is full.
    fn push(&self, block: *mut u8) -> bool {
        let len = self.len.get();
        if len == KEPT {
            return false;
        }
        self.blocks[len].set(block);
        self.len.set(len + 1);
        true
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(BLOCK, 1).expect("a valid layout");
        while let Some(block) = self.pop() {
            // SAFETY: the block came from `MiMalloc` with a layout of `BLOCK` bytes that this one
            // matches for freeing (see `kept`), and was freed by its owner; nothing else refers
            // to it.
            unsafe { MiMalloc.dealloc(block, layout) }
        }
    }
}

thread_local! {
    // Const-initialized: touching it never allocates. Its destructor is registered with the
    // C library (`__cxa_thread_atexit_impl`), which allocates with its own allocator.
    static STACK: Stack = const { Stack::empty() };
}

/// Whether blocks of `layout` are kept: the size of [`BLOCK`], and an alignment that every
/// block mimalloc gives for that size has (mimalloc aligns blocks of 8 KiB to at least 16).
fn kept(layout: Layout) -> bool {
    layout.size() == BLOCK && layout.align() <= 16
}

// SAFETY: blocks come from `MiMalloc` or from a stack of blocks `MiMalloc` gave for the same
// size; `kept` admits only layouts that every such block satisfies, so a kept block is valid for
// whoever takes it, and for `MiMalloc` to free or reallocate later. A block is on at most one
// stack, and only after its owner freed it. The stacks are thread-local `Cell`s: no allocation,
// no lock, no reentrance.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if kept(layout)
            && let Ok(Some(block)) = STACK.try_with(Stack::pop)
        {
            return block;
        }
        // SAFETY: same contract as ours.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if kept(layout) && STACK.try_with(|s| s.push(ptr)) == Ok(true) {
            return;
        }
        // SAFETY: same contract as ours; every block came from `MiMalloc`.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours; every block came from `MiMalloc`.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_gives_back_the_last_block_kept_and_holds_at_most_kept() {
        let stack = Stack::empty();
        assert_eq!(stack.pop(), None);
        let mut addresses = [0u8; KEPT + 1];
        let blocks: Vec<*mut u8> = addresses.iter_mut().map(|a| a as *mut u8).collect();
        for &b in &blocks[..KEPT] {
            assert!(stack.push(b));
        }
        assert!(!stack.push(blocks[KEPT]));
        for &b in blocks[..KEPT].iter().rev() {
            assert_eq!(stack.pop(), Some(b));
        }
        assert_eq!(stack.pop(), None);
    }

    #[test]
    fn only_block_sized_layouts_are_kept() {
        assert!(kept(Layout::from_size_align(BLOCK, 1).unwrap()));
        assert!(kept(Layout::from_size_align(BLOCK, 16).unwrap()));
        assert!(!kept(Layout::from_size_align(BLOCK, 64).unwrap()));
        assert!(!kept(Layout::from_size_align(BLOCK - 1, 1).unwrap()));
        assert!(!kept(Layout::from_size_align(BLOCK + 1, 1).unwrap()));
    }
}
