//! A figure measured over several runs: its median and spread.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Figure {
    pub fn of(unit: &'static str, runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            unit,
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs,
        }
    }

    /// `median unit (min–max)`, with as many decimals as the size needs.
    pub fn show(&self) -> String {
        format!(
            "{} {} ({}–{})",
            number(self.median),
            self.unit,
            number(self.min),
            number(self.max)
        )
    }
}

pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || magnitude == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let figure = Figure::of("s", vec![3.0, 1.0, 2.0]);
        assert_eq!((figure.median, figure.min, figure.max), (2.0, 1.0, 3.0));
        assert_eq!(Figure::of("s", vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(figure.show(), "2.00 s (1.00–3.00)");
    }
}
