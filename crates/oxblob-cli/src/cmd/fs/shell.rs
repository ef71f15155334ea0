//! `oxblob shell IMAGE`: an interactive shell on a mounted image.
//!
//! The image is mounted (writable) once, for the whole session, and unmounted cleanly at
//! `exit` or end of input; while the shell runs, other `oxblob` commands on the image fail with
//! "in use". The prompt shows the current directory (`oxblob:/docs> `). Relative paths are
//! resolved against it (`.` and `..` included). A failing command prints
//! `oxblob: <what>: <why>` on stderr and the shell goes on.
//!
//! When stdin is not a terminal (`printf 'mkdir /a\nls\n' | oxblob shell disk.img`) no prompt
//! or banner is printed, so stdout holds only the commands' output. In both cases the exit
//! status is 1 if any command failed, 0 otherwise.
//!
//! Words are split on blanks; `'...'` and `"..."` quote, `\` escapes one character; a line
//! starting with `#` is a comment.

use super::{fs_err, ops, ImageOpts, Target};
use crate::error::{CliError, CliResult};
use clap::Args;
use oxblob_blobfs::{BlobFs, FileType};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// `oxblob shell`.
#[derive(Args, Debug)]
#[command(after_help = HELP)]
pub struct ShellArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// IMAGE
    #[arg(value_name = "IMAGE")]
    pub args: Vec<String>,
}

const HELP: &str = "Shell commands (paths are relative to the current directory):
  cd [PATH]              change directory (default /)
  pwd                    print the current directory
  ls [-l] [-R] [PATH]    list a directory (-l: type, size, mtime, inode)
  tree [PATH]            show a directory tree
  mkdir [-p] PATH...     create directories (-p: with parents)
  put [-r] HOST [PATH]   copy a host file (or tree, -r) into the image (default: here)
  get [-r] PATH [HOST]   copy an image file (or tree, -r) to the host (default: .)
  cp [-r] SRC DST        copy inside the image
  cat PATH...            print files
  rm [-r] PATH...        remove files, empty directories, or trees (-r)
  mv SRC DST             rename or move (into DST if it is a directory)
  stat [--json] PATH     show an entry
  df [--json]            space and file counts
  help                   this text
  exit, quit             unmount and leave (also at end of input)";

/// Splits a line into words: blanks separate, quotes group, backslash escapes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
                None => return Err("a '\\' ends the line".into()),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unmatched {q}"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parsed flags (single letters, or `--json`) and the other words.
struct Parsed {
    flags: Vec<char>,
    json: bool,
    args: Vec<String>,
}

fn parse(cmd: &str, words: &[String], allowed: &str) -> CliResult<Parsed> {
    let mut p = Parsed {
        flags: Vec::new(),
        json: false,
        args: Vec::new(),
    };
    let mut only_args = false;
    for w in words {
        if only_args || !w.starts_with('-') || w == "-" {
            p.args.push(w.clone());
        } else if w == "--" {
            only_args = true;
        } else if w == "--json" && allowed.contains('j') {
            p.json = true;
        } else if let Some(fl) = w.strip_prefix('-').filter(|f| !f.starts_with('-')) {
            for c in fl.chars() {
                if !allowed.contains(c) || c == 'j' {
                    return Err(CliError::new(cmd, format!("unknown option '-{c}'")));
                }
                p.flags.push(c);
            }
        } else {
            return Err(CliError::new(cmd, format!("unknown option '{w}'")));
        }
    }
    Ok(p)
}

fn count(cmd: &str, p: &Parsed, min: usize, max: usize, usage: &str) -> CliResult<()> {
    if p.args.len() < min || p.args.len() > max {
        return Err(CliError::new(cmd, format!("usage: {usage}")));
    }
    Ok(())
}

/// One shell session: the mount and the current directory.
pub struct Session<'a> {
    fs: &'a BlobFs,
    cwd: String,
    name: String,
}

/// What a line asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Leave the shell.
    Exit,
}

