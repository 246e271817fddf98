//! Latency windows: bounded queues, their median, and how latencies are compared and shown.

use std::{collections::VecDeque, time::Duration};

/// Latencies below this count as this much when compared, so jitter on a sub-millisecond
/// local probe is not a 2× degradation.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(10);

pub(super) fn push_bounded<T>(queue: &mut VecDeque<T>, value: T, bound: usize) {
    queue.push_back(value);
    while queue.len() > bound.max(1) {
        queue.pop_front();
    }
}

/// The upper median: at least half the values are this or more. A window half full of
/// 300 ms answers then reads 300 ms, not the 200 ms between the two halves.
pub(super) fn median(values: &VecDeque<Duration>) -> Duration {
    let mut sorted: Vec<Duration> = values.iter().copied().collect();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

pub(super) fn floored(latency: Duration) -> Duration {
    latency.max(LATENCY_FLOOR)
}

/// "310 ms", or "2.5 ms" below 10 ms.
pub(super) fn ms(latency: Duration) -> String {
    let millis = latency.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(millis: &[u64]) -> VecDeque<Duration> {
        millis.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn the_median_of_an_even_window_is_its_upper_middle() {
        assert_eq!(
            median(&window(&[300, 100, 300, 100])),
            Duration::from_millis(300)
        );
        assert_eq!(median(&window(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(&window(&[])), Duration::ZERO);
    }

    #[test]
    fn a_bounded_queue_drops_its_oldest() {
        let mut queue = VecDeque::new();
        for n in 0..5 {
            push_bounded(&mut queue, n, 3);
        }
        assert_eq!(queue, [2, 3, 4]);
    }

    #[test]
    fn latencies_read_in_milliseconds() {
        assert_eq!(ms(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(ms(Duration::from_millis(310)), "310 ms");
    }
}
