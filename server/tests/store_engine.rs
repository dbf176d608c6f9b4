//! The packed-log engine on its own: values survive clean and crashed
//! closes, a torn tail loses exactly the torn commit, a lost or corrupt
//! index is rebuilt from the log, multi-op commits are atomic, compaction
//! keeps space amplification under 1.5x, and a model (`BTreeMap`) agrees
//! with the engine over random operations with restarts in the middle.

use proptest::prelude::*;
use sealfs_server::engine::{
    seg_name, Engine, EngineOptions, Op, OpenHow, REC_HEADER_LEN, SLOW_CHECK_EVERY,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn opts(seg: u64) -> EngineOptions {
    EngineOptions {
        segment_size: seg,
        compaction: false,
        max_space_amp: 1.25,
        tick: Duration::from_millis(5),
        sync_interval: None,
        ..Default::default()
    }
}

fn open(dir: &Path, seg: u64) -> Engine {
    Engine::open(&dir.join("log"), &dir.join("idx"), opts(seg)).unwrap()
}

fn del(k: &[u8]) -> Op<'_> {
    Op::Del { key: k }
}

fn put<'a>(k: &'a [u8], v: &'a [u8]) -> Op<'a> {
    Op::Put {
        key: k,
        value: v,
        tag: 1,
        group: 0,
    }
}

fn get(e: &Engine, k: &[u8]) -> Option<Vec<u8>> {
    e.get(k).unwrap().map(|g| g.value)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn values_survive_clean_close_and_crash() {
    values_survive(opts(1 << 20));
}

/// The same through the log's other way of appending (one `pwrite` per
/// commit, as on a copy-on-write file system).
#[test]
fn values_survive_clean_close_and_crash_with_pwrite_appends() {
    values_survive(EngineOptions {
        mapped_appends: false,
        ..opts(1 << 20)
    });
}

/// With mapped appends off, nothing is written ahead: after a crash the
/// segment ends with its last record (so the test above took that path).
#[test]
fn pwrite_appends_write_nothing_ahead() {
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        mapped_appends: false,
        ..opts(1 << 20)
    };
    let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o).unwrap();
    e.commit(&[put(b"k", &[7u8; 300])], false).unwrap();
    e.abandon();
    let b = std::fs::read(segments(d.path()).pop().unwrap()).unwrap();
    // The segment header and one record (key, value, padding to 8).
    assert_eq!(b.len(), 32 + (REC_HEADER_LEN + 1 + 300).div_ceil(8) * 8);
}

fn values_survive(o: EngineOptions) {
    let d = tempfile::tempdir().unwrap();
    let open = |dir: &Path, _seg: u64| {
        Engine::open(&dir.join("log"), &dir.join("idx"), o.clone()).unwrap()
    };
    let e = open(d.path(), 1 << 20);
    for i in 0..1000u32 {
        e.commit(
            &[put(format!("k{i}").as_bytes(), &i.to_le_bytes())],
            i % 10 == 0,
        )
        .unwrap();
    }
    e.commit(&[Op::Del { key: b"k5" }], true).unwrap();
    e.close().unwrap();
    let e = open(d.path(), 1 << 20);
    assert_eq!(*e.open_how(), OpenHow::Clean);
    assert_eq!(get(&e, b"k7"), Some(7u32.to_le_bytes().to_vec()));
    assert_eq!(get(&e, b"k5"), None);
    e.commit(&[put(b"after", b"crash")], false).unwrap();
    e.abandon();
    // Same boot, dirty index: replayed from the checkpoint, not rebuilt.
    let e = open(d.path(), 1 << 20);
    assert!(
        matches!(e.open_how(), OpenHow::Replayed { .. } | OpenHow::Clean),
        "{:?}",
        e.open_how()
    );
    assert_eq!(get(&e, b"after"), Some(b"crash".to_vec()));
    assert_eq!(get(&e, b"k999"), Some(999u32.to_le_bytes().to_vec()));
    assert_eq!(e.stats().keys, 1000);
}

/// Flips one byte of `value` where it lies in the newest segment file.
fn flip_on_disk(dir: &Path, value: &[u8]) {
    let seg = segments(dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(value.len()).position(|w| w == value).unwrap();
    bytes[at + 100] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
}

/// Every read checks the record's check value: a record changed on disk gives EIO,
/// both in a segment written by the running engine and after a restart.
#[test]
fn a_record_changed_on_disk_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    let (v1, v2) = (vec![b'v'; 300], vec![b'w'; 300]);
    e.commit(&[put(b"good", b"kept")], true).unwrap();
    e.commit(&[put(b"live", &v1)], true).unwrap();
    assert_eq!(get(&e, b"live"), Some(v1.clone()));
    // The segment this engine is writing, changed under it.
    flip_on_disk(d.path(), &v1);
    let err = e.get(b"live").unwrap_err();
    assert_eq!(err.errno(), sealfs_proto::Errno::EIO, "{err}");
    e.commit(&[put(b"after", &v2)], true).unwrap();
    e.close().unwrap();
    // A segment found at open.
    flip_on_disk(d.path(), &v2);
    let e = open(d.path(), 1 << 20);
    assert_eq!(*e.open_how(), OpenHow::Clean);
    let err = e.get(b"after").unwrap_err();
    assert_eq!(err.errno(), sealfs_proto::Errno::EIO, "{err}");
    assert_eq!(get(&e, b"good"), Some(b"kept".to_vec()));
}

