//! Files survive a restart of every server and of the manager (SIGKILL, no
//! clean shutdown), with the default sync policy after an fsync.

mod common;

use common::{ids, Cluster, Opts};

#[test]
fn files_survive_killing_the_whole_cluster() {
    let mut cl = Cluster::start(Opts::default());
    let (uid, gid) = ids();
    let mut inos = Vec::new();
    {
        let c = cl.client();
        c.mkdir("/keep", 0o750, uid, gid).unwrap();
        c.mkdir("/keep/sub", 0o755, uid, gid).unwrap();
        for i in 0..100 {
            let p = format!("/keep/sub/f{i}");
            c.write_file(&p, format!("content {i}").repeat(i + 1).as_bytes(), 0o640)
                .unwrap();
            let ino = c.lstat(&p).unwrap().attr.ino;
            c.fsync(&p, ino).unwrap();
            inos.push(ino);
        }
        c.symlink("sub/f1", "/keep/link", uid, gid).unwrap();
    }
    cl.restart_all();
    let c = cl.client();
    assert_eq!(c.lstat("/keep").unwrap().attr.mode, 0o750);
    assert_eq!(c.readdir("/keep/sub").unwrap().len(), 100);
    for (i, ino) in inos.iter().enumerate() {
        let p = format!("/keep/sub/f{i}");
        assert_eq!(
            c.read_file(&p).unwrap(),
            format!("content {i}").repeat(i + 1).as_bytes()
        );
        let a = c.lstat(&p).unwrap().attr;
        assert_eq!(a.ino, *ino, "inode numbers are stable across restarts");
        assert_eq!(a.mode, 0o640);
    }
    assert_eq!(c.readlink("/keep/link").unwrap(), "sub/f1");
    assert_eq!(c.stat("/keep/link").unwrap().attr.ino, inos[1]);
    // new inode numbers never reuse old ones
    c.write_file("/keep/new", b"n", 0o644).unwrap();
    assert!(!inos.contains(&c.lstat("/keep/new").unwrap().attr.ino));
}
