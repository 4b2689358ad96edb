//! Samples, percentiles and the way figures are printed.

use std::time::Duration;

/// A set of measured durations.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Add one.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The `p`-th percentile (0 < p <= 100), nearest rank. Zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// Add all of `other`'s.
    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }
}

/// Ratios of paired measurements (each a figure over the floor measured next to it).
#[derive(Debug, Clone, Default)]
pub struct Ratios(Vec<f64>);

impl Ratios {
    /// Add the ratio of one pair.
    pub fn push(&mut self, figure: Duration, floor: Duration) {
        self.0
            .push(figure.as_secs_f64() / floor.as_secs_f64().max(1e-12));
    }

    /// The `p`-th percentile, nearest rank. Zero when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    /// "median (p10-p90 spread)", for the value column.
    pub fn spread(&self) -> String {
        format!(
            "spread {:.2}-{:.2} (p10-p90 of {} pairs)",
            self.percentile(10.0),
            self.percentile(90.0),
            self.0.len()
        )
    }
}

/// A duration for people: µs below 10 ms, else ms.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// Milliseconds with one decimal.
pub fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// KiB as MiB with one decimal.
pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which item of docs/PERFORMANCE.md (1-8).
    pub item: u8,
    /// What was measured.
    pub figure: String,
    /// The measured value.
    pub value: String,
    /// The floor of the same run, or what the value is compared with.
    pub floor: String,
    /// Value / floor, where that is the figure of merit.
    pub ratio: Option<f64>,
    /// The target, as docs/PERFORMANCE.md states it ("" when the row is information only).
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

impl Row {
    /// A row without a target.
    pub fn info(item: u8, figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            item,
            figure: figure.into(),
            value: value.into(),
            floor: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    /// Set the floor.
    pub fn floor(mut self, floor: impl Into<String>) -> Row {
        self.floor = floor.into();
        self
    }

    /// Set the ratio.
    pub fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    /// Set the target and whether it is met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Print `rows` as a Markdown table.
pub fn print_table(rows: &[Row]) {
    println!("| # | figure | value | floor (same run) | ratio | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.item,
            r.figure,
            r.value,
            if r.floor.is_empty() { "–" } else { &r.floor },
            r.ratio.map(|x| format!("{x:.2}")).unwrap_or("–".into()),
            if r.target.is_empty() {
                "–"
            } else {
                &r.target
            },
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.percentile(99.0), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
        assert_eq!(Samples::default().median(), Duration::ZERO);
    }
}