/// Appends go through a mapping of zeros written ahead (and, after a sync,
/// with pwrite into them): a crash leaves the active segment longer than
/// its records, with zeros after them. The
/// restart keeps every record, trims the zeros without calling them torn,
/// and appends after the last record.
#[test]
fn zeros_written_ahead_of_appends_are_trimmed_after_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 8 << 20);
    for i in 0..200u32 {
        e.commit(&[put(format!("k{i}").as_bytes(), &[i as u8; 700])], false)
            .unwrap();
        if i == 100 {
            // After a sync the rest of the window is written with pwrite.
            e.sync().unwrap();
        }
    }
    e.abandon();
    let seg = segments(d.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(
        bytes.len() > end + 4096,
        "no zeros were written ahead: {} bytes, data ends at {end}",
        bytes.len()
    );
    let e = open(d.path(), 8 << 20);
    assert!(
        std::fs::metadata(&seg).unwrap().len() < bytes.len() as u64,
        "the zeros were not trimmed"
    );
    for i in 0..200u32 {
        assert_eq!(
            get(&e, format!("k{i}").as_bytes()),
            Some(vec![i as u8; 700])
        );
    }
    e.commit(&[put(b"after", b"restart")], true).unwrap();
    e.close().unwrap();
    // A clean close leaves no segment longer than its records.
    for s in segments(d.path()) {
        let b = std::fs::read(&s).unwrap();
        let tail = &b[b.len().saturating_sub(64)..];
        assert!(
            tail.iter().any(|&x| x != 0),
            "{} ends in zeros",
            s.display()
        );
    }
    let e = open(d.path(), 8 << 20);
    assert_eq!(*e.open_how(), OpenHow::Clean);
    assert_eq!(get(&e, b"after"), Some(b"restart".to_vec()));
    assert_eq!(get(&e, b"k199"), Some(vec![199u8; 700]));
}

/// A segment of an older format is refused with a message that names its
/// version, not taken for garbage (and nothing is removed).
#[test]
fn a_segment_of_another_format_version_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    e.commit(&[put(b"k", b"v")], true).unwrap();
    e.close().unwrap();
    let seg = segments(d.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let err = Engine::open(&d.path().join("log"), &d.path().join("idx"), opts(1 << 20))
        .err()
        .expect("an old segment must not open");
    let msg = err.to_string();
    assert!(msg.contains("format version 2"), "{msg}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[test]
fn multi_op_commit_is_all_or_nothing_at_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    e.commit(&[put(b"a", b"1"), put(b"b", b"1")], true).unwrap();
    e.commit(&[put(b"a", b"2"), put(b"b", b"2"), put(b"c", b"2")], true)
        .unwrap();
    e.close().unwrap();
    let seg = segments(d.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut inside the second commit's last record: the whole commit goes.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    std::fs::remove_file(d.path().join("idx")).unwrap();
    let e = open(d.path(), 1 << 20);
    assert!(matches!(e.open_how(), OpenHow::Rebuilt { .. }));
    assert_eq!(get(&e, b"a"), Some(b"1".to_vec()));
    assert_eq!(get(&e, b"b"), Some(b"1".to_vec()));
    assert_eq!(get(&e, b"c"), None);
    // And the log is writable after the cut.
    e.commit(&[put(b"c", b"3")], true).unwrap();
    e.close().unwrap();
    let e = open(d.path(), 1 << 20);
    assert_eq!(get(&e, b"c"), Some(b"3".to_vec()));
}

#[test]
fn torn_tail_at_random_offsets_keeps_everything_before() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let d = tempfile::tempdir().unwrap();
        let e = open(d.path(), 1 << 20);
        let n = 20 + round;
        for i in 0..n {
            e.commit(
                &[put(
                    format!("k{i}").as_bytes(),
                    format!("value {i} {}", "x".repeat(i)).as_bytes(),
                )],
                false,
            )
            .unwrap();
        }
        let crashed = rng.gen_bool(0.5);
        if crashed {
            e.abandon();
        } else {
            e.close().unwrap();
        }
        let seg = segments(d.path()).pop().unwrap();
        // Where the last record lies (after a crash the file goes on with
        // the zeros allocated ahead of appends).
        let (key, val) = (
            format!("k{}", n - 1),
            format!("value {} {}", n - 1, "x".repeat(n - 1)),
        );
        let bytes = std::fs::read(&seg).unwrap();
        let at = bytes
            .windows(val.len())
            .rposition(|w| w == val.as_bytes())
            .unwrap();
        let last_start = (at - key.len() - REC_HEADER_LEN) as u64;
        let len = last_start + ((REC_HEADER_LEN + key.len() + val.len()).div_ceil(8) * 8) as u64;
        if !crashed {
            assert_eq!(bytes.len() as u64, len, "a clean close trims the segment");
        }
        if rng.gen_bool(0.5) {
            // Truncate somewhere inside the last record.
            let cut = rng.gen_range(last_start..len);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(cut)
                .unwrap();
        } else {
            // Flip a byte of the last record.
            let mut b = std::fs::read(&seg).unwrap();
            let at = rng.gen_range(last_start as usize..len as usize - 3);
            b[at] ^= 0x5a;
            std::fs::write(&seg, b).unwrap();
        }
        // The index would still point at the torn record: a real torn tail
        // comes with a power loss, after which the index is rebuilt.
        std::fs::remove_file(d.path().join("idx")).unwrap();
        let e = open(d.path(), 1 << 20);
        for i in 0..n - 1 {
            assert!(
                get(&e, format!("k{i}").as_bytes()).is_some(),
                "round {round}: k{i} lost"
            );
        }
        assert_eq!(
            get(&e, format!("k{}", n - 1).as_bytes()),
            None,
            "round {round}: torn record served"
        );
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            last_start,
            "round {round}: tail not cut exactly"
        );
    }
}

