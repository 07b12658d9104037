//! Upstream key hygiene with OpenAI's own Admin, Usage and Costs APIs: scheduled rotation,
//! leak detection by reconciling Warden's per-key counts with OpenAI's usage, unmanaged
//! keys, key age and real spend (see `docs/key-hygiene.md`).

pub mod client;
pub mod ledger;
pub mod reconcile;
pub mod wire;
