use super::*;

#[test]
fn recent_buckets_cover_their_latency() {
    for micros in [
        0, 1, 15, 16, 17, 20, 24, 31, 32, 100, 999, 1000, 1_000_000, 16_000_000,
    ] {
        let (lo, hi) = bucket_bounds(recent_bucket(micros));
        assert!(
            lo <= micros as f64 && (micros as f64) < hi,
            "{micros}: {lo}..{hi}"
        );
    }
    assert_eq!(recent_bucket(u64::MAX), RECENT_BUCKETS - 1);
    assert_eq!(recent_bucket(1 << MAX_OCTAVE), RECENT_BUCKETS - 1);
    assert_eq!(recent_bucket((1 << MAX_OCTAVE) - 1), RECENT_BUCKETS - 2);
}

#[test]
fn percentiles_are_close_to_the_truth() {
    let r = Recent::default();
    for micros in 1..=1000u64 {
        r.record(5, micros * 100); // 100 µs .. 100 ms, uniform
    }
    let w = r.window(5);
    assert_eq!(w.count(), 1000);
    for (q, truth) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
        let got = w.quantile_us(q).unwrap();
        assert!((got - truth).abs() / truth < 0.1, "q{q}: {got} vs {truth}");
    }
}

#[test]
fn the_window_forgets_old_seconds() {
    let r = Recent::default();
    r.record(100, 1_000);
    r.record(105, 2_000);
    assert_eq!(r.window(105).count(), 2);
    assert_eq!(r.window(109).count(), 2);
    assert_eq!(r.window(110).count(), 1, "second 100 left the window");
    assert_eq!(r.window(115).count(), 0);
    assert!(r.window(115).quantile_us(0.5).is_none());
    // Reusing a slot a full ring later starts it from zero (second 105 is still in).
    r.record(100 + SLOTS as u64, 5);
    assert_eq!(r.window(100 + SLOTS as u64).count(), 2);
}

#[test]
fn record_response_counts_classes_and_buckets() {
    let s = MemberStats::default();
    s.record_response(200, 500);
    s.record_response(404, 3_000);
    s.record_response(503, 20_000_000);
    s.record_response(99, 1);
    assert_eq!(s.total_responses(), 4);
    assert_eq!(s.responses(0), 1);
    assert_eq!(s.responses(3), 1);
    assert_eq!(s.latency_bucket(0), 2);
    assert_eq!(s.latency_bucket(LATENCY_BUCKETS_MS.len()), 1);
    assert_eq!(s.recent.window(current_second()).count(), 4);
}

#[test]
fn shards_written_by_different_threads_add_up() {
    let s = std::sync::Arc::new(MemberStats::default());
    let handles: Vec<_> = (0..6)
        .map(|n| {
            let s = s.clone();
            std::thread::spawn(move || {
                use_shard(n);
                for _ in 0..100 {
                    s.record_response(200, 10);
                    s.add_retry();
                    s.add_failure();
                    s.add_bytes_out(3);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.responses(1), 600);
    assert_eq!((s.retries(), s.failures(), s.bytes_out()), (600, 600, 1800));
    assert_eq!(s.latency_sum_us(), 6000);
}
