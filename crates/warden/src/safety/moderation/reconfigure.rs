//! A moderator for a reloaded config that keeps what the running one learned.

use std::sync::Arc;

use super::cache::ScoreCache;
use super::Moderator;
use crate::breaker::Breaker;
use crate::config::moderation::ModerationConfig;

impl Moderator {
    /// The same endpoint, score cache, breaker and totals under `config`'s policy, so a
    /// reload neither re-sends cached content nor closes an open breaker. A changed cache
    /// size or breaker setting starts that part afresh. Lockdown's lowering is not
    /// carried over: the caller applies the current switch (`set_lockdown`).
    pub fn reconfigured(&self, config: ModerationConfig) -> Moderator {
        let old = &self.config;
        let cache =
            if (old.cache_entries, old.cache_ttl) == (config.cache_entries, config.cache_ttl) {
                self.cache.clone()
            } else {
                Arc::new(ScoreCache::new(config.cache_entries, config.cache_ttl))
            };
        let breaker = if (old.breaker_failures, old.breaker_cooldown)
            == (config.breaker_failures, config.breaker_cooldown)
        {
            self.breaker.clone()
        } else {
            Arc::new(Breaker::new(
                "moderation",
                config.breaker_failures,
                config.breaker_cooldown,
            ))
        };
        Moderator {
            config,
            backend: self.backend.clone(),
            cache,
            breaker,
            totals: self.totals.clone(),
            lowered: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Whether lockdown's lowered thresholds are in force on this moderator.
    pub fn lowered_for_lockdown(&self) -> bool {
        self.lowered.load().is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::Ordering;

    use super::super::pieces::Piece;
    use super::super::tests::{config, Fake};
    use super::super::Side;
    use super::*;

    #[tokio::test]
    async fn a_reloaded_policy_keeps_the_cache_and_judges_by_the_new_rules() {
        let fake = Arc::new(Fake::default());
        let old = Moderator::new(config(""), fake.clone());
        let flagged = vec![Piece::text("input", "I will FLAG:violence you")];
        let first = old.check(Side::Input, &flagged, None).await.unwrap();
        assert_eq!(first.blocked.len(), 1);

        let new = old.reconfigured(config("[categories.violence]\naction = \"flag\""));
        let second = new.check(Side::Input, &flagged, None).await.unwrap();
        assert!(second.blocked.is_empty(), "the new policy only flags");
        assert_eq!(second.flagged.len(), 1);
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "served from the shared cache"
        );
        assert_eq!(old.totals.cache_hits.load(Ordering::Relaxed), 1);

        let resized = new.reconfigured(config("cache_entries = 10"));
        resized.check(Side::Input, &flagged, None).await.unwrap();
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "a new cache size starts afresh"
        );
    }
}
