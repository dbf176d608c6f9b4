//! The inode table: FUSE node ids ↔ SealFS paths.
//!
//! The kernel names files by node id; the client library names them by
//! absolute path. The node id of a file is its server-assigned inode number
//! (stable across renames, never reused; the root is 1 on both sides), so
//! the kernel's `st_ino` is the one the shim and the CLI report.
//!
//! Invariants:
//! * a node is in the table while the kernel holds lookups on it
//!   (`lookups > 0`) or a file handle is open on it (`open > 0`);
//! * `path` is the node's current name as far as this daemon knows: renames
//!   made through this mount rewrite it (and every descendant's path);
//! * a node unlinked while open has been moved to a hidden name
//!   ([`HIDDEN_DIR`]`/<ino>.<daemon pid>`) and has `hidden == true`; its last release
//!   removes that name (libfuse's `hard_remove=off` behaviour).

use std::collections::{HashMap, HashSet};

/// The directory (at the SealFS root) that holds files unlinked while open.
/// It is never listed and never found by lookup through the mount.
pub const HIDDEN_DIR: &str = "/.sealfs-hidden";
/// [`HIDDEN_DIR`]'s name in the root directory.
pub const HIDDEN_NAME: &str = ".sealfs-hidden";

/// FUSE's node id of the root directory (also the server's root ino).
pub const ROOT: u64 = 1;

/// One node the kernel knows.
#[derive(Clone, Debug)]
pub struct Node {
    /// Current absolute SealFS path.
    pub path: String,
    /// Kernel lookups not yet forgotten.
    pub lookups: u64,
    /// Open file handles.
    pub open: u32,
    /// Unlinked while open: `path` is a hidden name to remove on last release.
    pub hidden: bool,
    /// A directory (its renames rewrite the paths below it).
    pub dir: bool,
}

/// The table. Not synchronised itself: the file system keeps it in a mutex
/// and never holds that across a network call.
#[derive(Debug)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    /// The nodes with `open > 0`: an unlink or a rename looks for an open
    /// node at its path, and scanning every node the kernel holds (50 000
    /// after a big create) cost more than the unlink itself.
    open_ids: HashSet<u64>,
    /// Node ids by path, for the nodes that are not hidden: a rename finds
    /// the node it moves without a scan (only a directory's rename walks
    /// the table, for the paths below it).
    by_path: HashMap<String, Vec<u64>>,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// A table that knows the root.
    pub fn new() -> Table {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: "/".to_string(),
                lookups: 1,
                open: 0,
                hidden: false,
                dir: true,
            },
        );
        Table {
            nodes,
            open_ids: HashSet::new(),
            by_path: HashMap::from([("/".to_string(), vec![ROOT])]),
        }
    }

    fn index(&mut self, path: &str, id: u64) {
        let ids = self.by_path.entry(path.to_string()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    fn unindex(&mut self, path: &str, id: u64) {
        if let Some(ids) = self.by_path.get_mut(path) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_path.remove(path);
            }
        }
    }

    /// The node `id`, if the kernel still holds it.
    pub fn get(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The current path of node `id`.
    pub fn path(&self, id: u64) -> Option<String> {
        self.nodes.get(&id).map(|n| n.path.clone())
    }

    /// Records one kernel lookup of `id` (a directory if `dir`) at `path`
    /// (a reply that hands the kernel an entry counts as one).
    pub fn looked_up(&mut self, id: u64, path: &str, dir: bool) {
        let n = self.nodes.entry(id).or_insert_with(|| Node {
            path: path.to_string(),
            lookups: 0,
            open: 0,
            hidden: false,
            dir,
        });
        n.lookups += 1;
        if n.hidden {
            return;
        }
        let old = std::mem::replace(&mut n.path, path.to_string());
        if old != path {
            self.unindex(&old, id);
        }
        self.index(path, id);
    }

    /// The kernel forgot `count` lookups of `id`. Returns the node if it
    /// left the table.
    pub fn forget(&mut self, id: u64, count: u64) -> Option<Node> {
        if id == ROOT {
            return None;
        }
        let n = self.nodes.get_mut(&id)?;
        n.lookups = n.lookups.saturating_sub(count);
        if n.lookups == 0 && n.open == 0 {
            return self.remove(id);
        }
        None
    }

    /// A file handle was opened on `id`.
    pub fn opened(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.open += 1;
            self.open_ids.insert(id);
        }
    }

    /// A file handle on `id` was released. Returns the hidden path to
    /// remove when this was the last handle of a node unlinked while open.
    pub fn released(&mut self, id: u64) -> Option<String> {
        let n = self.nodes.get_mut(&id)?;
        n.open = n.open.saturating_sub(1);
        if n.open > 0 {
            return None;
        }
        self.open_ids.remove(&id);
        let hidden = n.hidden.then(|| n.path.clone());
        if n.lookups == 0 {
            self.remove(id);
        }
        hidden
    }

    /// The open node that the table believes lives at `path`, if any. (A
    /// node whose name was removed or replaced may still carry the old path
    /// until the kernel forgets it; only open nodes matter here.)
    pub fn find_open(&self, path: &str) -> Option<u64> {
        self.open_ids.iter().copied().find(|id| {
            self.nodes
                .get(id)
                .is_some_and(|n| !n.hidden && n.open > 0 && n.path == path)
        })
    }

    fn remove(&mut self, id: u64) -> Option<Node> {
        let n = self.nodes.remove(&id)?;
        self.open_ids.remove(&id);
        if !n.hidden {
            self.unindex(&n.path, id);
        }
        Some(n)
    }

    /// `from` was renamed to `to`: rewrite the paths of the node at `from`
    /// and, when it is a directory, of everything below it.
    pub fn renamed(&mut self, from: &str, to: &str) {
        let moved = self.by_path.remove(from).unwrap_or_default();
        let mut any_dir = false;
        for id in moved {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.path = to.to_string();
                any_dir |= n.dir;
                self.index(to, id);
            }
        }
        if !any_dir {
            return;
        }
        let prefix = format!("{}/", from.trim_end_matches('/'));
        let below: Vec<String> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        for old in below {
            let new = format!("{}/{}", to.trim_end_matches('/'), &old[prefix.len()..]);
            for id in self.by_path.remove(&old).unwrap_or_default() {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.path = new.clone();
                    self.index(&new, id);
                }
            }
        }
    }

    /// Node `id` now lives at the hidden name `path`.
    pub fn hide(&mut self, id: u64, path: String) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut n.path, path);
        let was_hidden = std::mem::replace(&mut n.hidden, true);
        if !was_hidden {
            self.unindex(&old, id);
        }
    }
}

