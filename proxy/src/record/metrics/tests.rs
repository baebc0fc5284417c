use hdrhistogram::Histogram;
use switchyard_config::stats::{HIGHEST_LATENCY_US, new_histogram};

use super::{BUCKETS_US, duration_histogram};

/// Prometheus' `histogram_quantile` over one series' buckets (promql's `bucketQuantile`): the
/// bucket that holds rank `q × count`, interpolated linearly within it.
fn histogram_quantile(q: f64, histogram: &prometheus::proto::Histogram) -> f64 {
    let buckets: Vec<(f64, f64)> = histogram
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
        .chain([(f64::INFINITY, histogram.get_sample_count() as f64)])
        .collect();
    let observations = buckets[buckets.len() - 1].1;
    let rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|&(_, count)| count < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    let (start, below) = if b == 0 { (0.0, 0.0) } else { buckets[b - 1] };
    let (end, count) = buckets[b];
    start + (end - start) * ((rank - below) / (count - below))
}

#[test]
fn bounds_step_by_less_than_ten_percent_from_1_ms_to_the_ceiling() {
    assert!(BUCKETS_US.windows(2).all(|w| w[0] < w[1]), "{BUCKETS_US:?}");
    let first_ms = BUCKETS_US.iter().position(|&b| b == 1_000).unwrap();
    let steps: Vec<&[u64]> = BUCKETS_US[first_ms..].windows(2).collect();
    let (last, fine) = steps.split_last().unwrap();
    for w in fine {
        assert!(
            w[1] * 1000 <= w[0] * 1094,
            "{} µs to {} µs is a step above 9.4%",
            w[0],
            w[1]
        );
    }
    // The ceiling: 54.5 s to 60 s.
    assert_eq!(*last, [54_500_000, HIGHEST_LATENCY_US]);
    assert!(last[1] * 1000 <= last[0] * 1101);
    // Every bound the first exposition had is still one, so a query on it keeps its meaning.
    for old in [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
        5_000_000, 10_000_000,
    ] {
        assert!(BUCKETS_US.contains(&old), "{old} µs is no longer a bound");
    }
}

#[test]
fn bounds_are_written_as_the_decimal_seconds_they_stand_for() {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&[{
            let mut metric = prometheus::proto::Metric::default();
            metric.set_histogram(duration_histogram(&new_histogram()));
            let mut family = prometheus::proto::MetricFamily::default();
            family.set_name("d".to_owned());
            family.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
            family.set_metric(vec![metric]);
            family
        }])
        .unwrap();
    let les: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(les.len(), BUCKETS_US.len() + 1);
    assert_eq!(&les[..5], ["0.0001", "0.00025", "0.0005", "0.001", "0.00109"]);
    assert_eq!(&les[les.len() - 3..], ["54.5", "60", "+Inf"]);
    assert!(
        les.contains(&"0.0128") && les.contains(&"1.65") && les.contains(&"9.17"),
        "{les:?}"
    );
}

/// Histograms of one shape at `at_us`: every request at that latency; a spread over the 30% above
/// it; and 98 of 100 at it with a tail at four times it (p99 in the tail).
fn shapes(at_us: u64) -> [Vec<u64>; 3] {
    [
        vec![at_us; 100],
        (0..100).map(|i| at_us + at_us * 3 * i / 1000).collect(),
        (0..100).map(|i| if i < 98 { at_us } else { at_us * 4 }).collect(),
    ]
}

#[test]
fn histogram_quantile_is_within_ten_percent_of_the_recorders_quantiles_from_1_ms_to_10_s() {
    // Latencies at the bottom, the middle and the top of every bucket from 1 ms to 10 s: the
    // worst case of linear interpolation is a bucket's whole population just above its bottom.
    let mut h: Histogram<u64> = new_histogram();
    let mut worst = (0.0, 0, 0.0);
    let bounds = BUCKETS_US
        .iter()
        .skip_while(|&&b| b < 1_000)
        .take_while(|&&b| b < 10_000_000);
    for w in bounds.collect::<Vec<_>>().windows(2) {
        let (low, high) = (*w[0], *w[1]);
        // Just above the bucket's bottom: the first value the recorder tells apart from it.
        let above_low = h.next_non_equivalent(low);
        for at_us in [above_low, (low + high) / 2, high] {
            for values in shapes(at_us) {
                h.reset();
                for v in values {
                    h.record(v).unwrap();
                }
                let exported = duration_histogram(&h);
                for q in [0.5, 0.99] {
                    let recorder = h.value_at_quantile(q) as f64 / 1e6;
                    let prometheus = histogram_quantile(q, &exported);
                    let error = (prometheus - recorder).abs() / recorder;
                    if error > worst.0 {
                        worst = (error, at_us, q);
                    }
                }
            }
        }
    }
    assert!(
        worst.0 < 0.1,
        "histogram_quantile({}) at {} µs is {:.1}% off",
        worst.2,
        worst.1,
        worst.0 * 100.0
    );
}