#[test]
fn lost_or_corrupt_index_is_rebuilt_with_the_same_data() {
    let d = tempfile::tempdir().unwrap();
    let fill = |e: &Engine| {
        for i in 0..3000u32 {
            e.commit(
                &[put(
                    format!("key-{i}").as_bytes(),
                    format!("v{i}").as_bytes(),
                )],
                false,
            )
            .unwrap();
        }
        for i in (0..3000u32).step_by(3) {
            e.commit(
                &[Op::Del {
                    key: format!("key-{i}").as_bytes(),
                }],
                false,
            )
            .unwrap();
        }
    };
    let check = |e: &Engine| {
        for i in 0..3000u32 {
            let want = if i % 3 == 0 {
                None
            } else {
                Some(format!("v{i}").into_bytes())
            };
            assert_eq!(get(e, format!("key-{i}").as_bytes()), want);
        }
    };
    let e = open(d.path(), 64 << 10);
    fill(&e);
    e.close().unwrap();
    let idx = d.path().join("idx");
    // 1. Deleted.
    std::fs::remove_file(&idx).unwrap();
    let e = open(d.path(), 64 << 10);
    assert!(matches!(e.open_how(), OpenHow::Rebuilt { .. }));
    check(&e);
    e.close().unwrap();
    // 2. Header garbage.
    let mut b = std::fs::read(&idx).unwrap();
    b[20] ^= 1;
    std::fs::write(&idx, &b).unwrap();
    let e = open(d.path(), 64 << 10);
    assert!(
        matches!(e.open_how(), OpenHow::Rebuilt { .. }),
        "{:?}",
        e.open_how()
    );
    check(&e);
    e.close().unwrap();
    // 3. A slot in the table flipped after a clean close.
    let mut b = std::fs::read(&idx).unwrap();
    let mid = b.len() / 2 + 9;
    b[mid] ^= 0xff;
    std::fs::write(&idx, &b).unwrap();
    let e = open(d.path(), 64 << 10);
    assert!(
        matches!(e.open_how(), OpenHow::Rebuilt { .. }),
        "{:?}",
        e.open_how()
    );
    check(&e);
    e.close().unwrap();
    // 4. Truncated file.
    let f = std::fs::OpenOptions::new().write(true).open(&idx).unwrap();
    f.set_len(1000).unwrap();
    let e = open(d.path(), 64 << 10);
    assert!(matches!(e.open_how(), OpenHow::Rebuilt { .. }));
    check(&e);
    e.close().unwrap();
    // 5. An index of another log.
    let other = tempfile::tempdir().unwrap();
    let o = open(other.path(), 64 << 10);
    o.commit(&[put(b"x", b"y")], true).unwrap();
    o.close().unwrap();
    std::fs::copy(other.path().join("idx"), &idx).unwrap();
    let e = open(d.path(), 64 << 10);
    assert!(matches!(e.open_how(), OpenHow::Rebuilt { .. }));
    check(&e);
    assert_eq!(get(&e, b"x"), None);
}

#[test]
fn compaction_keeps_space_amplification_under_1_5() {
    use rand::{Rng, SeedableRng};
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        segment_size: 256 << 10,
        compaction: true,
        max_space_amp: 1.25,
        tick: Duration::from_millis(1),
        // The background sync runs beside compaction and the writers.
        sync_interval: Some(Duration::from_millis(3)),
        ..Default::default()
    };
    let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let val = vec![7u8; 1000];
    let mut worst = 0f64;
    let mut live_keys = std::collections::HashSet::new();
    for round in 0..40 {
        // Steady state: ~2000 live keys; create, overwrite, delete.
        for _ in 0..500 {
            let k = rng.gen_range(0..2600u32);
            let key = format!("file-{k}");
            if rng.gen_bool(0.2) {
                e.commit(
                    &[Op::Del {
                        key: key.as_bytes(),
                    }],
                    false,
                )
                .unwrap();
                live_keys.remove(&k);
            } else {
                e.commit(&[put(key.as_bytes(), &val)], false).unwrap();
                live_keys.insert(k);
            }
        }
        if round >= 10 {
            // Let the background thread catch up (bounded: it works in steps).
            let mut st = e.stats();
            for _ in 0..2000 {
                if (st.segment_bytes as f64) < 1.5 * st.live_bytes as f64 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
                st = e.stats();
            }
            worst = worst.max(st.segment_bytes as f64 / st.live_bytes as f64);
        }
    }
    let st = e.stats();
    assert!(st.compacted > 0, "compaction never ran: {st:?}");
    assert!(
        worst < 1.5,
        "space amplification reached {worst:.2} ({st:?})"
    );
    assert_eq!(st.keys as usize, live_keys.len());
    e.close().unwrap();
    // Compacted data survives a rebuild from the log alone.
    std::fs::remove_file(d.path().join("idx")).unwrap();
    let e = open(d.path(), 256 << 10);
    for k in 0..2600u32 {
        let want = live_keys.contains(&k).then(|| val.clone());
        assert_eq!(get(&e, format!("file-{k}").as_bytes()), want, "file-{k}");
    }
}

#[test]
fn segments_roll_and_index_grows() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 64 << 10);
    for i in 0..20_000u32 {
        e.commit(&[put(&i.to_le_bytes(), &[1u8; 20])], false)
            .unwrap();
    }
    let st = e.stats();
    assert!(st.segments > 10, "{st:?}");
    // 16-byte slots, 76–90 % full between rehashes.
    assert!(st.index_bytes >= 4096 + 20_000 * 16, "{st:?}");
    assert!(st.index_bytes <= 4096 + 20_000 * 16 * 100 / 75, "{st:?}");
    e.abandon();
    let e = open(d.path(), 64 << 10);
    for i in (0..20_000u32).step_by(97) {
        assert_eq!(get(&e, &i.to_le_bytes()), Some(vec![1u8; 20]));
    }
    assert_eq!(e.stats().keys, 20_000);
    assert!(!d.path().join(seg_name(0)).exists());
}

