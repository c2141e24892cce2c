//! Issue 31: the command line as a newcomer meets it.

use crate::common::*;
use std::process::{Command, Stdio};

/// `wasmlet ARGS` with its stdout closed before it writes (`| head -1`
/// after the first line): (exit code, stderr).
fn with_stdout_closed(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start wasmlet");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Finding 4: a closed stdout ends every subcommand quietly: no panic,
/// no backtrace, no error line.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    for args in [
        vec!["check", wasm::HELLO],
        vec!["--help"],
        vec!["--version"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
        vec!["push", "--help"],
    ] {
        let (code, stderr) = with_stdout_closed(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}
