//! Debugging commands over the client library: `ls`, `stat`, `cat`,
//! `mkdir`, `rm`, `mv`, `put`, `get`. Paths are SealFS paths (`/a/b`).

use clap::Args;
use sealfs_client::{Client, ClientOptions, DirEntry, Errno, FileKind, Inode};
use std::io::{Read, Write};
use std::path::PathBuf;

/// The manager address every command needs.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Manager address.
    #[arg(long, env = "SEALFS_MANAGER", default_value = "127.0.0.1:7700")]
    pub manager: String,
}

/// One SealFS path.
#[derive(Args, Debug)]
pub struct PathArgs {
    #[command(flatten)]
    conn: Conn,
    /// SealFS path, e.g. /data/file.
    path: String,
}

/// `mkdir [-p] PATH`.
#[derive(Args, Debug)]
pub struct MkdirArgs {
    #[command(flatten)]
    conn: Conn,
    /// Make parents as needed; no error if it exists.
    #[arg(short, long)]
    parents: bool,
    /// SealFS path.
    path: String,
}

/// `rm [-r] PATH`.
#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    conn: Conn,
    /// Remove directories and their contents.
    #[arg(short, long)]
    recursive: bool,
    /// SealFS path.
    path: String,
}

/// `mv SRC DST`.
#[derive(Args, Debug)]
pub struct MvArgs {
    #[command(flatten)]
    conn: Conn,
    /// Source SealFS path.
    src: String,
    /// Destination SealFS path.
    dst: String,
}

/// `put LOCAL REMOTE` / `get REMOTE LOCAL`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    #[command(flatten)]
    conn: Conn,
    /// Source.
    from: PathBuf,
    /// Destination.
    to: PathBuf,
}

fn connect(c: &Conn) -> Result<Client, String> {
    Client::connect(&c.manager, ClientOptions::default()).map_err(|e| e.to_string())
}

fn err(path: &str, e: Errno) -> String {
    format!("{path}: {e}")
}

