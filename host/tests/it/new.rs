//! `wasmlet new`: for each language, the folder it writes builds and serves
//! `Hello World!` with exactly the commands it prints; bad input is one
//! `error:` line naming the argument, and nothing is written.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// `wasmlet new ARGS...` run in `dir`: (exit code, stdout, stderr).
fn new_in(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(BIN)
        .arg("new")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run wasmlet new");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The commands `wasmlet new` printed: its indented lines.
fn printed_commands(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .map(str::to_owned)
        .collect()
}

/// Runs the printed commands from `parent`, as a user would type them:
/// `cd DIR` moves, every other command but the last runs in `sh`, and the
/// last, `wasmlet serve ...`, is started here (on port 0, with `extra`
/// flags) and returned.
async fn build_and_serve(parent: &Path, stdout: &str, extra: &[&str]) -> Wasmlet {
    let commands = printed_commands(stdout);
    let (serve, build) = commands.split_last().expect("commands printed");
    let mut dir = parent.to_path_buf();
    for command in build {
        if let Some(to) = command.strip_prefix("cd ") {
            dir = dir.join(to);
            continue;
        }
        let started = Instant::now();
        let mut sh = Command::new("sh");
        sh.args(["-c", command]).current_dir(&dir);
        // As for the fixtures' nested build: a surrounding cargo's (or a
        // lint or coverage wrapper's) variables would move or distort it.
        for var in wasm::SCRUBBED_ENV {
            sh.env_remove(var);
        }
        let output = sh.output().expect("failed to run sh");
        assert!(
            output.status.success(),
            "`{command}` in {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("new: `{command}` took {:.1?}", started.elapsed());
    }
    let args: Vec<String> = serve
        .strip_prefix("wasmlet serve ")
        .unwrap_or_else(|| panic!("the last command is not `wasmlet serve`: {serve}"))
        .split_whitespace()
        // The manifest and any other file named are in the folder.
        .map(|arg| match dir.join(arg) {
            path if path.exists() => path.to_str().unwrap().to_owned(),
            _ => arg.to_owned(),
        })
        .collect();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(extra);
    Wasmlet::serve(&args)
}

/// What `wasmlet new` must have said and written, whatever the language.
fn assert_made(parent: &Path, name: &str, stdout: &str, files: &[&str]) {
    let commands = printed_commands(stdout);
    assert_eq!(
        commands.first().map(String::as_str),
        Some(&*format!("cd {name}"))
    );
    assert_eq!(
        commands.last().map(String::as_str),
        Some("wasmlet serve --config wasmlet.toml"),
        "{stdout}"
    );
    assert!(stdout.contains("http://127.0.0.1:5000/"), "{stdout}");
    for file in files
        .iter()
        .chain(&["wasmlet.toml", "wit/world.wit", "wit/deps/http.wit"])
    {
        assert!(
            parent.join(name).join(file).is_file(),
            "no {file}: {stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_by_default_builds_and_serves_hello_world_with_the_printed_commands() {
    // A fresh build of wit-bindgen and its macros takes about a minute on
    // 2 cores, so the folder is made at the same path every run and keeps
    // the `target/` of the last run: the printed commands are still what
    // runs, and `cargo build` finds the dependencies built. The path is
    // inside this repository's workspace, which the folder's own
    // `[workspace]` table must keep it out of.
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-rust");
    let name = "hello-rust";
    let folder = parent.join(name);
    let kept = parent.join("target-of-the-last-run");
    std::fs::create_dir_all(&parent).unwrap();
    if folder.join("target").is_dir() {
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::rename(folder.join("target"), &kept).unwrap();
    }
    if folder.exists() {
        std::fs::remove_dir_all(&folder).unwrap();
    }

    let (code, stdout, stderr) = new_in(&parent, &[name]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_made(&parent, name, &stdout, &["Cargo.toml", "src/lib.rs"]);
    let commands = printed_commands(&stdout);
    assert!(
        commands.contains(&"cargo build --target wasm32-wasip2 --release".to_owned()),
        "{stdout}"
    );
    let manifest = std::fs::read_to_string(folder.join("wasmlet.toml")).unwrap();
    assert!(
        manifest.contains("component = \"target/wasm32-wasip2/release/hello_rust.wasm\""),
        "{manifest}"
    );
    if kept.is_dir() {
        std::fs::rename(&kept, folder.join("target")).unwrap();
    }

    let host = build_and_serve(&parent, &stdout, &[]).await;
    let hello = get(host.public, "/").await;
    assert_eq!((hello.status, hello.text().as_str()), (200, "Hello World!"));
    assert_eq!(get(host.public, "/nope").await.status, 404);
}

/// Python and JavaScript: the folder's `build.sh` is the guide's, so it
/// installs (or finds) the same pinned toolchain and hits the same build
/// cache as the fixtures' build of `guest/`.
async fn scripted(lang: &str, component: &str) {
    let parent = tempdir();
    let name = format!("hello-{lang}");
    let (code, stdout, stderr) = new_in(parent.path(), &["--lang", lang, &name]);
    assert_eq!(code, Some(0), "{stderr}");
    let app = if lang == "python" { "app.py" } else { "app.js" };
    assert_made(parent.path(), &name, &stdout, &[app, "build.sh"]);
    assert_eq!(
        &printed_commands(&stdout)[1..],
        ["./build.sh", "wasmlet serve --config wasmlet.toml"],
        "{stdout}"
    );
    // A component these tests compiled already (when the build is the
    // fixture's, byte for byte) loads from the shared compile cache.
    let cache = crate::toolchains::cache_dir(component);
    let host = build_and_serve(parent.path(), &stdout, &["--cache-dir", &cache]).await;
    let hello = get(host.public, "/").await;
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "Hello World!"),
        "{lang}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_builds_and_serves_hello_world_with_the_printed_commands() {
    scripted("python", wasm::HELLO_PYTHON).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_builds_and_serves_hello_world_with_the_printed_commands() {
    scripted("javascript", wasm::HELLO_JAVASCRIPT).await;
}

/// Every path under `dir`, to show that a refusal wrote nothing.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn bad_input_is_one_error_naming_the_argument_and_writes_nothing() {
    let root = tempdir();
    let here = root.path().join("here");
    std::fs::create_dir(&here).unwrap();
    std::fs::create_dir(here.join("taken")).unwrap();
    write(&here.join("taken/keep.txt"), "mine");
    write(&here.join("a-file"), "mine too");
    std::fs::create_dir(here.join("empty")).unwrap();

    let cases: &[(&[&str], &str)] = &[
        (&["taken"], "NAME `taken`"),
        (&["--lang", "python", "taken"], "NAME `taken`"),
        (&["a-file"], "NAME `a-file`"),
        (&["../x"], "NAME `../x`"),
        (&["x/y"], "NAME `x/y`"),
        (&["Hello"], "NAME `Hello`"),
        (&["my_handler"], "NAME `my_handler`"),
        (&["1st"], "NAME `1st`"),
        (&["a--b"], "NAME `a--b`"),
        (&["std"], "NAME `std`"),
        (&[""], "NAME ``"),
        (&["--lang", "go", "hello"], "--lang `go`"),
        (&["--lang", "Rust", "hello"], "--lang `Rust`"),
    ];
    let before = tree(root.path());
    for (args, names) in cases {
        let (code, stdout, stderr) = new_in(&here, args);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(names),
            "{args:?}: no `{names}` in {stderr}"
        );
        assert_eq!(tree(root.path()), before, "{args:?} wrote something");
    }
    let absolute = root.path().join("abs");
    let (code, _, stderr) = new_in(&here, &[path_str(&absolute)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not valid"), "{stderr}");
    assert_eq!(
        tree(root.path()),
        before,
        "an absolute NAME wrote something"
    );
    assert_eq!(
        std::fs::read_to_string(here.join("taken/keep.txt")).unwrap(),
        "mine"
    );

    // An empty folder is filled, as if it were not there.
    let (code, _, stderr) = new_in(&here, &["empty"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(here.join("empty/Cargo.toml").is_file());
    let left: Vec<_> = std::fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