impl<'a> Session<'a> {
    /// A session at the root of `fs` (`name` is the image, for `df`).
    pub fn new(fs: &'a BlobFs, name: &str) -> Self {
        Session {
            fs,
            cwd: "/".to_string(),
            name: name.to_string(),
        }
    }

    /// The current directory.
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    fn path(&self, verb: &str, p: &str) -> CliResult<String> {
        ops::resolve(&self.cwd, p).map_err(|e| fs_err(verb, p, &e))
    }

    /// Runs one line; its output goes to `out`.
    pub fn exec(&mut self, line: &str, out: &mut dyn Write) -> CliResult<Flow> {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return Ok(Flow::Continue);
        }
        let words = split_words(t).map_err(|e| CliError::new("syntax error", e))?;
        let Some((cmd, rest)) = words.split_first() else {
            return Ok(Flow::Continue);
        };
        let fs = self.fs;
        match cmd.as_str() {
            "exit" | "quit" => return Ok(Flow::Exit),
            "help" | "?" => super::line(out, HELP)?,
            "pwd" => super::line(out, &self.cwd)?,
            "cd" => {
                let p = parse("cd", rest, "")?;
                count("cd", &p, 0, 1, "cd [PATH]")?;
                let target =
                    self.path("cannot cd to", p.args.first().map_or("/", String::as_str))?;
                let m = fs
                    .stat(&target)
                    .map_err(|e| fs_err("cannot cd to", &target, &e))?;
                if m.kind != FileType::Dir {
                    return Err(CliError::new(
                        format!("cannot cd to '{target}'"),
                        "Not a directory",
                    ));
                }
                self.cwd = target;
            }
            "ls" => {
                let p = parse("ls", rest, "lR")?;
                count("ls", &p, 0, 1, "ls [-l] [-R] [PATH]")?;
                let path =
                    self.path("cannot access", p.args.first().map_or(".", String::as_str))?;
                ops::ls(
                    fs,
                    out,
                    &path,
                    p.flags.contains(&'l'),
                    p.flags.contains(&'R'),
                )?;
            }
            "tree" => {
                let p = parse("tree", rest, "")?;
                count("tree", &p, 0, 1, "tree [PATH]")?;
                let path =
                    self.path("cannot access", p.args.first().map_or(".", String::as_str))?;
                ops::tree(fs, out, &path)?;
            }
            "mkdir" => {
                let p = parse("mkdir", rest, "p")?;
                count("mkdir", &p, 1, usize::MAX, "mkdir [-p] PATH...")?;
                for a in &p.args {
                    let path = self.path("cannot create directory", a)?;
                    ops::mkdir(fs, &path, p.flags.contains(&'p'))?;
                }
            }
            "cat" => {
                let p = parse("cat", rest, "")?;
                count("cat", &p, 1, usize::MAX, "cat PATH...")?;
                for a in &p.args {
                    let path = self.path("cannot open", a)?;
                    ops::cat(fs, out, &path)?;
                }
            }
            "rm" => {
                let p = parse("rm", rest, "rR")?;
                count("rm", &p, 1, usize::MAX, "rm [-r] PATH...")?;
                let rec = p.flags.iter().any(|&c| c == 'r' || c == 'R');
                for a in &p.args {
                    let path = self.path("cannot remove", a)?;
                    if path != "/"
                        && (self.cwd == path || self.cwd.starts_with(&format!("{path}/")))
                    {
                        return Err(CliError::new(
                            format!("cannot remove '{path}'"),
                            "Invalid argument (it holds the current directory; cd out first)",
                        ));
                    }
                    ops::rm(fs, &path, rec)?;
                }
            }
            "mv" => {
                let p = parse("mv", rest, "")?;
                count("mv", &p, 2, 2, "mv SRC DST")?;
                let s = self.path("cannot move", &p.args[0])?;
                let d = self.path("cannot move to", &p.args[1])?;
                if self.cwd == s || self.cwd.starts_with(&format!("{s}/")) {
                    return Err(CliError::new(
                        format!("cannot move '{s}'"),
                        "Invalid argument (it holds the current directory; cd out first)",
                    ));
                }
                ops::mv(fs, &s, &d)?;
            }
            "stat" => {
                let p = parse("stat", rest, "j")?;
                count("stat", &p, 1, 1, "stat [--json] PATH")?;
                let path = self.path("cannot stat", &p.args[0])?;
                ops::stat(fs, out, &path, p.json)?;
            }
            "df" => {
                let p = parse("df", rest, "j")?;
                count("df", &p, 0, 0, "df [--json]")?;
                ops::df(fs, out, &self.name, p.json)?;
            }
            "put" | "get" | "cp" => {
                let p = parse(cmd, rest, "rR")?;
                let rec = p.flags.iter().any(|&c| c == 'r' || c == 'R');
                let usage = match cmd.as_str() {
                    "put" => "put [-r] HOST [PATH]",
                    "get" => "get [-r] PATH [HOST]",
                    _ => "cp [-r] SRC DST",
                };
                let min = if cmd == "cp" { 2 } else { 1 };
                count(cmd, &p, min, 2, usage)?;
                let second = p.args.get(1);
                let (src, dst, dst_dir) = match cmd.as_str() {
                    "put" => (
                        ops::Endpoint::Host(PathBuf::from(&p.args[0])),
                        ops::Endpoint::Image(
                            self.path("cannot copy to", second.map_or(".", String::as_str))?,
                        ),
                        second.is_some_and(|s| s.ends_with('/')),
                    ),
                    "get" => (
                        ops::Endpoint::Image(self.path("cannot copy", &p.args[0])?),
                        ops::Endpoint::Host(PathBuf::from(second.map_or(".", String::as_str))),
                        second.is_some_and(|s| s.ends_with('/')),
                    ),
                    _ => (
                        ops::Endpoint::Image(self.path("cannot copy", &p.args[0])?),
                        ops::Endpoint::Image(self.path("cannot copy to", &p.args[1])?),
                        p.args[1].ends_with('/'),
                    ),
                };
                ops::copy(fs, &[src], &dst, rec, dst_dir)?;
            }
            other => {
                return Err(CliError::new(
                    format!("unknown command '{other}'"),
                    "try 'help'",
                ))
            }
        }
        Ok(Flow::Continue)
    }
}

