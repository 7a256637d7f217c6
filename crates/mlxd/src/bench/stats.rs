//! Summaries of repeated measurements: median, mean, population standard
//! deviation, extremes, and nearest-rank percentiles.

use serde::Serialize;

/// The spread of one figure over the runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let mid = sorted.len() / 2;
        let median = match sorted.len() {
            0 => 0.0,
            len if len % 2 == 1 => sorted[mid],
            _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
        };
        Summary {
            n: sorted.len(),
            median,
            mean,
            stddev: var.sqrt(),
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }

    /// The standard error of the median, for values spread about normally
    /// (√(π/2) σ/√n).
    pub fn median_error(&self) -> f64 {
        1.2533 * self.stddev / (self.n.max(1) as f64).sqrt()
    }

    /// The summary of the values that exist; `None` when none does.
    pub fn of_some(values: impl IntoIterator<Item = Option<f64>>) -> Option<Summary> {
        let present: Vec<f64> = values.into_iter().flatten().collect();
        (!present.is_empty()).then(|| Summary::of(&present))
    }
}

/// The `q`-quantile (0..=1) by nearest rank; 0 for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.mean, s.min, s.max), (2.0, 2.0, 1.0, 3.0));
        assert!((s.stddev - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Summary::of(&[1.0, 4.0]).median, 2.5);
        assert_eq!(Summary::of_some([None, Some(2.0)]).map(|s| s.n), Some(1));
        assert_eq!(Summary::of_some([None]), None);
        let even = Summary::of(&[1.0, 3.0, 1.0, 3.0]);
        assert!((even.median_error() - 1.2533 / 2.0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
