//! The proxy's global allocator as the global allocator of this test: blocks kept per thread
//! are handed out once at a time, keep their contents while in use, move between threads, and
//! go back to mimalloc when a thread ends.

use std::collections::HashSet;
use std::thread;

use switchyard_proxy::allocator::{Allocator, BLOCK, KEPT};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// A block-sized buffer filled with `tag`.
fn block(tag: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(BLOCK);
    v.resize(BLOCK, tag);
    assert_eq!(v.capacity(), BLOCK);
    v
}

#[test]
fn live_blocks_are_distinct_and_keep_their_contents_through_reuse() {
    for round in 0..4u8 {
        // More than a stack holds, so some come from mimalloc and some from the stack.
        let blocks: Vec<Vec<u8>> = (0..3 * KEPT)
            .map(|i| block(round.wrapping_mul(31).wrapping_add(i as u8)))
            .collect();
        let addresses: HashSet<*const u8> = blocks.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(addresses.len(), blocks.len(), "a block was handed out twice");
        for (i, b) in blocks.iter().enumerate() {
            let tag = round.wrapping_mul(31).wrapping_add(i as u8);
            assert!(
                b.iter().all(|&x| x == tag),
                "block {i} of round {round} was overwritten"
            );
        }
        // Free every other one first, then the rest: the stack fills and overflows to mimalloc.
        let (even, odd): (Vec<_>, Vec<_>) = blocks.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        drop(even);
        drop(odd);
    }
}

#[test]
fn a_freed_block_is_the_next_one_handed_out_on_its_thread() {
    thread::spawn(|| {
        let first = block(1);
        let address = first.as_ptr();
        drop(first);
        let second = block(2);
        assert_eq!(second.as_ptr(), address);
        assert!(second.iter().all(|&x| x == 2));
    })
    .join()
    .expect("the thread ran");
}

#[test]
fn blocks_freed_on_other_threads_serve_those_threads_and_outlive_them() {
    let made: Vec<Vec<u8>> = (0..KEPT).map(|i| block(i as u8)).collect();
    let survivors = thread::spawn(move || {
        let addresses: HashSet<*const u8> = made.iter().map(|b| b.as_ptr()).collect();
        drop(made);
        // This thread's stack now holds the blocks made on the test thread.
        let again: Vec<Vec<u8>> = (0..KEPT).map(|_| block(0xaa)).collect();
        assert!(again.iter().all(|b| addresses.contains(&b.as_ptr())));
        // Half go back on this thread's stack, which mimalloc takes when the thread ends.
        let mut again = again;
        again.truncate(KEPT / 2);
        again
    })
    .join()
    .expect("the thread ran");
    assert!(survivors.iter().all(|b| b.iter().all(|&x| x == 0xaa)));
    drop(survivors);
    // Growing and shrinking a block-sized buffer goes through mimalloc's reallocation.
    let mut v = block(7);
    v.extend_from_slice(&[8; 100]);
    v.shrink_to_fit();
    assert_eq!(v.len(), BLOCK + 100);
    assert!(v[..BLOCK].iter().all(|&x| x == 7) && v[BLOCK..].iter().all(|&x| x == 8));
}

#[test]
fn zeroed_blocks_are_zero() {
    let dirty = block(0xff);
    drop(dirty);
    let zeroed = vec![0u8; BLOCK];
    assert!(zeroed.iter().all(|&x| x == 0));
}
