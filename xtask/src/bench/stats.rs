//! Minimum, median and maximum of repeated measurements.

/// The spread of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none (NaNs are ignored).
    pub(super) fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            min: *sorted.first()?,
            median: median_of_sorted(&sorted)?,
            max: *sorted.last()?,
        })
    }
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub(super) fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Some(Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            Spread::of(&[4.0, 1.0, 3.0, 2.0]),
            Some(Spread {
                min: 1.0,
                median: 2.5,
                max: 4.0
            })
        );
        assert_eq!(median(&[7.5]), Some(7.5));
    }

    #[test]
    fn nothing_to_summarise() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), Some(2.0));
    }
}
