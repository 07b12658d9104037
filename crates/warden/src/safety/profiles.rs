//! Per-key safety policy for the local filters: the scanner each key's requests and
//! answers are checked with. Built once at start-up (one scanner per profile); a key
//! without a profile uses the `[safety.filters]` scanner.

use std::collections::HashMap;
use std::sync::Arc;

use super::filters::{FilterPolicy, Scanner};
use crate::config::profiles::Profiles;

pub struct KeyFilters {
    default: Arc<Scanner>,
    by_key: HashMap<String, Arc<Scanner>>,
}

impl KeyFilters {
    pub fn new(default: Arc<Scanner>) -> Self {
        Self {
            default,
            by_key: HashMap::new(),
        }
    }

    /// The default scanner and one per profile that keys use (compiled once, shared by
    /// the profile's keys; a profile whose filter policy is the default's shares it).
    pub fn build(default: &FilterPolicy, profiles: &Profiles) -> Result<Self, String> {
        let mut out = Self::new(Arc::new(Scanner::new(default)?));
        let mut built: Vec<(usize, Arc<Scanner>)> = Vec::new();
        for (key, at, policy) in profiles.key_filters() {
            if policy == default {
                continue;
            }
            let scanner = match built.iter().find(|(i, _)| *i == at) {
                Some((_, scanner)) => scanner.clone(),
                None => {
                    let name = &profiles.profiles[at].name;
                    let scanner = Arc::new(
                        Scanner::new(policy).map_err(|why| format!("profile '{name}': {why}"))?,
                    );
                    built.push((at, scanner.clone()));
                    scanner
                }
            };
            out.set(key, scanner);
        }
        Ok(out)
    }

    /// `key` is checked with `scanner` instead of the default.
    pub fn set(&mut self, key: &str, scanner: Arc<Scanner>) {
        self.by_key.insert(key.to_owned(), scanner);
    }

    /// The scanner for a key's traffic (one hash lookup when any key has its own).
    pub fn for_key(&self, key: Option<&str>) -> &Arc<Scanner> {
        if self.by_key.is_empty() {
            return &self.default;
        }
        key.and_then(|k| self.by_key.get(k))
            .unwrap_or(&self.default)
    }

    /// Whether some key's filters are on (output checks are needed at all).
    pub fn any_enabled(&self) -> bool {
        self.default.enabled() || self.by_key.values().any(|s| s.enabled())
    }
}