/// A log with dead bytes to compact rolls segments scaled to its live
/// bytes (compaction can reclaim only sealed ones): small for a small
/// store, larger for a larger one; a log with few dead bytes (being
/// filled) rolls at the engine's segment size.
#[test]
fn segments_scale_with_the_live_bytes() {
    const MIB: u64 = 1 << 20;
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        lanes: 1,
        ..opts(64 * MIB)
    };
    let reopen = |e: Engine| {
        e.close().unwrap();
        Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap()
    };
    let lens = || -> Vec<u64> {
        segments(d.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect()
    };
    let val = vec![7u8; 64 << 10];
    let put_all = |e: &Engine, keys: std::ops::Range<u32>| {
        for i in keys {
            e.commit(&[put(&i.to_le_bytes(), &val)], false).unwrap();
        }
    };
    // The lengths of the segment files `keys` added.
    let new_segments = |e: &Engine, keys: std::ops::Range<u32>| -> Vec<u64> {
        let before = segments(d.path()).len();
        put_all(e, keys);
        lens()[before..].to_vec()
    };
    let mut e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap();
    assert_eq!(e.stats().segment_size, 64 * MIB);
    // 20 MiB written twice: as many dead bytes as live ones.
    put_all(&e, 0..320);
    put_all(&e, 0..320);
    e = reopen(e);
    assert_eq!(e.stats().segment_size, MIB);
    let new = new_segments(&e, 320..640);
    assert!(new.len() >= 5, "{new:?}");
    assert!(new.iter().all(|&l| l <= MIB), "{new:?}");
    // 280 MiB live, 20 MiB dead: filling, full-size segments.
    put_all(&e, 640..4480);
    e = reopen(e);
    assert_eq!(e.stats().segment_size, 64 * MIB);
    // 64 MiB rewritten: 84 MiB dead, segments of a 32nd of 280 MiB.
    put_all(&e, 0..1024);
    e = reopen(e);
    assert_eq!(e.stats().segment_size, 8 * MIB);
    let new = new_segments(&e, 4480..4800);
    assert!(new.len() >= 2, "{new:?}");
    assert!(new[0] > 4 * MIB && new[0] <= 8 * MIB, "{new:?}");
    drop(e);
    let e = open(d.path(), 64 * MIB);
    for i in (0..4800u32).step_by(61) {
        assert_eq!(get(&e, &i.to_le_bytes()).as_deref(), Some(&val[..]), "{i}");
    }
}

/// Writers are slowed while compaction is behind, and only they: the
/// background thread is kept from running (a tick of an hour), so only
/// the writers' own checks (a commit that writes values every
/// [`SLOW_CHECK_EVERY`]) and the test's decide when the engine looks at
/// its log.
#[test]
fn writes_are_slowed_while_compaction_is_behind() {
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        compaction: true,
        tick: Duration::from_secs(3600),
        ..opts(64 << 10)
    };
    let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o).unwrap();
    let val = vec![3u8; 4096];
    // 800 KiB live, rewritten until the dead bytes pass the slack of 8
    // segments and nine twentieths of the live ones: the writers see it
    // themselves, with no background tick, and the writes after it wait.
    for i in 0..200u32 {
        e.commit(&[put(&i.to_le_bytes(), &val)], false).unwrap();
    }
    assert!(!e.writes_slowed());
    for i in 0..384u32 {
        e.commit(&[put(&(i % 200).to_le_bytes(), &val)], false)
            .unwrap();
    }
    // A check is due by now: the next write makes it, and waits.
    std::thread::sleep(SLOW_CHECK_EVERY * 2);
    e.commit(&[put(&0u32.to_le_bytes(), &val)], false).unwrap();
    let st = e.stats();
    assert!(st.writes_slowed && e.writes_slowed(), "{st:?}");
    assert!(st.slowed_commits > 0, "{st:?}");
    // A write waits, and is counted; a delete is never slowed.
    let n = st.slowed_commits;
    e.commit(&[put(b"new", &val)], false).unwrap();
    e.commit(&[Op::Del { key: b"new" }], false).unwrap();
    assert_eq!(e.stats().slowed_commits, n + 1);
    // Compaction catches up: writers go at full speed again.
    e.compact_now().unwrap();
    e.check_slowdown();
    let st = e.stats();
    assert!(!st.writes_slowed, "{st:?}");
    assert!(
        (st.segment_bytes as f64) < 1.5 * st.live_bytes as f64,
        "{st:?}"
    );
    // 64 rewrites (256 KiB dead, within the slack), one check due.
    for _ in 0..64 {
        e.commit(&[put(b"new", &val)], false).unwrap();
    }
    std::thread::sleep(SLOW_CHECK_EVERY * 2);
    e.commit(&[put(b"new", &val)], false).unwrap();
    assert_eq!(e.stats().slowed_commits, n + 1);
    for i in 0..200u32 {
        assert_eq!(get(&e, &i.to_le_bytes()).as_deref(), Some(&val[..]));
    }
}

