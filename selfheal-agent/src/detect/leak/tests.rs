//! The detector over time, on synthetic series shaped like what the sensors see: leaks at
//! steady rates, pools breathing, warm-ups, bursts, all with deterministic noise.

use std::time::UNIX_EPOCH;

use super::*;

mod config;
mod episodes;
mod leaks;
mod shapes;

/// RLIMIT_NOFILE's usual soft limit.
const FD_LIMIT: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
const TOP: u32 = 4321;

/// xorshift64*: reproducible noise without a rand dependency.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Close to a standard normal: the sum of 12 uniforms, centred (Irwin–Hall).
    fn gauss(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// One resource of one unit played through a detector, second by second from a fixed start.
struct Run {
    detector: LeakDetector,
    config: LeakConfig,
    start: Instant,
    unit: u32,
    kind: LeakKind,
    limit: Option<f64>,
    /// Every event, with the second it came at.
    events: Vec<(f64, LeakEvent)>,
}

impl Run {
    fn new(kind: LeakKind, limit: Option<f64>) -> Self {
        Self {
            detector: LeakDetector::new(),
            config: LeakConfig::default(),
            start: Instant::now(),
            unit: 7,
            kind,
            limit,
            events: Vec::new(),
        }
    }

    fn at(&self, second: f64) -> Instant {
        self.start + Duration::from_secs_f64(second)
    }

    fn sample(&mut self, second: f64, value: f64) {
        let sample = ResourceSample {
            at: self.at(second),
            kind: self.kind,
            value,
            limit: self.limit,
            top_process: Some((TOP, "leaky".to_owned())),
        };
        let wall =
            UNIX_EPOCH + Duration::from_secs(1_750_000_000) + Duration::from_secs_f64(second);
        if let Some(event) = self
            .detector
            .observe(self.unit, &self.config, &sample, wall)
        {
            self.events.push((second, event));
        }
    }

    /// Samples `value(second)` every `every` seconds over [from, to).
    fn play(&mut self, from: f64, to: f64, every: f64, mut value: impl FnMut(f64) -> f64) {
        let mut second = from;
        while second < to {
            let v = value(second);
            self.sample(second, v);
            second += every;
        }
    }

    /// The resource's report at `second`.
    fn report(&self, second: f64) -> TrendReport {
        self.detector
            .trends(self.unit, self.at(second))
            .into_iter()
            .find(|report| report.kind == self.kind)
            .expect("the resource has a report")
    }

    /// The first problem, with the second it came at.
    fn first_problem(&self) -> Option<(f64, &Problem)> {
        self.events.iter().find_map(|(second, event)| match event {
            LeakEvent::Detected(problem) => Some((*second, problem)),
            LeakEvent::Cleared { .. } => None,
        })
    }

    fn window_secs(&self) -> f64 {
        self.config.window.as_secs_f64()
    }
}
