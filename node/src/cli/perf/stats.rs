//! Counting, pacing and reporting for `perf`.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// Counts since the last progress line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    pub records: u64,
    pub bytes: u64,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

/// One progress window of the run, for the timeline in the JSON summary: when a stall
/// happened, and how the tail moved, not only the whole run's percentiles.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the start, at the window's end.
    pub at_s: f64,
    pub records: u64,
    pub records_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<WindowLatency>,
}

/// A window's latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WindowLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencySummary>,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Each progress window (about a second) of the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
}

struct Inner {
    /// Microseconds, up to an hour, 3 significant digits.
    latency_us: Histogram<u64>,
    /// The same, since the last progress line.
    window_latency_us: Histogram<u64>,
    window: Window,
    timeline: Vec<TimelinePoint>,
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Shared by the producer's completion callbacks and the progress printer.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Recorder {
            inner: Mutex::new(Inner {
                latency_us: histogram(),
                window_latency_us: histogram(),
                window: Window::default(),
                timeline: Vec::new(),
                records: 0,
                bytes: 0,
                errors: 0,
                first_error: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `records` completed together after `latency`: each of them is counted with it, as
    /// Kafka's perf tool attributes a batch's latency to every record of the batch.
    pub fn record(&self, records: u64, bytes: u64, latency: Option<Duration>) {
        let mut inner = self.lock();
        inner.records += records;
        inner.bytes += bytes;
        inner.window.records += records;
        inner.window.bytes += bytes;
        if let Some(latency) = latency {
            inner.latency(latency.as_micros() as u64, records);
        }
    }

    /// Records received together, each with its own latency in microseconds.
    pub fn record_each(&self, bytes: u64, latencies_us: &[u64]) {
        let mut inner = self.lock();
        let records = latencies_us.len() as u64;
        inner.records += records;
        inner.bytes += bytes;
        inner.window.records += records;
        inner.window.bytes += bytes;
        for us in latencies_us {
            inner.latency(*us, 1);
        }
    }

    pub fn error(&self, records: u64, message: String) {
        let mut inner = self.lock();
        inner.errors += records;
        inner.first_error.get_or_insert(message);
    }

    pub fn records(&self) -> u64 {
        self.lock().records
    }

    /// The counts since the last call, which also adds them to the timeline as ending
    /// `at` after the start.
    pub fn take_window(&self, at: Duration, length: Duration) -> Window {
        let mut inner = self.lock();
        let mut window = std::mem::take(&mut inner.window);
        let latency = (!inner.window_latency_us.is_empty()).then(|| {
            let h = &inner.window_latency_us;
            (h.value_at_quantile(0.50), h.value_at_quantile(0.99))
        });
        if let Some((p50, p99)) = latency {
            window.latency_p50_us = p50;
            window.latency_p99_us = p99;
        }
        inner.window_latency_us.reset();
        let ms = |us: u64| us as f64 / 1000.0;
        inner.timeline.push(TimelinePoint {
            at_s: at.as_secs_f64(),
            records: window.records,
            records_per_sec: window.records as f64 / length.as_secs_f64().max(1e-9),
            latency_ms: latency.map(|(p50, p99)| WindowLatency {
                p50: ms(p50),
                p99: ms(p99),
                max: ms(window.latency_max_us),
            }),
        });
        window
    }

    pub fn summary(&self, elapsed: Duration, with_latency: bool) -> Summary {
        let inner = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &inner.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = (with_latency && !h.is_empty()).then(|| LatencySummary {
            avg: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        });
        Summary {
            records: inner.records,
            bytes: inner.bytes,
            elapsed_s: elapsed.as_secs_f64(),
            records_per_sec: inner.records as f64 / secs,
            mb_per_sec: inner.bytes as f64 / MIB / secs,
            latency_ms,
            errors: inner.errors,
            first_error: inner.first_error.clone(),
            timeline: inner.timeline.clone(),
        }
    }
}

impl Inner {
    fn latency(&mut self, us: u64, records: u64) {
        let us = us.max(1);
        self.latency_us.saturating_record_n(us, records);
        self.window_latency_us.saturating_record_n(us, records);
        self.window.latency_sum_us += us * records;
        self.window.latency_max_us = self.window.latency_max_us.max(us);
    }
}

/// A progress line in kafka-producer-perf-test's words.
pub fn progress_line(verb: &str, window: &Window, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut line = format!(
        "{} records {verb}, {:.1} records/sec ({:.2} MB/sec)",
        window.records,
        window.records as f64 / secs,
        window.bytes as f64 / MIB / secs
    );
    if window.latency_max_us > 0 && window.records > 0 {
        line.push_str(&format!(
            ", {:.2} ms avg latency, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms max latency",
            window.latency_sum_us as f64 / window.records as f64 / 1000.0,
            window.latency_p50_us as f64 / 1000.0,
            window.latency_p99_us as f64 / 1000.0,
            window.latency_max_us as f64 / 1000.0
        ));
    }
    line.push('.');
    line
}

/// The final line, with percentiles when there are latencies.
pub fn summary_line(verb: &str, s: &Summary) -> String {
    let mut line = format!(
        "{} records {verb}, {:.1} records/sec ({:.2} MB/sec) in {:.2} s",
        s.records, s.records_per_sec, s.mb_per_sec, s.elapsed_s
    );
    if let Some(l) = &s.latency_ms {
        line.push_str(&format!(
            ", {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th",
            l.avg, l.max, l.p50, l.p99, l.p999
        ));
    }
    line.push('.');
    if s.errors > 0 {
        line.push_str(&format!(" {} records failed", s.errors));
        if let Some(e) = &s.first_error {
            line.push_str(&format!(", the first with: {e}"));
        }
        line.push('.');
    }
    line
}

/// Paces sends to `rate` records per second on tokio's clock.
///
/// It is a token bucket about a millisecond deep: each record is due at `start + n / rate`,
/// and the sender sleeps only when it is ahead of that schedule, checking the clock once per
/// millisecond's worth of records. Falling behind (a slow broker) is not made up with a burst
/// beyond the bucket.
#[derive(Debug)]
pub struct Throttle {
    rate: Option<f64>,
    start: Instant,
    sent: u64,
    check_every: u64,
}

impl Throttle {
    /// `rate`: records per second; `None` for unlimited.
    pub fn new(rate: Option<f64>, start: Instant) -> Self {
        let check_every = rate.map_or(u64::MAX, |r| ((r / 1000.0) as u64).max(1));
        Throttle {
            rate,
            start,
            sent: 0,
            check_every,
        }
    }

    /// Counts one record; returns when the sender must wait until before sending the next.
    /// `now` is read only when the clock is checked.
    pub fn next_due(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        self.sent += 1;
        let rate = self.rate?;
        if !self.sent.is_multiple_of(self.check_every) {
            return None;
        }
        let now = now();
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
        if due > now {
            return Some(due);
        }
        // Behind schedule: restart the schedule from now so that the lag is not repaid with a
        // burst (the bucket is only a millisecond deep).
        let lag = now - due;
        if lag > Duration::from_millis(1) {
            self.start += lag;
        }
        None
    }

    pub async fn acquire(&mut self) {
        if self.rate.is_none() {
            return;
        }
        if let Some(due) = self.next_due(Instant::now) {
            tokio::time::sleep_until(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_attributed_to_every_record_of_the_batch() {
        let r = Recorder::new();
        r.record(1_000, 100_000, Some(Duration::from_millis(2)));
        r.record(10, 1_000, Some(Duration::from_millis(50)));
        let s = r.summary(Duration::from_secs(1), true);
        assert_eq!(s.records, 1_010);
        let l = s.latency_ms.expect("latencies");
        assert!((l.p50 - 2.0).abs() < 0.01, "{l:?}");
        assert!((l.p999 - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.max - 50.0).abs() < 0.1, "{l:?}");
        assert!((s.records_per_sec - 1_010.0).abs() < 1e-6);
    }

    #[test]
    fn windows_reset_after_each_progress_line() {
        let r = Recorder::new();
        r.record(5, 500, Some(Duration::from_millis(4)));
        let second = Duration::from_secs(1);
        let w = r.take_window(second, second);
        assert_eq!((w.records, w.latency_max_us), (5, 4_000));
        assert_eq!(
            progress_line("sent", &w, second),
            "5 records sent, 5.0 records/sec (0.00 MB/sec), 4.00 ms avg latency, 4.00 ms 50th, \
             4.00 ms 99th, 4.00 ms max latency."
        );
        assert_eq!(r.take_window(2 * second, second).records, 0);
        assert_eq!(r.records(), 5);
    }

    #[test]
    fn each_window_is_a_point_of_the_timeline_with_its_own_tail() {
        let r = Recorder::new();
        let second = Duration::from_secs(1);
        r.record(100, 0, Some(Duration::from_millis(1)));
        r.take_window(second, second);
        r.record(99, 0, Some(Duration::from_millis(1)));
        r.record(1, 0, Some(Duration::from_millis(80)));
        r.take_window(2 * second, second);
        let s = r.summary(2 * second, true);
        let points: Vec<(f64, u64, f64)> = s
            .timeline
            .iter()
            .map(|p| (p.at_s, p.records, p.latency_ms.expect("latency").max))
            .collect();
        assert_eq!(points, vec![(1.0, 100, 1.0), (2.0, 100, 80.0)]);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["timeline"][1]["latency_ms"]["max"], 80.0);
        assert_eq!(json["timeline"][0]["latency_ms"]["p99"], 1.0);
    }

    #[test]
    fn summary_serialises_as_one_json_object() {
        let r = Recorder::new();
        r.record(3, 300, Some(Duration::from_millis(1)));
        let json = serde_json::to_value(r.summary(Duration::from_secs(1), true)).expect("json");
        assert_eq!(json["records"], 3);
        assert!(json["latency_ms"]["p99"].is_number());
        assert!(json.get("first_error").is_none());
    }

    #[test]
    fn throttle_keeps_to_the_rate_and_checks_the_clock_once_per_millisecond_of_records() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Some(10_000.0), t0);
        // 10 records per millisecond: only every 10th record looks at the clock.
        for _ in 0..9 {
            assert_eq!(t.next_due(|| t0), None);
        }
        assert_eq!(t.next_due(|| t0), Some(t0 + Duration::from_millis(1)));
        // At the due time, the next 10 may go.
        for _ in 0..9 {
            assert_eq!(t.next_due(|| t0 + Duration::from_millis(1)), None);
        }
        assert_eq!(
            t.next_due(|| t0 + Duration::from_millis(1)),
            Some(t0 + Duration::from_millis(2))
        );
    }

    #[test]
    fn throttle_behind_schedule_does_not_burst() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Some(1_000.0), t0);
        // One record per ms; the sender stalls for 100 ms after the first record.
        assert_eq!(t.next_due(|| t0), Some(t0 + Duration::from_millis(1)));
        let late = t0 + Duration::from_millis(101);
        assert_eq!(t.next_due(|| late), None);
        // The schedule moved: the next record is due a millisecond later, not in the past.
        assert_eq!(t.next_due(|| late), Some(late + Duration::from_millis(1)));
    }

    #[test]
    fn unlimited_throttle_never_waits() {
        let t0 = Instant::now();
        let mut t = Throttle::new(None, t0);
        assert!((0..10_000).all(|_| t.next_due(|| t0).is_none()));
    }
}
