//! Child processes for the multi-process tests: the test binary started again in a role
//! (`SFT_CHILD`), which reports to its parent in `@@` lines on its stdout.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Starts this test binary as a child process in `role`: it runs only the test named
/// `child_process`, which reads the role from `SFT_CHILD`.
pub fn spawn_child(role: &str, env: &[(&str, String)]) -> (Child, BufReader<ChildStdout>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env("SFT_CHILD", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// Starts a child whose messages nobody reads.
pub fn spawn_quiet(role: &str, env: &[(&str, String)]) -> Child {
    let (child, stdout) = spawn_child(role, env);
    // Drained, so its writes never fail on a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout.into_inner(), &mut std::io::sink()));
    child
}

/// The next `@@` line the child prints (without the marker); None if it exited.
pub fn next_message(stdout: &mut BufReader<ChildStdout>) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        // The harness may have begun the line ("test child_process ... ").
        if let Some((_, message)) = line.trim_end().split_once("@@") {
            return Some(message.to_owned());
        }
    }
}

/// Reports `message` to the parent (in a child).
pub fn say(message: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{message}").unwrap();
    out.flush().unwrap();
}

/// Appends one line to the file at `path`.
pub fn append_line(path: &str, line: &str) {
    // One write(2) with O_APPEND: a line is whole or absent whatever kills the process.
    let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// The environment variable `key`, which the parent set for this child.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}
