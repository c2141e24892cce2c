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
        vec!["new", "--help"],
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
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\n",
            wasm::ENV
        ),
    );
    for flag in [
        ["--env", "GREETING=hi"],
        ["--allowed-outbound-host", "http://127.0.0.1:1"],
    ] {
        let (status, _, stderr) =
            serve_to_exit(&["--config", path_str(&manifest), flag[0], flag[1]], &[]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains("--env and --allowed-outbound-host")
                && errors[0].contains("allowed_outbound_hosts"),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    let (status, _, stderr) =
        serve_to_exit(&[wasm::ENV, "--allowed-outbound-host", "example.com"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--allowed-outbound-host") && stderr.contains("scheme://host"),
        "{stderr}"
    );
}

/// Finding 3: `check --config` loads the whole manifest as `serve` would
/// at start-up, prints one summary per route and exits 0, binding nothing.
#[test]
fn check_config_validates_a_whole_manifest_without_binding() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\n\
         canary = { component = \"v2.wasm\", weight = 10 }\n\n\
         [[route]]\npath = \"/env\"\ncomponent = \"v1.wasm\"\nenv = { A = \"1\" }\n\
         config = { greeting = \"hi\" }\n",
    );
    let (status, stdout, stderr) = run(&["check", "--config", path_str(&manifest)]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(stdout.starts_with("ok: `"), "{stdout}");
    assert!(stdout.contains("2 routes"), "{stdout}");
    let v1 = crate::foundation::sha256_hex(&std::fs::read(wasm::V1).unwrap());
    let v2 = crate::foundation::sha256_hex(&std::fs::read(wasm::V2).unwrap());
    assert!(
        stdout.contains(&format!("/...: {}", dir.path().join("v1.wasm").display()))
            && stdout.contains(&format!("(sha256:{v1})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("canary: ") && stdout.contains(&format!("(sha256:{v2}), weight 10")),
        "{stdout}"
    );
    assert!(
        stdout.contains("/env: ") && stdout.contains("  config: greeting"),
        "{stdout}"
    );
}

/// Finding 3: what would fail `serve`'s start-up fails `check --config`
/// with the same one `error:` line and exit 1: a missing component, a
/// route's limit over the host's, a `file` store without --data-dir.
#[test]
fn check_config_fails_as_serve_would() {
    let dir = tempdir();
    copy(wasm::HELLO, &dir.path().join("hello.wasm"));
    for (toml, want) in [
        (
            "[[route]]\npath = \"/\"\ncomponent = \"gone.wasm\"\n",
            "gone.wasm",
        ),
        (
            "[[route]]\npath = \"/\"\ncomponent = \"hello.wasm\"\nmax_memory = \"1GiB\"\n",
            "exceeds the host's --max-memory",
        ),
        (
            "[[route]]\npath = \"/\"\ncomponent = \"hello.wasm\"\nkey_value_stores = [\"default\"]\n",
            "--data-dir",
        ),
        (
            "[[route]]\npath = \"/\"\ncomponent = \"hello.wasm\"\n[[route]]\npath = \"/\"\ncomponent = \"hello.wasm\"\n",
            "duplicate route `/`: at line 1 and at line 4",
        ),
    ] {
        let manifest = dir.path().join("wasmlet.toml");
        write(&manifest, toml);
        let (status, stdout, stderr) = run(&["check", "--config", path_str(&manifest)]);
        assert_eq!(status.code(), Some(1), "{toml}\n{stdout}\n{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(want), "{want} not in {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    let (status, _, stderr) = run(&["check", "--config", "x.toml", wasm::HELLO]);
    assert_eq!(status.code(), Some(2), "one or the other: {stderr}");
}
