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

/// Finding 7: the one-file form grants an environment variable and an
/// outbound host with `wasmtime serve`'s flag names; without the flag the
/// same request is refused.
#[tokio::test(flavor = "multi_thread")]
async fn one_file_serve_grants_env_and_outbound_hosts() {
    let host = Wasmlet::serve(&[wasm::ENV, "--env", "GREETING=hi", "--env", "EMPTY="]);
    assert_eq!(get(host.public, "/").await.text(), "EMPTY=\nGREETING=hi\n");

    let upstream = upstream().await;
    let fetch = format!("/?url=http://{upstream}/");
    let allowed = format!("http://{upstream}");
    let host = Wasmlet::serve(&[wasm::OUTBOUND, "--allowed-outbound-host", &allowed]);
    let r = get(host.public, &fetch).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "upstream 200: upstream says hi")
    );
    let host = Wasmlet::serve(&[wasm::OUTBOUND]);
    let r = get(host.public, &fetch).await;
    assert_eq!(r.status, 502, "nothing granted: {}", r.text());
}

/// Finding 7: with a manifest the grants are the manifest's, per route:
/// the flags are refused with one line saying where they go instead.
#[test]
fn one_file_grants_are_refused_with_a_manifest() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{}\"\n", wasm::ENV),
    );
    for flag in [
        ["--env", "GREETING=hi"],
        ["--allowed-outbound-host", "http://127.0.0.1:1"],
    ] {
        let (status, _, stderr) =
            serve_to_exit(&["--config", path_str(&manifest), flag[0], flag[1]], &[]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains("--env and --allowed-outbound-host")
                && errors[0].contains("allowed_outbound_hosts"),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    let (status, _, stderr) = serve_to_exit(&[wasm::ENV, "--allowed-outbound-host", "example.com"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--allowed-outbound-host") && stderr.contains("scheme://host"), "{stderr}");
}