/// A tombstone counts for compaction (as bytes it must keep) until its
/// key is put again, which makes it obsolete: then it stops counting at
/// once, not when compaction next reads its segment.
#[test]
fn obsolete_tombstones_stop_counting() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    let val = vec![5u8; 100];
    for i in 0..100u32 {
        e.commit(&[put(&i.to_le_bytes(), &val)], false).unwrap();
    }
    assert_eq!(e.stats().tomb_bytes, 0);
    for i in 0..100u32 {
        e.commit(&[del(&i.to_le_bytes())], false).unwrap();
    }
    // A tombstone: its header and its 4-byte key, padded to 8 bytes.
    let tomb = ((REC_HEADER_LEN + 4 + 7) & !7) as u64;
    assert_eq!(e.stats().tomb_bytes, 100 * tomb);
    for i in 0..40u32 {
        e.commit(&[put(&i.to_le_bytes(), &val)], false).unwrap();
    }
    assert_eq!(e.stats().tomb_bytes, 60 * tomb);
    // Compaction keeps what is needed and reads the same.
    e.compact_now().unwrap();
    for i in 0..100u32 {
        let want = (i < 40).then_some(&val[..]);
        assert_eq!(get(&e, &i.to_le_bytes()).as_deref(), want, "{i}");
    }
    drop(e);
    let e = open(d.path(), 1 << 20);
    for i in 0..100u32 {
        let want = (i < 40).then_some(&val[..]);
        assert_eq!(get(&e, &i.to_le_bytes()).as_deref(), want, "{i}");
    }
}

/// A crash while the background thread compacts in batches (several
/// segments copied, then one sync, then their deletes) loses no write:
/// writers keep rewriting a 20 MiB store while compaction runs, the
/// engine is abandoned as a killed process leaves it (page cache kept, no
/// sync, index dirty) once compaction has dropped segments, and every key
/// reads back its last value, with the index kept and rebuilt.
#[test]
fn a_crash_during_batched_compaction_loses_nothing() {
    const MIB: u64 = 1 << 20;
    for round in 0..3u32 {
        let d = tempfile::tempdir().unwrap();
        let o = EngineOptions {
            compaction: true,
            tick: Duration::from_millis(1),
            ..opts(64 * MIB)
        };
        let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap();
        let value = |k: u32, v: u32| {
            let mut b = vec![(k ^ v) as u8; 4096];
            b[..4].copy_from_slice(&k.to_le_bytes());
            b[4..8].copy_from_slice(&v.to_le_bytes());
            b
        };
        let mut last = vec![0u32; 5000];
        for k in 0..5000u32 {
            e.commit(&[put(&k.to_le_bytes(), &value(k, 0))], false)
                .unwrap();
        }
        // Rewrites until compaction has dropped segments (bounded), then
        // a few more rounds' worth so that the crash falls among batches.
        let mut v = 0u32;
        let mut extra = None;
        for n in 0..200_000u32 {
            let k = (n.wrapping_mul(2_654_435_761) >> 7) % 5000;
            v += 1;
            e.commit(&[put(&k.to_le_bytes(), &value(k, v))], false)
                .unwrap();
            last[k as usize] = v;
            if extra.is_none() && e.stats().compacted >= 8 {
                extra = Some(n + 2000 * (round + 1));
            }
            if extra.is_some_and(|x| n >= x) {
                break;
            }
        }
        let st = e.stats();
        assert!(st.compacted >= 8, "compaction never caught up: {st:?}");
        e.abandon();
        for drop_index in [false, true] {
            if drop_index {
                std::fs::remove_file(d.path().join("idx")).unwrap();
            }
            let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap();
            for k in 0..5000u32 {
                assert_eq!(
                    get(&e, &k.to_le_bytes()),
                    Some(value(k, last[k as usize])),
                    "round {round}, key {k}, index dropped: {drop_index}"
                );
            }
            e.abandon();
        }
    }
}

#[derive(Clone, Debug)]
enum ModelOp {
    Put(u8, u16),
    Del(u8),
    Batch(Vec<(u8, Option<u16>)>),
    Reopen { crash: bool, drop_index: bool },
    Compact,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        6 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| ModelOp::Put(k % 40, v)),
        3 => any::<u8>().prop_map(|k| ModelOp::Del(k % 40)),
        2 => prop::collection::vec((any::<u8>(), prop::option::of(any::<u16>())), 1..5)
            .prop_map(|v| ModelOp::Batch(v.into_iter().map(|(k, x)| (k % 40, x)).collect())),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(crash, drop_index)| ModelOp::Reopen { crash, drop_index }),
        1 => Just(ModelOp::Compact),
    ]
}

fn value_of(k: u8, v: u16) -> Vec<u8> {
    // Sizes vary so records straddle segment ends.
    let mut out = vec![k; (v as usize % 300) + 1];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_a_btreemap_model(ops in prop::collection::vec(model_op(), 1..120)) {
        let d = tempfile::tempdir().unwrap();
        let mut e = Some(open(d.path(), 4096));
        let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for op in ops {
            let eng = e.as_ref().unwrap();
            match op {
                ModelOp::Put(k, v) => {
                    let val = value_of(k, v);
                    eng.commit(&[put(&[k], &val)], false).unwrap();
                    model.insert(k, val);
                }
                ModelOp::Del(k) => {
                    eng.commit(&[Op::Del { key: &[k] }], false).unwrap();
                    model.remove(&k);
                }
                ModelOp::Batch(items) => {
                    let keys: Vec<[u8; 1]> = items.iter().map(|(k, _)| [*k]).collect();
                    let vals: Vec<Vec<u8>> = items.iter().map(|(k, v)| v.map(|v| value_of(*k, v)).unwrap_or_default()).collect();
                    let ops: Vec<Op<'_>> = items.iter().enumerate().map(|(i, (_, v))| match v {
                        Some(_) => put(&keys[i], &vals[i]),
                        None => Op::Del { key: &keys[i] },
                    }).collect();
                    eng.commit(&ops, false).unwrap();
                    for (i, (k, v)) in items.iter().enumerate() {
                        match v {
                            Some(_) => { model.insert(*k, vals[i].clone()); }
                            None => { model.remove(k); }
                        }
                    }
                }
                ModelOp::Reopen { crash, drop_index } => {
                    let eng = e.take().unwrap();
                    if crash { eng.abandon() } else { eng.close().unwrap() }
                    if drop_index {
                        std::fs::remove_file(d.path().join("idx")).unwrap();
                    }
                    e = Some(open(d.path(), 4096));
                }
                ModelOp::Compact => {
                    eng.seal_active().unwrap();
                    eng.compact_now().unwrap();
                }
            }
            let eng = e.as_ref().unwrap();
            for k in 0..40u8 {
                prop_assert_eq!(get(eng, &[k]), model.get(&k).cloned(), "key {}", k);
            }
        }
    }
}

