//! Percentiles and medians of measurements.

/// The value at `fraction` (0.5 for the median, 0.99 for p99) of `sorted` (ascending), nearest-rank; 0 if empty.
///
/// ```
/// use gateway_load::stats::percentile;
/// let sorted: Vec<u64> = (1..=100).collect();
/// assert_eq!(percentile(&sorted, 0.5), 51);
/// assert_eq!(percentile(&sorted, 0.99), 99);
/// assert_eq!(percentile::<u64>(&[], 0.99), 0);
/// ```
pub fn percentile<T: Copy + Default>(sorted: &[T], fraction: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let at = ((sorted.len() - 1) as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The median of `values` (the lower middle one for an even count); `None` if empty.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted.get((sorted.len().max(1) - 1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median::<u32>(&[]), None);
    }
}