fn mode_string(i: &Inode) -> String {
    let t = match i.attr.kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
    };
    let m = i.attr.mode;
    let mut s = String::from(t);
    for (shift, special, sc) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let b = (m >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        let x = b & 1 != 0;
        s.push(match (m & special != 0, x) {
            (true, true) => sc,
            (true, false) => sc.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn long_line(i: &Inode, name: &str) -> String {
    let a = &i.attr;
    let mut line = format!(
        "{} {:>3} {:>5} {:>5} {:>12} {:>10}.{:09} {}",
        mode_string(i),
        a.nlink,
        a.uid,
        a.gid,
        a.size,
        a.mtime.sec,
        a.mtime.nsec,
        name
    );
    if let Some(t) = &i.target {
        line.push_str(" -> ");
        line.push_str(t);
    }
    line
}

/// `sealfs ls PATH`: one long line per entry.
pub fn ls(a: PathArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let me = c.lstat(&a.path).map_err(|e| err(&a.path, e))?;
    if me.attr.kind != FileKind::Dir {
        println!("{}", long_line(&me, &a.path));
        return Ok(());
    }
    let entries: Vec<DirEntry> = c.readdir(&a.path).map_err(|e| err(&a.path, e))?;
    let base = a.path.trim_end_matches('/');
    for e in entries {
        let p = format!("{base}/{}", e.name);
        match c.lstat(&p) {
            Ok(i) => println!("{}", long_line(&i, &e.name)),
            Err(er) => println!("?????????? {} ({er})", e.name),
        }
    }
    Ok(())
}

/// `sealfs stat PATH`.
pub fn stat(a: PathArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let i = c.lstat(&a.path).map_err(|e| err(&a.path, e))?;
    let at = &i.attr;
    println!("  File: {}", a.path);
    println!("  Size: {:<12} Kind: {:?}", at.size, at.kind);
    println!(" Inode: {:<12} Links: {}", at.ino, at.nlink);
    println!(
        "Access: ({:04o}/{})  Uid: {}  Gid: {}",
        at.mode,
        mode_string(&i),
        at.uid,
        at.gid
    );
    println!("Access: {}.{:09}", at.atime.sec, at.atime.nsec);
    println!("Modify: {}.{:09}", at.mtime.sec, at.mtime.nsec);
    println!("Change: {}.{:09}", at.ctime.sec, at.ctime.nsec);
    if let Some(t) = &i.target {
        println!("Target: {t}");
    }
    Ok(())
}

/// `sealfs cat PATH`.
pub fn cat(a: PathArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let data = c.read_file(&a.path).map_err(|e| err(&a.path, e))?;
    std::io::stdout()
        .write_all(&data)
        .map_err(|e| e.to_string())
}

/// `sealfs mkdir [-p] PATH`.
pub fn mkdir(a: MkdirArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let (uid, gid) = ids();
    if !a.parents {
        return c
            .mkdir(&a.path, 0o755, uid, gid)
            .map(|_| ())
            .map_err(|e| err(&a.path, e));
    }
    let norm = sealfs_proto::path::normalize(&a.path).map_err(|e| err(&a.path, e))?;
    let mut cur = String::new();
    for comp in norm.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(comp);
        match c.mkdir(&cur, 0o755, uid, gid) {
            Ok(_) => {}
            Err(Errno::EEXIST) => {
                let i = c.stat(&cur).map_err(|e| err(&cur, e))?;
                if i.attr.kind != FileKind::Dir {
                    return Err(err(&cur, Errno::ENOTDIR));
                }
            }
            Err(e) => return Err(err(&cur, e)),
        }
    }
    Ok(())
}

/// Removes `path` and, for a directory, everything below it.
pub fn remove_tree(c: &Client, path: &str) -> Result<(), String> {
    let i = c.lstat(path).map_err(|e| err(path, e))?;
    if i.attr.kind == FileKind::Dir {
        let base = if path == "/" {
            ""
        } else {
            path.trim_end_matches('/')
        };
        for e in c.readdir(path).map_err(|e| err(path, e))? {
            remove_tree(c, &format!("{base}/{}", e.name))?;
        }
        if path != "/" {
            c.rmdir(path).map_err(|e| err(path, e))?;
        }
        Ok(())
    } else {
        c.unlink(path).map_err(|e| err(path, e))
    }
}

/// `sealfs rm [-r] PATH`.
pub fn rm(a: RmArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    if a.recursive {
        return remove_tree(&c, &a.path);
    }
    match c.lstat(&a.path).map_err(|e| err(&a.path, e))?.attr.kind {
        FileKind::Dir => c.rmdir(&a.path),
        _ => c.unlink(&a.path),
    }
    .map_err(|e| err(&a.path, e))
}

/// `sealfs mv SRC DST`.
pub fn mv(a: MvArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    c.rename(&a.src, &a.dst, 0)
        .map_err(|e| format!("{} -> {}: {e}", a.src, a.dst))
}

fn ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// `sealfs put LOCAL REMOTE`: streams in chunk-sized pieces.
pub fn put(a: CopyArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let remote = a.to.to_string_lossy().to_string();
    let mut f = std::fs::File::open(&a.from).map_err(|e| format!("{}: {e}", a.from.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (uid, gid) = ids();
    let ino = c
        .open(
            &remote,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
            uid,
            gid,
        )
        .map_err(|e| err(&remote, e))?
        .attr
        .ino;
    let step = (c.chunk_size() as usize * 8).max(1 << 20);
    let mut buf = vec![0u8; step];
    let mut off = 0u64;
    let pb = progress(len, "put");
    loop {
        let n = read_full(&mut f, &mut buf).map_err(|e| format!("{}: {e}", a.from.display()))?;
        if n == 0 {
            break;
        }
        c.write_at(&remote, ino, off, &buf[..n])
            .map_err(|e| err(&remote, e))?;
        off += n as u64;
        pb.set_position(off);
    }
    c.fsync(&remote, ino).map_err(|e| err(&remote, e))?;
    pb.finish_and_clear();
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `sealfs get REMOTE LOCAL`.
pub fn get(a: CopyArgs) -> Result<(), String> {
    let c = connect(&a.conn)?;
    let remote = a.from.to_string_lossy().to_string();
    let i = c.stat(&remote).map_err(|e| err(&remote, e))?;
    if i.attr.kind == FileKind::Dir {
        return Err(err(&remote, Errno::EISDIR));
    }
    let mut out = std::fs::File::create(&a.to).map_err(|e| format!("{}: {e}", a.to.display()))?;
    let step = (c.chunk_size() as usize * 8).max(1 << 20);
    let pb = progress(i.attr.size, "get");
    let mut off = 0u64;
    loop {
        let data = c
            .read_at(&remote, i.attr.ino, off, step)
            .map_err(|e| err(&remote, e))?;
        if data.is_empty() {
            break;
        }
        out.write_all(&data)
            .map_err(|e| format!("{}: {e}", a.to.display()))?;
        off += data.len() as u64;
        pb.set_position(off);
    }
    out.sync_all()
        .map_err(|e| format!("{}: {e}", a.to.display()))?;
    pb.finish_and_clear();
    Ok(())
}