#[test]
fn deletes_shrink_the_index_and_every_key_survives_rehashes() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    for i in 0..30_000u32 {
        e.commit(&[put(&i.to_le_bytes(), &i.to_be_bytes())], false)
            .unwrap();
    }
    let full = e.stats().index_bytes;
    for i in 0..28_000u32 {
        e.commit(&[del(&i.to_le_bytes())], false).unwrap();
    }
    e.compact_now().unwrap();
    let st = e.stats();
    assert_eq!(st.keys, 2_000);
    assert!(st.index_bytes * 4 < full, "{st:?} (was {full} bytes)");
    for i in (0..30_000u32).step_by(7) {
        let want = (i >= 28_000).then(|| i.to_be_bytes().to_vec());
        assert_eq!(get(&e, &i.to_le_bytes()), want, "key {i}");
    }
    e.abandon();
    let e = open(d.path(), 1 << 20);
    assert_eq!(e.stats().keys, 2_000);
    assert_eq!(
        get(&e, &29_999u32.to_le_bytes()),
        Some(29_999u32.to_be_bytes().to_vec())
    );
}

#[test]
fn records_too_long_for_a_slot_are_read_through_their_header() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 8 << 20);
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    e.commit(&[put(b"big", &big), put(b"small", b"s")], false)
        .unwrap();
    assert_eq!(get(&e, b"big"), Some(big.clone()));
    let live = e.stats().live_bytes;
    assert!(live > 1 << 20, "{live}");
    // Overwriting frees the long record's bytes in the live count.
    e.commit(&[put(b"big", b"now short")], false).unwrap();
    assert!(e.stats().live_bytes < 4096, "{:?}", e.stats());
    e.commit(&[put(b"big", &big)], false).unwrap();
    e.close().unwrap();
    let e = open(d.path(), 8 << 20);
    assert_eq!(get(&e, b"big"), Some(big));
    assert_eq!(e.stats().live_bytes, live);
    let tags = e.collect(|t| t == 1, None).unwrap();
    assert_eq!(tags.len(), 2);
}

#[test]
fn tags_over_the_slot_limit_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 1 << 20);
    let err = e
        .commit(
            &[Op::Put {
                key: b"k",
                value: b"v",
                tag: 16,
                group: 0,
            }],
            false,
        )
        .unwrap_err();
    assert!(err.to_string().contains("tag 16"), "{err}");
    assert_eq!(get(&e, b"k"), None);
}

