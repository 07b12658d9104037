//! Key sharing: one key or end user seen from many client IPs or countries in a short
//! window (a leaked key, an account passed around, VPN hopping).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use crate::geo::Country;

/// Distinct values remembered per actor; past this the oldest are forgotten (the count
/// is already far over any sensible line).
const MAX_TRACKED: usize = 256;

#[derive(Debug, Clone)]
pub struct Seen<T: Eq + Hash> {
    last: HashMap<T, i64>,
}

impl<T: Eq + Hash> Default for Seen<T> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<T: Eq + Hash + Copy> Seen<T> {
    pub fn record(&mut self, value: T, at_ms: i64, window_ms: i64) {
        self.last.insert(value, at_ms);
        if self.last.len() > MAX_TRACKED {
            self.last.retain(|_, at| *at > at_ms - window_ms);
            while self.last.len() > MAX_TRACKED {
                let Some(oldest) = self.last.iter().min_by_key(|(_, at)| **at).map(|(v, _)| *v)
                else {
                    break;
                };
                self.last.remove(&oldest);
            }
        }
    }

    pub fn distinct(&self, now_ms: i64, window_ms: i64) -> usize {
        self.last
            .values()
            .filter(|at| **at > now_ms - window_ms)
            .count()
    }

    pub fn forget_before(&mut self, cutoff_ms: i64) {
        self.last.retain(|_, at| *at > cutoff_ms);
    }
}

#[derive(Debug, Clone, Default)]
pub struct Sharing {
    pub ips: Seen<IpAddr>,
    pub countries: Seen<Country>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_values_inside_the_window() {
        let mut s = Sharing::default();
        for i in 0..20u8 {
            s.ips
                .record(IpAddr::from([198, 51, 100, i]), i64::from(i) * 1000, 60_000);
        }
        s.ips
            .record(IpAddr::from([198, 51, 100, 0]), 30_000, 60_000);
        assert_eq!(s.ips.distinct(30_000, 60_000), 20);
        assert_eq!(s.ips.distinct(75_000, 60_000), 5);
    }
}
