//! The packed-log engine: append-only segments of checksummed records
//! (`log`, `record`), a memory-mapped hash index (`index`), recovery at open
//! (`recovery`) and background compaction (`compaction`), put together as a
//! key-value [`Engine`] (`kv`). The meta and data stores of the server
//! (`super::log_meta`, `super::log_data`) are thin key layouts over it.
//! Byte layouts are in `docs/store.md`.

mod compaction;
mod index;
mod kv;
mod log;
pub(crate) mod record;
mod recovery;
mod sys;

pub use index::{IDX_HEADER_LEN, SLOT_LEN};
pub use kv::{Engine, EngineOptions, Got, Op, Stats, SLOW_CHECK_EVERY, TOMB_SLOTS};
pub use log::{seg_name, InPlace, SEG_HEADER_LEN};
pub use record::REC_HEADER_LEN;
pub use recovery::OpenHow;
