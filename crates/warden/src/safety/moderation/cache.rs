//! Content-hash cache of moderation results: text the endpoint has judged once (an
//! earlier turn of a conversation, a repeated system prompt) is never sent again.
//! Bounded by entry count (quick_cache's S3-FIFO eviction) and by age (TTL checked on read).

use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::categories::Scores;

/// SHA-256 of (model, kind, content): a different model may judge differently, and a
/// text never collides with an image URL of the same spelling.
pub type ContentKey = [u8; 32];

pub fn content_key(model: &str, kind: u8, content: &str) -> ContentKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(model.as_bytes());
    ctx.update(&[0, kind, 0]);
    ctx.update(content.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

pub struct ScoreCache {
    entries: Option<Cache<ContentKey, (Instant, Scores)>>,
    ttl: Duration,
}

impl ScoreCache {
    /// `capacity == 0` disables caching.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
            ttl,
        }
    }

    pub fn get(&self, key: &ContentKey) -> Option<Scores> {
        let (at, scores) = self.entries.as_ref()?.get(key)?;
        (at.elapsed() < self.ttl).then_some(scores)
    }

    pub fn insert(&self, key: ContentKey, scores: Scores) {
        if let Some(entries) = &self.entries {
            entries.insert(key, (Instant::now(), scores));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_until_the_ttl_and_keys_differ_by_model_and_kind() {
        let cache = ScoreCache::new(16, Duration::from_millis(50));
        let key = content_key("m", b't', "hello");
        assert_ne!(key, content_key("m2", b't', "hello"));
        assert_ne!(key, content_key("m", b'i', "hello"));
        assert!(cache.get(&key).is_none());
        let mut scores = Scores::default();
        scores.scores[2] = 0.5;
        cache.insert(key, scores);
        assert_eq!(cache.get(&key), Some(scores));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key).is_none(), "expired entries are misses");
    }

    #[test]
    fn stays_bounded() {
        let cache = ScoreCache::new(8, Duration::from_secs(60));
        for i in 0..1000 {
            cache.insert(content_key("m", b't', &i.to_string()), Scores::default());
        }
        let kept = (0..1000)
            .filter(|i| cache.get(&content_key("m", b't', &i.to_string())).is_some())
            .count();
        assert!(kept <= 16, "kept {kept}");
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = ScoreCache::new(0, Duration::from_secs(60));
        let key = content_key("m", b't', "x");
        cache.insert(key, Scores::default());
        assert!(cache.get(&key).is_none());
    }
}