/// `dir/name` for an absolute directory path.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_rewrites_descendants() {
        let mut t = Table::new();
        t.looked_up(10, "/a", true);
        t.looked_up(11, "/a/b", true);
        t.looked_up(12, "/a/b/c", false);
        t.looked_up(13, "/ab", false);
        t.renamed("/a", "/z");
        assert_eq!(t.path(10).unwrap(), "/z");
        assert_eq!(t.path(11).unwrap(), "/z/b");
        assert_eq!(t.path(12).unwrap(), "/z/b/c");
        assert_eq!(t.path(13).unwrap(), "/ab");
        // A file's rename moves that node only; the index follows.
        t.renamed("/z/b/c", "/c2");
        assert_eq!(t.path(12).unwrap(), "/c2");
        t.renamed("/z", "/y");
        assert_eq!(t.path(11).unwrap(), "/y/b");
        assert_eq!(t.path(12).unwrap(), "/c2");
        // A node that left the table is no longer renamed.
        assert!(t.forget(11, 1).is_some());
        t.renamed("/y", "/x");
        assert_eq!(t.path(10).unwrap(), "/x");
        t.looked_up(11, "/x/b", true);
        assert_eq!(t.path(11).unwrap(), "/x/b");
        // A hidden node keeps its hidden name through renames.
        t.opened(12);
        t.hide(12, format!("{HIDDEN_DIR}/12"));
        t.renamed("/c2", "/c3");
        assert_eq!(t.path(12).unwrap(), format!("{HIDDEN_DIR}/12"));
    }

    #[test]
    fn find_open_sees_only_open_unhidden_nodes() {
        let mut t = Table::new();
        for i in 10..1000 {
            t.looked_up(i, &format!("/f{i}"), false);
        }
        assert_eq!(t.find_open("/f20"), None);
        t.opened(20);
        t.opened(20);
        assert_eq!(t.find_open("/f20"), Some(20));
        assert_eq!(t.released(20), None);
        assert_eq!(t.find_open("/f20"), Some(20));
        assert_eq!(t.released(20), None);
        assert_eq!(t.find_open("/f20"), None);
        t.opened(30);
        t.hide(30, format!("{HIDDEN_DIR}/30"));
        assert_eq!(t.find_open("/f30"), None);
        t.opened(40);
        t.renamed("/f40", "/g");
        assert_eq!(t.find_open("/g"), Some(40));
    }

    #[test]
    fn forget_and_release_keep_open_nodes() {
        let mut t = Table::new();
        t.looked_up(10, "/f", false);
        t.opened(10);
        assert!(t.forget(10, 1).is_none());
        assert!(t.get(10).is_some());
        t.hide(10, format!("{HIDDEN_DIR}/10"));
        assert_eq!(t.released(10).as_deref(), Some("/.sealfs-hidden/10"));
        assert!(t.get(10).is_none());
        assert!(t.forget(ROOT, 1).is_none());
        assert!(t.get(ROOT).is_some());
    }

    #[test]
    fn child_paths() {
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
    }
}
