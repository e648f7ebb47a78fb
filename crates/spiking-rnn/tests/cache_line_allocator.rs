//! The allocator of `spiking_rnn::alloc`: large blocks are 64-byte aligned, small ones are
//! untouched, and growing or shrinking across the 4 KiB threshold keeps the contents.

#[global_allocator]
static ALLOCATOR: spiking_rnn::CacheLineAligned = spiking_rnn::CacheLineAligned;

fn is_aligned(v: &[f32]) -> bool {
    (v.as_ptr() as usize).is_multiple_of(64)
}

#[test]
fn large_blocks_are_cache_line_aligned() {
    // several, so that a lucky system allocation does not pass by chance
    let blocks: Vec<Vec<f32>> = (0..16).map(|k| vec![k as f32; 1024 + 3 * k]).collect();
    assert!(blocks.iter().all(|b| is_aligned(b)));
    let zeroed: Vec<Vec<f32>> = (0..16).map(|k| vec![0.0f32; 256 * 1024 + k]).collect();
    assert!(zeroed
        .iter()
        .all(|b| is_aligned(b) && b.iter().all(|&x| x == 0.0)));
}

#[test]
fn growing_and_shrinking_across_the_threshold_keeps_the_contents() {
    let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect(); // 400 bytes: small
    for i in 100..300_000 {
        v.push(i as f32); // grows through the threshold and far past it
    }
    assert!(is_aligned(&v));
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    v.truncate(10);
    v.shrink_to_fit(); // back below the threshold
    assert_eq!(v, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    let mut w: Vec<f32> = Vec::with_capacity(2000); // large, then grown while large
    w.extend((0..2000).map(|i| i as f32));
    w.extend((2000..5000).map(|i| i as f32));
    assert!(is_aligned(&w));
    assert!(w.iter().enumerate().all(|(i, &x)| x == i as f32));
}