/// Several threads commit to the same keys at once, so their commits land
/// in different lanes of the log; a crash (replay from the checkpoint) and
/// a lost index (rebuild from every lane) must both give back exactly what
/// the engine served before.
#[test]
fn lanes_merge_by_sequence_after_a_crash_and_a_rebuild() {
    for round in 0..4u64 {
        let d = tempfile::tempdir().unwrap();
        let e = std::sync::Arc::new(open(d.path(), 64 << 10));
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for i in 0..3000u64 {
                        let k = format!("key{}", (i * 7 + t * 13 + round) % 97);
                        if (i + t) % 5 == 0 {
                            e.commit(&[Op::Del { key: k.as_bytes() }], false).unwrap();
                        } else {
                            let v = format!("t{t} i{i}");
                            e.commit(&[put(k.as_bytes(), v.as_bytes())], false).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let e = std::sync::Arc::try_unwrap(e).ok().unwrap();
        let lanes: std::collections::BTreeSet<u32> = segments(d.path())
            .iter()
            .map(|p| {
                let b = std::fs::read(p).unwrap();
                u32::from_le_bytes([b[24], b[25], b[26], b[27]])
            })
            .collect();
        let want: BTreeMap<String, Option<Vec<u8>>> = (0..97)
            .map(|k| {
                let k = format!("key{k}");
                let v = get(&e, k.as_bytes());
                (k, v)
            })
            .collect();
        e.abandon();
        let e = open(d.path(), 64 << 10);
        assert!(
            matches!(e.open_how(), OpenHow::Replayed { .. } | OpenHow::Clean),
            "{:?}",
            e.open_how()
        );
        for (k, v) in &want {
            assert_eq!(
                &get(&e, k.as_bytes()),
                v,
                "round {round}, after a crash: {k}"
            );
        }
        e.close().unwrap();
        std::fs::remove_file(d.path().join("idx")).unwrap();
        let e = open(d.path(), 64 << 10);
        assert!(matches!(e.open_how(), OpenHow::Rebuilt { .. }));
        for (k, v) in &want {
            assert_eq!(
                &get(&e, k.as_bytes()),
                v,
                "round {round}, rebuilt: {k} (lanes {lanes:?})"
            );
        }
        if round == 3 {
            assert!(lanes.len() > 1, "the threads never used a second lane");
        }
    }
}

/// Each record of a segment file: (offset, sequence number, total length).
fn records_of(seg: &Path) -> Vec<(usize, u64, usize)> {
    let b = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut at = 32;
    while at + 32 <= b.len() && b[at..at + 4] == *b"SLR1" {
        let u32_at = |o: usize| u32::from_le_bytes(b[at + o..at + o + 4].try_into().unwrap());
        let seq = u64::from_le_bytes(b[at + 16..at + 24].try_into().unwrap());
        let len = (32 + u32_at(8) as usize + u32_at(12) as usize).div_ceil(8) * 8;
        out.push((at, seq, len));
        at += len;
    }
    out
}

/// A power loss after a group commit: the lanes reached the disk up to
/// different points. Recovery keeps what the sync covered and, past it,
/// only commits numbered without a gap, cutting the rest from every lane.
#[test]
fn after_a_power_loss_the_lanes_keep_a_prefix_of_the_commits() {
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        // Lazy durability (the `fsync` policy) keeps the sync marker.
        sync_interval: Some(Duration::from_secs(3600)),
        ..opts(64 << 20)
    };
    let e = std::sync::Arc::new(
        Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap(),
    );
    let write_all = |e: &std::sync::Arc<Engine>, phase: u32| {
        let hs: Vec<_> = (0..4u32)
            .map(|t| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let k = format!("k{}", (i * 3 + t) % 500);
                        let v = format!("phase {phase} t{t} i{i}");
                        e.commit(&[put(k.as_bytes(), v.as_bytes())], false).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    };
    write_all(&e, 1);
    e.sync().unwrap();
    let synced: BTreeMap<String, Option<Vec<u8>>> = (0..500)
        .map(|k| (format!("k{k}"), get(&e, format!("k{k}").as_bytes())))
        .collect();
    write_all(&e, 2);
    std::sync::Arc::try_unwrap(e).ok().unwrap().abandon();

    // The first commit after the sync never reached the disk.
    let m = std::fs::read(d.path().join("log/synced")).unwrap();
    let marker = u64::from_le_bytes(m[..8].try_into().unwrap());
    let mut lanes_after = 0;
    for seg in segments(d.path()) {
        let recs = records_of(&seg);
        if recs.iter().any(|r| r.1 >= marker) {
            lanes_after += 1;
        }
        if let Some(&(at, _, len)) = recs.iter().find(|r| r.1 == marker) {
            let mut b = std::fs::read(&seg).unwrap();
            b[at..at + len].fill(0);
            std::fs::write(&seg, b).unwrap();
        }
    }
    assert!(lanes_after > 1, "phase 2 used one lane only");
    // And the machine restarted: the index says another boot wrote it.
    let idx = d.path().join("idx");
    index_from_another_boot(&idx);

    let e = Engine::open(&d.path().join("log"), &idx, o).unwrap();
    assert!(
        matches!(e.open_how(), OpenHow::Rebuilt { .. }),
        "{:?}",
        e.open_how()
    );
    for (k, v) in &synced {
        assert_eq!(&get(&e, k.as_bytes()), v, "{k}");
    }
    for seg in segments(d.path()) {
        assert!(
            records_of(&seg).iter().all(|r| r.1 < marker),
            "{} keeps commits past the gap",
            seg.display()
        );
    }
    // Writable, and what it writes survives a clean restart.
    e.commit(&[put(b"after", b"yes")], false).unwrap();
    e.close().unwrap();
    let e = open(d.path(), 64 << 20);
    assert_eq!(get(&e, b"after"), Some(b"yes".to_vec()));
}

/// Makes the index header say that another boot wrote it.
fn index_from_another_boot(idx: &Path) {
    let mut h = std::fs::read(idx).unwrap();
    h[32] ^= 0xff;
    let crc = crc32c::crc32c(&h[..196]);
    h[196..200].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(idx, h).unwrap();
}

/// Makes the sync marker say that another boot wrote it.
fn marker_from_another_boot(log: &Path) {
    let p = log.join("synced");
    let mut m = std::fs::read(&p).unwrap();
    m[8] ^= 0xff;
    let crc = crc32c::crc32c(&m[..16]);
    m[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p, m).unwrap();
}

/// A power loss can also take the index file itself (it is not synced):
/// the marker from the earlier boot still makes recovery keep a prefix.
/// Commits made after a cut that deleted segments survive a crash.
#[test]
fn a_power_loss_that_took_the_index_still_keeps_a_prefix() {
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        sync_interval: Some(Duration::from_secs(3600)),
        // No checkpoint runs: a crash replays from the open.
        tick: Duration::from_secs(3600),
        lanes: 1,
        ..opts(32 + 4096)
    };
    let open = |o: &EngineOptions| {
        Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap()
    };
    let e = open(&o);
    let v = vec![7u8; 300];
    for i in 0..20u32 {
        e.commit(&[put(format!("a{i}").as_bytes(), &v)], false)
            .unwrap();
    }
    e.sync().unwrap();
    for i in 0..60u32 {
        e.commit(&[put(format!("b{i}").as_bytes(), &v)], false)
            .unwrap();
    }
    e.abandon();
    let m = std::fs::read(d.path().join("log/synced")).unwrap();
    let marker = u64::from_le_bytes(m[..8].try_into().unwrap());
    let before = segments(d.path()).len();
    for seg in segments(d.path()) {
        if let Some(&(at, _, _)) = records_of(&seg).iter().find(|r| r.1 == marker) {
            let mut b = std::fs::read(&seg).unwrap();
            b.truncate(at);
            std::fs::write(&seg, b).unwrap();
        }
    }
    marker_from_another_boot(&d.path().join("log"));
    let idx = d.path().join("idx");
    let len = std::fs::metadata(&idx).unwrap().len();
    std::fs::write(&idx, vec![0u8; len as usize]).unwrap();

    let e = open(&o);
    assert!(
        matches!(e.open_how(), OpenHow::Rebuilt { .. }),
        "{:?}",
        e.open_how()
    );
    assert!(
        segments(d.path()).len() < before,
        "the cut deleted no segment"
    );
    for i in 0..20u32 {
        assert_eq!(get(&e, format!("a{i}").as_bytes()), Some(v.clone()), "a{i}");
    }
    for i in 0..60u32 {
        assert_eq!(
            get(&e, format!("b{i}").as_bytes()),
            None,
            "b{i} survived the gap"
        );
    }
    for i in 0..60u32 {
        e.commit(&[put(format!("c{i}").as_bytes(), &v)], false)
            .unwrap();
    }
    e.abandon();
    let e = open(&o);
    for i in 0..60u32 {
        assert_eq!(
            get(&e, format!("c{i}").as_bytes()),
            Some(v.clone()),
            "c{i} lost"
        );
    }
    assert_eq!(get(&e, b"a0"), Some(v));
}

/// A power loss tore a record in a lane's sealed but un-synced segment:
/// it is cut off like a torn tail, so compaction can still read every
/// segment through.
#[test]
fn a_record_torn_in_a_sealed_segment_by_a_power_loss_is_cut() {
    let d = tempfile::tempdir().unwrap();
    let o = EngineOptions {
        sync_interval: Some(Duration::from_secs(3600)),
        lanes: 1,
        ..opts(32 + 4096)
    };
    let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o.clone()).unwrap();
    let v = vec![7u8; 300];
    for i in 0..20u32 {
        e.commit(&[put(format!("a{i}").as_bytes(), &v)], false)
            .unwrap();
    }
    e.sync().unwrap();
    for i in 0..100u32 {
        e.commit(&[put(format!("b{i}").as_bytes(), &v)], false)
            .unwrap();
    }
    e.abandon();
    let m = std::fs::read(d.path().join("log/synced")).unwrap();
    let marker = u64::from_le_bytes(m[..8].try_into().unwrap());
    let segs = segments(d.path());
    let hit = segs
        .iter()
        .position(|s| records_of(s).iter().any(|r| r.1 == marker))
        .unwrap();
    assert!(
        hit + 1 < segs.len(),
        "the lost record is in the last segment"
    );
    let mut b = std::fs::read(&segs[hit]).unwrap();
    let &(at, _, len) = records_of(&segs[hit])
        .iter()
        .find(|r| r.1 == marker)
        .unwrap();
    b[at..at + len].fill(0);
    std::fs::write(&segs[hit], b).unwrap();
    marker_from_another_boot(&d.path().join("log"));
    index_from_another_boot(&d.path().join("idx"));

    let e = Engine::open(&d.path().join("log"), &d.path().join("idx"), o).unwrap();
    for i in 0..20u32 {
        assert_eq!(get(&e, format!("a{i}").as_bytes()), Some(v.clone()), "a{i}");
    }
    for seg in segments(d.path()) {
        assert!(
            records_of(&seg).iter().all(|r| r.1 < marker),
            "{}",
            seg.display()
        );
        let recs = records_of(&seg);
        let end = recs.last().map_or(32, |r| r.0 + r.2) as u64;
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            end,
            "{}",
            seg.display()
        );
    }
    e.compact_now().unwrap();
}