/// Runs `oxblob shell`.
pub fn run(a: ShellArgs) -> CliResult<()> {
    let t = Target::new("shell", a.image, a.args, 0, 0, "IMAGE")?;
    let fs = t.mount(false)?;
    let interactive = std::io::stdin().is_terminal();
    let mut s = Session::new(&fs, &t.name);
    let mut failed = 0usize;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    if interactive {
        println!(
            "oxblob shell on {} ('help' lists the commands, 'exit' or Ctrl-D leaves)",
            t.name
        );
    }
    let mut buf = String::new();
    loop {
        if interactive {
            print!("oxblob:{}> ", s.cwd());
            let _ = stdout.lock().flush();
        }
        buf.clear();
        match input.read_line(&mut buf) {
            Ok(0) => {
                if interactive {
                    println!();
                }
                break;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("oxblob: reading standard input: {e}");
                failed += 1;
                break;
            }
        }
        let mut out = stdout.lock();
        let r = s.exec(&buf, &mut out);
        let _ = out.flush();
        drop(out);
        match r {
            Ok(Flow::Exit) => break,
            Ok(Flow::Continue) => {}
            Err(e) => {
                failed += 1;
                eprintln!("oxblob: {e}");
            }
        }
    }
    fs.unmount()
        .map_err(|e| CliError::new(format!("unmounting {}", t.name), e.detail))?;
    if failed > 0 {
        return Err(CliError::new(
            "shell",
            format!(
                "{failed} command{} failed",
                if failed == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(split_words("  ls   -l /a ").unwrap(), ["ls", "-l", "/a"]);
        assert_eq!(
            split_words(r#"put 'my file.txt' "/a b/" c\ d"#).unwrap(),
            ["put", "my file.txt", "/a b/", "c d"]
        );
        assert_eq!(split_words("cat ''").unwrap(), ["cat", ""]);
        assert!(split_words("cat 'x").unwrap_err().contains("unmatched"));
    }
}
