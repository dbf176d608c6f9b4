//! Process creation and open-file identity under `LD_PRELOAD`, against a
//! real 3-server cluster, each run compared with the same program on a
//! local temp dir:
//! * children made through paths glibc runs internally (`system`, `popen`,
//!   `posix_spawn(p)` with file actions, the variadic `execl`/`execlp`/
//!   `execle`, `vfork` as Python's `subprocess` uses it) see the parent's
//!   SealFS fds and virtual cwd, and the parent's table survives them;
//! * an open file renamed or unlinked by the same process stays usable
//!   through its fds, and the deferred unlink leaves nothing behind.

mod common;

use common::{compile_c, Preloaded};
use sealfs_client::Client;
use std::path::Path;
use std::process::Command;

/// A prefix no test machine has on disk.
const MOUNT: &str = "/sealfs-spawn-test";

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

    fn run(&self, c: Command) -> String {
        String::from_utf8_lossy(&self.0.run(c).stdout).into_owned()
    }

    /// Runs `script` with bash, `R` set to a local dir, then to a SealFS
    /// dir; returns both transcripts.
    fn both(&self, name: &str, prog: &str, args: &[&str]) -> (String, String) {
        let local = self.tmp.path().join(name);
        std::fs::create_dir_all(&local).expect("local dir");
        let mut c = Command::new(prog);
        c.args(args).arg(&local).current_dir(self.tmp.path());
        let l = self.run(c);
        let mut mk = self.cmd("mkdir");
        mk.arg(format!("{MOUNT}/{name}"));
        self.run(mk);
        let mut c = self.cmd(prog);
        c.args(args)
            .arg(format!("{MOUNT}/{name}"))
            .current_dir(self.tmp.path());
        let s = self.run(c);
        (l, s)
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

fn real_python() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3 is needed for this test");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

const SPAWN_SH: &str = r#"
set -e
R=$1
printf 'hello world\n' > $R/f
cat $R/f | wc -c
bash -c "cat $R/f | wc -c"
$SPAWN $R/f $R
"#;

#[test]
fn system_popen_spawn_execl_vfork_carry_fds_and_cwd() {
    let env = Env::new();
    let bin = env.tmp.path().join("spawn");
    compile_c("spawn.c", &bin, &[]);
    let script = env.tmp.path().join("spawn.sh");
    std::fs::write(&script, SPAWN_SH).expect("script");
    let (l, s) = {
        let local = env.tmp.path().join("sp");
        std::fs::create_dir_all(&local).expect("local dir");
        let mut c = Command::new("bash");
        c.arg(&script).arg(&local).env("SPAWN", &bin);
        let l = env.run(c);
        let mut mk = env.cmd("mkdir");
        mk.arg(format!("{MOUNT}/sp"));
        env.run(mk);
        let mut c = env.cmd("bash");
        c.arg(&script).arg(format!("{MOUNT}/sp")).env("SPAWN", &bin);
        (l, env.run(c))
    };
    assert_eq!(l, s, "local:\n{l}\nsealfs:\n{s}");
    for want in [
        "12\n12\nhello world\n12\nsystem=0",
        "popen r=12:hello world",
        "pclose w=0",
        "parent stdin after vfork: hello world",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    assert_eq!(
        env.client()
            .read_file("/sp/g")
            .expect("g written through popen"),
        b"via popen w\n"
    );
    env.no_local_leak();
}

const PY_SPAWN: &str = r#"
import os, subprocess, sys
R = sys.argv[1]
def slurp(r):
    b = b""
    while True:
        c = os.read(r, 100)
        if not c:
            return b
        b += c
with open(f"{R}/f", "w") as f:
    f.write("hello world\n")
f = open(f"{R}/f")
# subprocess: vfork + dup2 + close_range + execve in the child.
print(subprocess.run(["cat"], stdin=f, capture_output=True).stdout)
f.seek(0)
print("parent still reads:", f.read().strip())
print(subprocess.run(["cat", "f"], cwd=R, capture_output=True).stdout)
# posix_spawnp with a dup2 file action of a SealFS fd.
fd = os.open(f"{R}/f", os.O_RDONLY)
os.chdir(R)
r, w = os.pipe()
pid = os.posix_spawnp("sh", ["sh", "-c", "cat; cat f"], os.environ,
                      file_actions=[(os.POSIX_SPAWN_DUP2, fd, 0), (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, w)])
os.close(w)
print(slurp(r), os.waitpid(pid, 0)[1])
# a virtual cwd through posix_spawn and system().
r, w = os.pipe()
pid = os.posix_spawn("/bin/sh", ["sh", "-c", "pwd; cat f"], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
os.close(w)
print(slurp(r).replace(R.encode(), b"R"), os.waitpid(pid, 0)[1])
sys.stdout.flush()
print(os.system("cat f >> f2; wc -c < f2"))
"#;

#[test]
fn python_subprocess_posix_spawn_and_system() {
    let env = Env::new();
    let py = real_python();
    let script = env.tmp.path().join("spawn.py");
    std::fs::write(&script, PY_SPAWN).expect("script");
    let (l, s) = env.both("py", &py, &[script.to_str().expect("utf-8")]);
    assert_eq!(l, s, "local:\n{l}\nsealfs:\n{s}");
    assert!(s.contains("parent still reads: hello world"), "{s}");
    assert!(
        s.contains("b'hello world\\nhello world\\n' 0") && s.contains("b'R\\nhello world\\n' 0"),
        "{s}"
    );
    assert_eq!(
        env.client()
            .read_file("/py/f2")
            .expect("f2 written by system()"),
        b"hello world\n"
    );
    env.no_local_leak();
}

const PY_UNLINK: &str = r#"
import os, sys
R = sys.argv[1]
f = open(f"{R}/gone", "w+")
f.write("still here\n"); f.flush()
os.unlink(f"{R}/gone")
print(os.path.exists(f"{R}/gone"), os.listdir(R))
f.seek(0); print(f.read().strip())
# exit without closing: the destructor finishes the unlink
os._exit(0) if False else None
"#;

#[test]
fn open_file_survives_rename_and_unlink() {
    let env = Env::new();
    let bin = env.tmp.path().join("open_rename");
    compile_c("open_rename.c", &bin, &[]);
    let (l, s) = env.both("or", bin.to_str().expect("utf-8"), &[]);
    assert_eq!(l, s, "local:\n{l}\nsealfs:\n{s}");
    assert!(
        s.contains("after unlink: read=14") && s.contains("after first close: read=14"),
        "{s}"
    );
    let c = env.client();
    let names: Vec<String> = c
        .readdir("/or")
        .expect("readdir")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["d2".to_string()], "hidden files left behind");
    let hidden = |c: &Client| {
        c.readdir("/")
            .expect("readdir /")
            .into_iter()
            .filter(|e| e.name.starts_with(".sealfs-unlinked-"))
            .count()
    };
    assert_eq!(
        hidden(&c),
        0,
        "a deferred unlink did not finish at the last close"
    );

    // Unlinked while open and never closed: removed at exit.
    let py = real_python();
    let script = env.tmp.path().join("unlink.py");
    std::fs::write(&script, PY_UNLINK).expect("script");
    let (l, s) = env.both("un", &py, &[script.to_str().expect("utf-8")]);
    assert_eq!(l, s);
    assert_eq!(s, "False []\nstill here\n");
    assert!(c.readdir("/un").expect("readdir").is_empty());
    assert_eq!(hidden(&c), 0, "the deferred unlink did not finish at exit");
    env.no_local_leak();
}