#[test]
fn shared_values_outlive_their_key_their_segment_and_the_engine() {
    let d = tempfile::tempdir().unwrap();
    let e = open(d.path(), 64 << 10);
    let value = |i: u32| -> Vec<u8> { (0..3000u32).map(|b| (b * 7 + i) as u8).collect() };
    for i in 0..100u32 {
        e.commit(&[put(&i.to_le_bytes(), &value(i))], false)
            .unwrap();
    }
    let first = segments(d.path())[0].clone();
    // Whole values and parts of them, taken without a copy.
    // Keys 0..10 lie in sealed segments, 95..100 in a lane's active one.
    let kept: Vec<(u32, bytes::Bytes, bytes::Bytes)> = (0..10u32)
        .chain(95..100)
        .map(|i| {
            e.get_shared(&i.to_le_bytes(), |v, _, b| {
                let (whole, part) = (b.share(v), b.share(&v[100..200]));
                // Views of the log, not copies.
                assert_eq!(whole.as_ptr(), v.as_ptr());
                assert_eq!(part.as_ptr(), v[100..].as_ptr());
                (i, whole, part)
            })
            .unwrap()
            .unwrap()
        })
        .collect();
    // A slice that is not part of the value is copied, not refused.
    let other = [1u8, 2, 3];
    let copied = e
        .get_shared(&0u32.to_le_bytes(), |_, _, b| b.share(&other))
        .unwrap()
        .unwrap();
    assert_eq!(copied, &other[..]);
    for i in 0..100u32 {
        e.commit(&[del(&i.to_le_bytes())], false).unwrap();
    }
    e.seal_active().unwrap();
    e.compact_now().unwrap();
    assert!(
        !segments(d.path()).contains(&first),
        "the first segment should be compacted away"
    );
    e.close().unwrap();
    for (i, whole, part) in kept {
        assert_eq!(whole, value(i), "value {i}");
        assert_eq!(part, value(i)[100..200], "part of value {i}");
    }
}
