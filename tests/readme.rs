//! The README, run as a newcomer runs it: the first command of its "Set up" block,
//! exactly as written, in a fresh copy of the working directory, then the walkthrough's
//! curl commands, exactly as written, against that server, comparing what they print
//! with what the README shows. A README edit that breaks either fails here.
//!
//! The server must get the documented address (127.0.0.1:8080): this test fails, naming
//! the port, when something else holds it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");

/// Building the release binary from cold on 2 cores takes minutes; this is only a
/// bound on a hang, not a timing assertion.
const BUILD_AND_START_BOUND: Duration = Duration::from_secs(45 * 60);

/// The body of the first fenced block after `heading`.
fn block_after(heading: &str) -> &'static str {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let rest = &README[start..];
    let open = rest.find("```").expect("a fenced block after the heading");
    let rest = &rest[open..];
    let body_start = rest.find('\n').expect("a fence line") + 1;
    let body = &rest[body_start..];
    let close = body.find("\n```").expect("a closing fence");
    &body[..close]
}

/// `(command, comment)` of the set-up block's first line.
fn first_setup_command() -> (String, String) {
    let line = block_after("## Set up")
        .lines()
        .next()
        .expect("the set-up block has a line");
    let (command, comment) = line.split_once(" #").unwrap_or((line, ""));
    (command.trim().to_owned(), comment.trim().to_owned())
}

/// Copies the working directory (what a clone holds: no build output, no data) to
/// `to`; `target` becomes a link to this checkout's, so dependencies already built
/// are reused.
fn copy_checkout(from: &Path, to: &Path) {
    const SKIP: &[&str] = &[
        "target",
        ".git",
        "readstate-data",
        "bench-data",
        "bench-results.json",
        "bench-report.html",
    ];
    fn copy_dir(from: &Path, to: &Path, top: bool) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if top && SKIP.iter().any(|s| name == *s) {
                continue;
            }
            // Installed or built JavaScript (git ignores them; a clone has neither).
            if name == "node_modules" || (name == "dist" && from.ends_with("typescript")) {
                continue;
            }
            let kind = entry.file_type().unwrap();
            let dest = to.join(&name);
            if kind.is_dir() {
                copy_dir(&entry.path(), &dest, false);
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &dest).unwrap();
            }
        }
    }
    copy_dir(from, to, true);
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| from.join("target"), PathBuf::from);
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, to.join("target")).unwrap();
}

/// Runs `script` with bash in `dir`, in the environment of a newcomer's shell: none
/// of the test suite's `READSTATE_*` settings, none of the `CARGO_*` variables cargo
/// sets for a test (build scripts that watch them would rebuild otherwise), and not
/// the clippy driver scripts/test compiles the workspace with.
fn shell(dir: &Path, script: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let cargo_set = (key_text == "CARGO" || key_text.starts_with("CARGO_"))
            && key_text != "CARGO_HOME"
            && key_text != "CARGO_TARGET_DIR";
        if key_text.starts_with("READSTATE_")
            || key_text == "DATABASE_URL"
            || key_text == "OUT_DIR"
            || key_text == "RUSTC_WORKSPACE_WRAPPER"
            || key_text == "CLIPPY_ARGS"
            || cargo_set
        {
            command.env_remove(&key);
        }
    }
    command
}

/// Status line and body of `GET url` through curl.
fn curl(url: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.parse().ok()?, body.to_owned()))
}

/// Kills the server (and cargo, if it is still building) if the test panics.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The walkthrough's console blocks: `(command, expected output)`, commands with
/// their continuation lines joined as the shell joins them.
fn walkthrough_steps() -> Vec<(String, String)> {
    let start = README
        .find("## A walkthrough with curl")
        .expect("the section");
    let end = start
        + README[start..]
            .find("\n## HTTP API")
            .expect("the next section");
    let mut steps = Vec::new();
    for block in README[start..end].split("```console\n").skip(1) {
        let block = &block[..block.find("```").expect("closed")];
        let mut command = String::new();
        let mut output = String::new();
        let mut in_command = false;
        for line in block.lines() {
            if let Some(first) = line.strip_prefix("$ ") {
                command.push_str(first);
                in_command = first.ends_with('\\');
            } else if in_command {
                command.push('\n');
                command.push_str(line);
                in_command = line.ends_with('\\');
            } else {
                output.push_str(line);
                output.push('\n');
            }
        }
        steps.push((command, output));
    }
    steps
}

