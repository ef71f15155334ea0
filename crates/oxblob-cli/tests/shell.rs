//! `oxblob shell` driven through a pipe: no prompt noise, relative paths, put/get byte for
//! byte, errors that do not end the session, and the exit status.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn oxblob(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxblob"))
        .args(args)
        .output()
        .expect("run oxblob")
}

fn ok(args: &[&str]) -> String {
    let o = oxblob(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs the shell with `script` on stdin; returns (exit code, stdout, stderr).
fn shell(img: &str, script: &str) -> (i32, String, String) {
    let (code, out, err) = shell_bytes(img, script);
    (code, String::from_utf8(out).expect("text output"), err)
}

/// Like [`shell`], with stdout as bytes.
fn shell_bytes(img: &str, script: &str) -> (i32, Vec<u8>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxblob"))
        .args(["shell", img])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap(),
        o.stdout,
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn setup() -> (tempfile::TempDir, String) {
    let d = tempfile::Builder::new()
        .prefix("oxblob-shell-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let img = d.path().join("disk.img").to_str().unwrap().to_string();
    ok(&["mkfs", &img, "--size", "64M", "--cluster-size", "64k"]);
    (d, img)
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn piped_session_cd_pwd_put_get_ls() {
    let (d, img) = setup();
    let host = d.path().join("notes.txt");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    let got = d.path().join("got.bin");
    let script = format!(
        "# a comment, then a blank line\n\n\
         mkdir -p /docs/sub\n\
         cd docs\n\
         pwd\n\
         put {h}\n\
         put {h} sub/copy.txt\n\
         ls\n\
         cd sub/../sub/.\n\
         pwd\n\
         ls -l\n\
         cd ..\n\
         get notes.txt {g}\n\
         mv notes.txt renamed.txt\n\
         cd /\n\
         tree\n\
         stat --json docs/renamed.txt\n\
         exit\n\
         mkdir /after-exit\n",
        h = p(&host),
        g = p(&got)
    );
    let (code, out, err) = shell(&img, &script);
    assert_eq!(err, "");
    assert_eq!(code, 0);
    assert!(
        !out.contains("oxblob:/"),
        "no prompt when stdin is a pipe: {out}"
    );
    let mut parts = out.splitn(6, '\n');
    assert_eq!(parts.next(), Some("/docs"));
    assert_eq!(parts.next(), Some("notes.txt"));
    assert_eq!(parts.next(), Some("sub"));
    assert_eq!(parts.next(), Some("/docs/sub"));
    let long = parts.next().unwrap();
    let cols: Vec<&str> = long.split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[5]),
        ("-", "300000", "copy.txt"),
        "{long}"
    );
    let rest = parts.next().unwrap();
    assert!(rest.starts_with(
        "/\n└── docs\n    ├── renamed.txt\n    └── sub\n        └── copy.txt\n\n2 directories, 2 files\n{"
    ), "{rest}");
    let json_start = rest.find('{').unwrap();
    let v: serde_json::Value = serde_json::from_str(&rest[json_start..]).unwrap();
    assert_eq!(v["size"], 300_000);
    assert_eq!(v["path"], "/docs/renamed.txt");
    assert!(std::fs::read(&got).unwrap() == data, "get differs");
    // Nothing after `exit` ran; the session unmounted cleanly.
    assert_eq!(ok(&["ls", &img]), "docs\n");
    let v: serde_json::Value = serde_json::from_str(&ok(&["fsck", &img, "--json"])).unwrap();
    assert_eq!(v["clean"], true);
    // get into a directory keeps the name; cat streams.
    let outdir = d.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    let (code, out, err) = shell_bytes(
        &img,
        &format!(
            "cd /docs/sub\nget copy.txt {}\ncat ../renamed.txt\n",
            p(&outdir)
        ),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(std::fs::read(outdir.join("copy.txt")).unwrap() == data);
    assert!(out == data, "cat output differs");
}

#[test]
fn errors_do_not_end_the_session_but_set_the_status() {
    let (_d, img) = setup();
    let script = "cd /nope\nmkdir /a\nmkdir /a\nfrobnicate\nls -z\nrm /\ncd /a\nrm /a\nput /no/such/file\nls /\npwd\n";
    let (code, out, err) = shell(&img, script);
    assert_eq!(code, 1);
    assert_eq!(out, "a\n/a\n");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "oxblob: cannot cd to '/nope': No such file or directory",
            "oxblob: cannot create directory '/a': File exists",
            "oxblob: unknown command 'frobnicate': try 'help'",
            "oxblob: ls: unknown option '-z'",
            "oxblob: cannot remove '/': Invalid argument (refusing to remove the root directory)",
            "oxblob: cannot remove '/a': Invalid argument (it holds the current directory; cd out first)",
            "oxblob: cannot stat '/no/such/file': No such file or directory",
            "oxblob: shell: 7 commands failed",
        ]
    );
    // Quoting: names with blanks.
    let (code, out, err) = shell(&img, "mkdir '/with space' \"/other one\"\nls /\n");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, "a\nother one\nwith space\n");
    let (code, _, err) = shell(&img, "cat 'unterminated\n");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("oxblob: syntax error: unmatched '"),
        "{err}"
    );
}

#[test]
fn help_lists_every_command() {
    let (_d, img) = setup();
    let (code, out, _) = shell(&img, "help\n");
    assert_eq!(code, 0);
    for c in [
        "cd ", "pwd", "ls ", "tree", "mkdir", "put ", "get ", "cp ", "cat ", "rm ", "mv ", "stat",
        "df", "help", "exit",
    ] {
        assert!(out.contains(&format!("\n  {c}")), "{c}: {out}");
    }
    let (code, out, _) = shell(&img, "df --json\n");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"], 1);
}
