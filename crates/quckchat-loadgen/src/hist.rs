//! A log-linear latency histogram in microseconds (under 1% error above 128 µs, exact below).

use serde::Serialize;

const SUB: u64 = 64;

#[derive(Clone)]
pub struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: vec![0; 128 + 58 * SUB as usize], count: 0, max: 0, sum: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < 128 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // >= 7
    let sub = (v >> (e - 6)) & (SUB - 1);
    (128 + (e - 7) * SUB + sub) as usize
}

fn value(i: usize) -> u64 {
    if i < 128 {
        return i as u64;
    }
    let e = (i as u64 - 128) / SUB + 7;
    let sub = (i as u64 - 128) % SUB;
    let lo = (SUB + sub) << (e - 6);
    lo + (1u64 << (e - 6)) / 2
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        let i = index(v).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            p50_us: self.quantile(0.50),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max,
            mean_us: if self.count == 0 { 0 } else { (self.sum / self.count as u128) as u64 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_value_agree_within_one_percent() {
        for v in [0u64, 1, 127, 128, 129, 1000, 12_345, 999_999, 10_000_000_000] {
            let back = value(index(v));
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.01, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((495..=505).contains(&s.p50_us), "{s:?}");
        assert!((985..=1000).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
    }
}