#[test]
fn the_first_setup_command_serves_as_documented_and_the_walkthrough_prints_what_it_shows() {
    let (command, comment) = first_setup_command();
    assert_eq!(
        command, "cargo run --release",
        "the README's set-up command changed; this test runs whatever it says, but \
         check that the comment below still describes it"
    );
    assert!(
        comment.contains("127.0.0.1:8080") && comment.contains("dashboard at /"),
        "the comment names the address and the dashboard: {comment}"
    );
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "127.0.0.1:8080 is in use; the README's command needs it"
    );

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("readstate");
    copy_checkout(repo, &dir);

    eprintln!(
        "running `{command}` in {} (a cold release build takes minutes)",
        dir.display()
    );
    // bash runs a lone simple command with exec, and so does `cargo run` on Unix, so
    // the pid is the server's once it runs.
    let mut server = Running(
        shell(&dir, &command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash runs"),
    );
    let deadline = Instant::now() + BUILD_AND_START_BOUND;
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("`{command}` exited with {status} before serving");
        }
        if let Some((200, _)) = curl("http://127.0.0.1:8080/readyz") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`{command}` did not serve /readyz"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        dir.join("readstate-data").is_dir(),
        "embedded SQLite lives in ./readstate-data/ as the comment says"
    );

    let (status, page) = curl("http://127.0.0.1:8080/").expect("the dashboard answers");
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") && page.contains("readstate"),
        "{page}"
    );
    let (status, page) = curl("http://127.0.0.1:8080/docs").expect("the docs answer");
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");

    // The walkthrough, typed exactly as shown, on this fresh data directory.
    let steps = walkthrough_steps();
    assert!(steps.len() >= 7, "the walkthrough has its steps: {steps:?}");
    for (step, (command, expected)) in steps.iter().enumerate() {
        let out = shell(&dir, command).output().expect("bash runs");
        assert!(
            out.status.success(),
            "step {step}: `{command}` failed: {out:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            *expected,
            "step {step}: `{command}` printed something else than the README shows"
        );
    }

    sigterm(server.0.id());
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
}

#[test]
fn the_readme_says_how_long_the_setup_commands_take() {
    let setup = block_after("## Set up");
    for line in setup.lines() {
        assert!(
            line.contains("min") || line.contains(" s ") || line.contains("seconds"),
            "each set-up command says how long it takes on 2 cores: {line}"
        );
    }
}

/// Whether `line` of the README shows `real`: equal, or, where the README elides a
/// random value with `…`, equal up to the elision and after the elided value's end.
fn shows(line: &str, real: &str) -> bool {
    match line.split_once('…') {
        None => line == real,
        Some((head, tail)) => {
            // The text after the elision's closing `(...)` note must end the line.
            let after = tail.split_once(')').map_or(tail, |(_, after)| after);
            let after = after.trim_start_matches(|c: char| c.is_ascii_hexdigit());
            real.starts_with(head) && real.ends_with(after)
        }
    }
}

#[test]
fn the_access_sections_api_key_example_is_what_the_command_prints() {
    let block = block_after("### API keys, for services");
    let mut lines = block.lines();
    let command = lines.next().expect("the command line");
    let args = command
        .strip_prefix("$ cargo run --release -- ")
        .expect("a cargo run command");
    let out = Command::new(env!("CARGO_BIN_EXE_readstate"))
        .args(args.split_whitespace())
        .env_clear()
        .output()
        .expect("runs");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let shown: Vec<&str> = lines.collect();
    let real: Vec<&str> = printed.lines().collect();
    assert_eq!(
        shown.len(),
        real.len(),
        "README:\n{block}\nprinted:\n{printed}"
    );
    for (line, real) in shown.iter().zip(&real) {
        assert!(
            shows(line, real),
            "README shows {line:?}, the command printed {real:?}"
        );
    }
}

#[test]
fn the_access_sections_jwt_configuration_is_valid() {
    let block = block_after("### JWTs, for end users");
    // The key files are the reader's own; everything else must load as written.
    let settings = readstate::config::load(
        Some(block),
        &[(
            "READSTATE_AUTH__JWT__PUBLIC_KEY_FILES".to_owned(),
            "[]".to_owned(),
        )],
    )
    .unwrap_or_else(|e| panic!("README's [auth.jwt] block: {e}"));
    assert!(settings.auth.is_on());
    assert_eq!(settings.auth.jwt.audience.as_deref(), Some("readstate"));
    assert!(block.contains("public_key_files = ["));
}
