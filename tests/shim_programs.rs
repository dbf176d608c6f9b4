//! Real programs under `LD_PRELOAD=libsealfs.so` against a real 3-server
//! cluster: each workload runs once on a local temp dir and once under the
//! SealFS prefix; transcripts and trees (read back through the client
//! library, not the shim) must match, and nothing may appear on the local
//! disk under the prefix.

mod common;

use common::{compile_c, Preloaded};
use sealfs_client::{Client, FileKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A prefix no test machine has on disk.
const MOUNT: &str = "/sealfs-shim-test";

struct Env(Preloaded);

impl std::ops::Deref for Env {
    type Target = Preloaded;
    fn deref(&self) -> &Preloaded {
        &self.0
    }
}

impl Env {
    fn new() -> Env {
        Env(Preloaded::new(MOUNT))
    }

    fn bash(&self, script: &str, root: &str) -> String {
        let mut c = self.cmd("bash");
        c.args(["-c", script])
            .env("R", root)
            .env("SRC", self.tmp.path().join("src"));
        String::from_utf8_lossy(&self.run(c).stdout).into_owned()
    }

    fn local(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir local");
        p
    }

    fn client(&self) -> Client {
        self.cl.client()
    }

    fn no_local_leak(&self) {
        assert!(
            !Path::new(MOUNT).exists(),
            "something fell back to the local disk: {MOUNT} exists"
        );
    }
}

/// kind + content of every entry under a local dir, by relative path.
fn local_tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("link:{}", std::fs::read_link(&p).unwrap().display()),
                );
            } else {
                out.insert(rel, format!("file:{}", hex(&std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}

/// The same for a SealFS dir, read through the client library.
fn seal_tree(c: &Client, root: &str) -> BTreeMap<String, String> {
    fn walk(c: &Client, root: &str, d: &str, out: &mut BTreeMap<String, String>) {
        for e in c.readdir(d).expect("readdir") {
            let p = format!("{d}/{}", e.name);
            let rel = p[root.len() + 1..].to_string();
            match e.kind {
                FileKind::Dir => {
                    out.insert(rel, "dir".into());
                    walk(c, root, &p, out);
                }
                FileKind::Symlink => {
                    out.insert(rel, format!("link:{}", c.readlink(&p).unwrap()));
                }
                FileKind::File => {
                    out.insert(rel, format!("file:{}", hex(&c.read_file(&p).unwrap())));
                }
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(c, root, root, &mut m);
    m
}

fn hex(b: &[u8]) -> String {
    use sha2::Digest;
    format!("{}:{:x}", b.len(), sha2::Sha256::digest(b))
}

fn assert_same_tree(env: &Env, local: &Path, seal: &str) {
    let l = local_tree(local);
    let s = seal_tree(&env.client(), seal);
    assert!(!l.is_empty(), "empty local tree {}", local.display());
    if l != s {
        let only_l: Vec<_> = l
            .iter()
            .filter(|(k, v)| s.get(*k) != Some(v))
            .take(10)
            .collect();
        let only_s: Vec<_> = s
            .iter()
            .filter(|(k, v)| l.get(*k) != Some(v))
            .take(10)
            .collect();
        panic!("trees differ ({} vs {} entries)\nlocal only/different: {only_l:?}\nsealfs only/different: {only_s:?}", l.len(), s.len());
    }
}

fn assert_same_lines(what: &str, local: &str, seal: &str) {
    let (l, s): (Vec<_>, Vec<_>) = (local.lines().collect(), seal.lines().collect());
    for (i, (a, b)) in l.iter().zip(&s).enumerate() {
        assert_eq!(
            a,
            b,
            "{what}: line {} differs\nlocal:\n{local}\nsealfs:\n{seal}",
            i + 1
        );
    }
    assert_eq!(
        l.len(),
        s.len(),
        "{what}: transcripts differ in length\nlocal:\n{local}\nsealfs:\n{seal}"
    );
}

/// A deterministic 8 MiB + a few bytes input file.
fn make_src(env: &Env) {
    let src = env.local("src");
    let mut data = Vec::with_capacity(8 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < (8 << 20) + 123 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(src.join("big"), &data).unwrap();
}

const COREUTILS: &str = r#"
set -e
umask 022
mkdir -p $R/a/b/c
mkdir -p $R/a/b/c
touch $R/a/empty
echo hello > $R/a/hello.txt
printf 'line%s\n' $(seq 1 100) > $R/a/lines.txt
cat $R/a/hello.txt
head -n 3 $R/a/lines.txt
tail -n 2 $R/a/lines.txt
tail -c 7 $R/a/lines.txt
wc -l < $R/a/lines.txt
wc $R/a/lines.txt | awk '{print $1, $2, $3}'
dd if=$SRC/big of=$R/a/big bs=1M count=8 status=none
cmp $SRC/big $R/a/big || echo "cmp: differ as expected (source is longer)"
cmp -n 8388608 $SRC/big $R/a/big && echo same-8m
stat -c '%s %F %a' $R/a/big $R/a/hello.txt $R/a/empty
stat -c '%F %a' $R/a/b
truncate -s 1000 $R/a/big
truncate -s +24 $R/a/big
stat -c '%s' $R/a/big
cp $R/a/lines.txt $R/a/b/copy.txt
cp $R/a/big $R/a/b/c/big2
cp -r $R/a/b $R/a/b2
mv $R/a/b2 $R/a/moved
mv $R/a/hello.txt $R/a/moved/hello-moved.txt
ls $R/a
ls -la $R/a | tail -n +2 | awk '{print $1, $5, $9}' | grep -v ' \.\.$' | sed 's/^\(d[^ ]*\) [0-9]*/\1/'
ls -R $R/a/moved | sed "s|$R||"
find $R/a | sed "s|$R||" | sort
find $R/a -type f -name '*.txt' | sed "s|$R||" | sort
du -a $R/a | wc -l
rm -r $R/a/moved
rm $R/a/empty
ls $R/a
for i in 1 2 3; do echo "loop $i"; done > $R/a/loop.txt
/bin/echo external >> $R/a/loop.txt
{ echo group1; /bin/echo group2; } >> $R/a/loop.txt
cat $R/a/loop.txt
exec 3< $R/a/lines.txt
read -r first <&3
echo "first=$first"
cat <&3 | wc -l
exec 3<&-
cd $R/a
ls
cat loop.txt | head -n 1
pwd | sed "s|$R||"
/bin/pwd | sed "s|$R||"
mkdir rel && echo in-rel > rel/f && cat rel/f
cd /
cat $R/a/rel/f
"#;

#[test]
fn coreutils_and_bash_match_local() {
    let env = Env::new();
    make_src(&env);
    let local = env.local("cu");
    let lout = env.bash(COREUTILS, local.to_str().unwrap());
    let sout = env.bash(COREUTILS, &format!("{MOUNT}/cu"));
    assert_same_lines("coreutils", &lout, &sout);
    assert!(
        lout.contains("same-8m") && lout.contains("external") && lout.contains("first=line1"),
        "{lout}"
    );
    assert_same_tree(&env, &local, "/cu");
    env.no_local_leak();
}

const PYTHON: &str = r#"
import os, sys, shutil, pathlib
R = sys.argv[1]
os.makedirs(f"{R}/p/x/y", exist_ok=True)
with open(f"{R}/p/x/y/f.txt", "w") as f:
    for i in range(1000):
        f.write(f"row {i}\n")
with open(f"{R}/p/x/bin", "wb") as f:
    f.write(bytes(range(256)) * 1000)
with open(f"{R}/p/x/y/f.txt") as f:
    print(sum(1 for _ in f))
with open(f"{R}/p/x/bin", "rb") as f:
    f.seek(1000)
    print(f.read(4).hex(), f.tell())
with open(f"{R}/p/x/y/f.txt", "a") as f:
    f.write("appended\n")
print(sorted(os.listdir(f"{R}/p/x")))
st = os.stat(f"{R}/p/x/bin")
print(st.st_size, oct(st.st_mode))
print(os.path.isdir(f"{R}/p/x"), os.path.isfile(f"{R}/p/x/bin"), os.path.exists(f"{R}/p/nope"))
shutil.copytree(f"{R}/p/x", f"{R}/p/copy")
print(sorted((root[len(R):], sorted(dirs), sorted(files)) for root, dirs, files in os.walk(f"{R}/p")))
p = pathlib.Path(f"{R}/p/copy/y/f.txt")
print(p.read_text().splitlines()[-1], p.stat().st_size, sorted(x.name for x in p.parent.parent.iterdir()))
pathlib.Path(f"{R}/p/pl.txt").write_text("pathlib\n")
os.rename(f"{R}/p/pl.txt", f"{R}/p/pl2.txt")
os.symlink("pl2.txt", f"{R}/p/link")
print(os.readlink(f"{R}/p/link"), open(f"{R}/p/link").read().strip())
with os.scandir(f"{R}/p") as it:
    print(sorted((e.name, e.is_dir(), e.is_symlink()) for e in it))
shutil.rmtree(f"{R}/p/copy/y")
os.remove(f"{R}/p/x/bin")
try:
    open(f"{R}/p/nope/x")
except FileNotFoundError as e:
    print("ENOENT", e.errno)
try:
    os.mkdir(f"{R}/p/x")
except FileExistsError as e:
    print("EEXIST", e.errno)
os.chdir(f"{R}/p")
print(os.getcwd()[len(R):], sorted(os.listdir(".")))
"#;

/// The real interpreter (`python3` on PATH may be a pyenv shell wrapper).
fn real_python() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !p.is_empty()).then_some(p)
}

#[test]
fn python_tar_gzip_match_local() {
    let env = Env::new();
    let py = real_python().expect("python3 is needed for this test");
    std::fs::write(env.tmp.path().join("t.py"), PYTHON).unwrap();
    let local = env.local("py");
    let run_py = |root: &str| {
        let mut c = env.cmd(&py);
        c.arg(env.tmp.path().join("t.py")).arg(root);
        String::from_utf8_lossy(&env.run(c).stdout).into_owned()
    };
    let lout = run_py(local.to_str().unwrap());
    let sout = run_py(&format!("{MOUNT}/py"));
    assert_same_lines("python", &lout, &sout);
    assert_same_tree(&env, &local, "/py");

    // tar of a tree of 1 000+ files, created and extracted under the prefix.
    let src = env.local("tarsrc/tree");
    for d in 0..10 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..101 {
            std::fs::write(
                src.join(format!("d{d}/f{f}")),
                format!("{d}/{f}\n").repeat(f + 1),
            )
            .unwrap();
        }
    }
    let tar_script = r#"
set -e
mkdir -p $R/tar/x
tar -C $TARSRC -cf $R/tar/t.tar tree
tar -C $R/tar/x -xf $R/tar/t.tar
tar -C $R/tar/x -cf - tree | tar -tf - | sort | md5sum
tar -C $R/tar/x -czf $R/tar/t.tgz tree
mkdir $R/tar/y && tar -C $R/tar/y -xzf $R/tar/t.tgz
rm $R/tar/t.tar $R/tar/t.tgz
cp $TARSRC/tree/d1/f100 $R/tar/g
gzip -9 $R/tar/g
ls $R/tar
gunzip $R/tar/g.gz
ls $R/tar
cmp $TARSRC/tree/d1/f100 $R/tar/g && echo gzip-roundtrip
"#;
    let run_tar = |root: &str| {
        let mut c = env.cmd("bash");
        c.args(["-c", tar_script])
            .env("R", root)
            .env("TARSRC", env.tmp.path().join("tarsrc"));
        String::from_utf8_lossy(&env.run(c).stdout).into_owned()
    };
    let local = env.local("tarl");
    let lout = run_tar(local.to_str().unwrap());
    let sout = run_tar(MOUNT);
    assert_same_lines("tar/gzip", &lout, &sout);
    assert!(lout.contains("gzip-roundtrip"));
    let t = seal_tree(&env.client(), "/tar/x/tree");
    assert_eq!(t.len(), 10 + 1010, "tar extracted {} entries", t.len());
    assert_same_tree(&env, &local.join("tar"), "/tar");
    env.no_local_leak();
}

#[test]
fn c_core_calls_match_local_preloaded_and_linked() {
    let env = Env::new();
    let bin = env.tmp.path().join("bin-core");
    compile_c("core.c", &bin, &[]);
    let local = env.local("core");
    let lout = String::from_utf8_lossy(&Command::new(&bin).arg(&local).output().unwrap().stdout)
        .into_owned();
    assert!(lout.lines().count() > 100, "{lout}");
    let mut c = env.cmd("mkdir");
    c.arg(format!("{MOUNT}/core"));
    env.run(c);
    let mut c = env.cmd(bin.to_str().unwrap());
    c.arg(format!("{MOUNT}/core"));
    let sout = String::from_utf8_lossy(&env.run(c).stdout).into_owned();
    assert_same_lines("core.c preloaded", &lout, &sout);

    // The same program linked against libsealfs.so (no LD_PRELOAD).
    let libdir = env.lib.parent().unwrap().to_str().unwrap().to_string();
    let linked = env.tmp.path().join("core-linked");
    compile_c(
        "core.c",
        &linked,
        &["-L", &libdir, "-lsealfs", &format!("-Wl,-rpath,{libdir}")],
    );
    let mut c = Command::new(&linked);
    c.arg(format!("{MOUNT}/core"))
        .env("SEALFS_MANAGER", env.cl.manager_addr())
        .env("SEALFS_MOUNT", MOUNT);
    let sout = String::from_utf8_lossy(&env.run(c).stdout).into_owned();
    assert_same_lines("core.c linked", &lout, &sout);

    // The direct API of sealfs.h.
    let direct = env.tmp.path().join("direct");
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    compile_c(
        "direct.c",
        &direct,
        &[
            "-I",
            inc.to_str().unwrap(),
            "-L",
            &libdir,
            "-lsealfs",
            &format!("-Wl,-rpath,{libdir}"),
        ],
    );
    let mut c = Command::new(&direct);
    c.arg(env.cl.manager_addr())
        .arg("/direct")
        .env_remove("SEALFS_MANAGER");
    let out = String::from_utf8_lossy(&env.run(c).stdout).into_owned();
    assert!(out.contains("OK (0 failures)"), "{out}");
    env.no_local_leak();
}

#[test]
fn fork_exec_and_threads() {
    let env = Env::new();
    let mk = env.cmd("mkdir");
    let mut mk = mk;
    mk.arg(format!("{MOUNT}/p"));
    env.run(mk);

    // 8 threads: distinct files and distinct stripes of one shared file.
    let threads = env.tmp.path().join("bin-threads");
    compile_c("threads.c", &threads, &["-pthread"]);
    let mut c = env.cmd(threads.to_str().unwrap());
    c.arg(format!("{MOUNT}/p"));
    assert_eq!(String::from_utf8_lossy(&env.run(c).stdout).trim(), "OK");
    let cl = env.client();
    assert_eq!(cl.stat("/p/shared").unwrap().attr.size, 8 * 64 * 1024);

    // fork with an open fd: the child writes through it, offsets are shared.
    let fork = env.tmp.path().join("bin-fork");
    compile_c("fork.c", &fork, &[]);
    let local = env.local("fork");
    let lout = String::from_utf8_lossy(
        &env.run({
            let mut c = Command::new(&fork);
            c.arg(local.join("f"));
            c
        })
        .stdout,
    )
    .into_owned();
    let mut c = env.cmd(fork.to_str().unwrap());
    c.arg(format!("{MOUNT}/p/f"));
    let sout = String::from_utf8_lossy(&env.run(c).stdout).into_owned();
    assert_eq!(lout, sout);
    assert_eq!(cl.read_file("/p/f").unwrap(), b"parent1\nchild\nparent2\n");

    // exec with an inherited fd, and redirections into exec'd programs.
    let out = env.bash(
        r#"
set -e
printf 'one\ntwo\nthree\n' > $R/p/e
exec 3<$R/p/e
cat <&3
exec 3<&-
exec 4<$R/p/e
read -r l <&4
cat <&4
sh -c 'cat' < $R/p/e | wc -l
sh -c 'echo from-sh; /bin/echo from-exec' > $R/p/out
cat $R/p/out
bash -c 'cd '$R'/p && /bin/pwd && cat e | head -n 1'
"#,
        MOUNT,
    );
    assert_eq!(
        out,
        format!("one\ntwo\nthree\ntwo\nthree\n3\nfrom-sh\nfrom-exec\n{MOUNT}/p\none\n")
    );
    assert_eq!(cl.read_file("/p/out").unwrap(), b"from-sh\nfrom-exec\n");
    env.no_local_leak();
}
