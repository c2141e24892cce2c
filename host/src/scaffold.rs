//! `wasmlet new`: a handler's folder, made from the guide's own hellos.
//!
//! The files are the ones `guest/` holds, embedded with `include_str!`: the
//! Rust hello (`guest/src/lib.rs`), the Python and JavaScript apps with
//! their `build.sh`, and every `.wit` file of `wit/`, so the folder builds
//! on its own, anywhere. What `wasmlet new` adds is a `wasmlet.toml` serving
//! the component on every path and, for Rust, a standalone `Cargo.toml`.
//! The test suite builds the same `guest/` files, so a template cannot rot
//! unnoticed.
//!
//! The folder is written under a temporary name next to NAME and renamed
//! into place only when complete: nothing is left behind on a failure, and
//! a user's files are never written over.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The languages `--lang` takes, as written on the command line.
pub const LANGUAGES: [&str; 3] = ["rust", "python", "javascript"];

/// The `wit-bindgen` a Rust handler is built with: the one the workspace's
/// `guest/` uses (a unit test holds it to `Cargo.lock`).
const WIT_BINDGEN: &str = "0.61.1";

/// The Rust hello reads its WIT from the repository's `wit/` (`../wit`);
/// the folder's own `wit/` is beside its `Cargo.toml`.
const RUST_WIT_PATH: (&str, &str) = (r#"path: "../wit","#, r#"path: "wit","#);

/// The longest name accepted: a folder, a package and a file name.
const MAX_NAME_LEN: usize = 64;

/// Names Cargo refuses for a package, or that shadow the standard crates.
const RESERVED: &[&str] = &[
    "alloc",
    "core",
    "proc-macro",
    "std",
    "test",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Every `.wit` file of `wit/`, by its path inside the folder (a unit test
/// checks that none is missing). `wit/README.md` stays behind: the image's
/// build context leaves Markdown out.
const WIT: &[(&str, &str)] = &[
    ("wit/world.wit", include_str!("../../wit/world.wit")),
    ("wit/deps/cli.wit", include_str!("../../wit/deps/cli.wit")),
    (
        "wit/deps/clocks.wit",
        include_str!("../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/config/store.wit",
        include_str!("../../wit/deps/config/store.wit"),
    ),
    (
        "wit/deps/config/world.wit",
        include_str!("../../wit/deps/config/world.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../wit/deps/filesystem.wit"),
    ),
    ("wit/deps/http.wit", include_str!("../../wit/deps/http.wit")),
    ("wit/deps/io.wit", include_str!("../../wit/deps/io.wit")),
    (
        "wit/deps/keyvalue/atomic.wit",
        include_str!("../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/watch.wit",
        include_str!("../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        "wit/deps/keyvalue/world.wit",
        include_str!("../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "wit/deps/random.wit",
        include_str!("../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../wit/deps/sockets.wit"),
    ),
];

const RUST_LIB: &str = include_str!("../../guest/src/lib.rs");
const PYTHON_APP: &str = include_str!("../../guest/python/app.py");
const PYTHON_BUILD: &str = include_str!("../../guest/python/build.sh");
const JAVASCRIPT_APP: &str = include_str!("../../guest/javascript/app.js");
const JAVASCRIPT_BUILD: &str = include_str!("../../guest/javascript/build.sh");

/// One file of the folder.
struct File {
    path: &'static str,
    text: String,
    executable: bool,
}

impl File {
    fn new(path: &'static str, text: impl Into<String>) -> File {
        File {
            path,
            text: text.into(),
            executable: false,
        }
    }

    fn script(path: &'static str, text: &str) -> File {
        File {
            executable: true,
            ..File::new(path, text)
        }
    }
}

/// What a language's folder holds and how it is built.
struct Plan {
    language: &'static str,
    files: Vec<File>,
    /// The commands, run in the folder, that build the component.
    build: Vec<String>,
    /// The built component, relative to the folder.
    component: String,
    /// A line about the first build, if it downloads a toolchain.
    note: Option<&'static str>,
}

/// `wasmlet new --lang LANG NAME`, in the current directory: checks both,
/// writes the folder, and returns what to print (the commands that build
/// and serve it).
pub fn new(lang: &str, name: &str) -> Result<String> {
    // Empty: `parent.join(name)` is `name`, as the user wrote it.
    let parent = Path::new("");
    if !LANGUAGES.contains(&lang) {
        bail!(
            "--lang `{}`: not a language `wasmlet new` knows; give rust, python or javascript",
            lang.escape_debug()
        );
    }
    check_name(name)?;
    let target = parent.join(name);
    if !is_absent_or_empty(&target)? {
        bail!(
            "NAME `{name}`: `{}` already exists and is not an empty folder; `wasmlet new` never writes over files (give another name, or remove it)",
            target.display()
        );
    }
    let plan = plan(lang, name)?;
    write_folder(parent, name, &plan.files)?;

    let mut text = format!(
        "created `{name}/`: a {} handler ({})\n\nbuild it and serve it on http://127.0.0.1:5000/:\n\n    cd {name}\n",
        plan.language,
        listing(&plan.files)
    );
    for command in &plan.build {
        text.push_str(&format!("    {command}\n"));
    }
    text.push_str("    wasmlet serve --config wasmlet.toml\n\n");
    text.push_str("then `curl http://127.0.0.1:5000/` answers `Hello World!`.\n");
    if let Some(note) = plan.note {
        text.push_str(note);
        text.push('\n');
    }
    text.push_str(&format!(
        "wasmlet.toml serves {} on every path; the guide is guest/README.md in wasmlet's repository.\n",
        plan.component
    ));
    Ok(text)
}

/// A name is a folder, a Cargo package, a component file and a WIT-style
/// identifier all at once, so it is held to what all of them accept.
fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.ends_with('-')
        || name.contains("--")
    {
        Some(
            "a name is lowercase letters, digits and single hyphens, starting with a letter (like `my-handler`); it names the folder made here, the package and the component",
        )
    } else if RESERVED.contains(&name) {
        Some("it is a Rust keyword or a standard crate's name, which Cargo refuses as a package")
    } else {
        None
    };
    match reason {
        Some(reason) => bail!("NAME `{}` is not valid: {reason}", name.escape_debug()),
        None => Ok(()),
    }
}

/// True when nothing is at `path`, or an empty folder (not a link).
fn is_absent_or_empty(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("failed to look at `{}`", path.display())),
        Ok(meta) if meta.is_dir() => Ok(fs::read_dir(path)
            .with_context(|| format!("failed to read `{}`", path.display()))?
            .next()
            .is_none()),
        Ok(_) => Ok(false),
    }
}

fn plan(lang: &str, name: &str) -> Result<Plan> {
    let manifest = |component: &str| {
        File::new(
            "wasmlet.toml",
            format!(
                "# The routes `wasmlet serve --config wasmlet.toml` serves: the handler on\n\
                 # every path. Paths, grants and limits: README.md#the-manifest in wasmlet's\n\
                 # repository.\n\
                 [[route]]\n\
                 path = \"/...\"\n\
                 component = \"{component}\"\n"
            ),
        )
    };
    let wit = || WIT.iter().map(|(path, text)| File::new(path, *text));
    Ok(match lang {
        "rust" => {
            let (from, to) = RUST_WIT_PATH;
            if RUST_LIB.matches(from).count() != 1 {
                bail!("internal: guest/src/lib.rs no longer reads its WIT from `../wit`");
            }
            let component = format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            );
            let mut files = vec![
                File::new("Cargo.toml", cargo_toml(name)),
                File::new(".gitignore", "/target\n"),
                File::new("src/lib.rs", RUST_LIB.replacen(from, to, 1)),
                manifest(&component),
            ];
            files.extend(wit());
            Plan {
                language: "Rust",
                files,
                build: vec![
                    "rustup target add wasm32-wasip2".into(),
                    "cargo build --target wasm32-wasip2 --release".into(),
                ],
                component,
                note: None,
            }
        }
        "python" | "javascript" => {
            let (language, app, app_text, build, note) = if lang == "python" {
                (
                    "Python",
                    "app.py",
                    PYTHON_APP,
                    PYTHON_BUILD,
                    "the first build installs componentize-py under ${WASMLET_TOOLS_DIR:-~/.cache/wasmlet/tools} (from PyPI; needs python3 with venv)",
                )
            } else {
                (
                    "JavaScript",
                    "app.js",
                    JAVASCRIPT_APP,
                    JAVASCRIPT_BUILD,
                    "the first build installs componentize-js under ${WASMLET_TOOLS_DIR:-~/.cache/wasmlet/tools} (from npm; needs Node.js)",
                )
            };
            let mut files = vec![
                File::new(app, app_text),
                File::script("build.sh", build),
                File::new(".gitignore", "/app.wasm\n"),
                manifest("app.wasm"),
            ];
            files.extend(wit());
            Plan {
                language,
                files,
                build: vec!["./build.sh".into()],
                component: "app.wasm".into(),
                note: Some(note),
            }
        }
        _ => unreachable!("checked above"),
    })
}

/// A standalone package: its own `[workspace]`, so that it also builds
/// inside another Cargo workspace.
fn cargo_toml(name: &str) -> String {
    format!(
        "[package]\n\
         name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         edition = \"2024\"\n\
         \n\
         # A wasi:http component: rustc writes it directly for wasm32-wasip2.\n\
         [lib]\n\
         crate-type = [\"cdylib\"]\n\
         \n\
         [dependencies]\n\
         wit-bindgen = \"={WIT_BINDGEN}\"\n\
         \n\
         # A workspace of its own, so it builds inside another one too.\n\
         [workspace]\n\
         \n\
         # No debug info in the component: it would make it many times larger.\n\
         [profile.release]\n\
         debug = false\n\
         strip = true\n"
    )
}

/// `Cargo.toml, src/lib.rs, wit/, wasmlet.toml`: the top of the folder.
fn listing(files: &[File]) -> String {
    let mut shown: Vec<String> = Vec::new();
    for file in files {
        if file.path.starts_with('.') {
            continue;
        }
        let top = match file.path.split_once('/') {
            Some(("src", _)) => file.path.to_string(),
            Some((dir, _)) => format!("{dir}/"),
            None => file.path.to_string(),
        };
        if !shown.contains(&top) {
            shown.push(top);
        }
    }
    shown.join(", ")
}

/// Writes `files` into `parent/.NAME.new-PID`, then renames it to
/// `parent/NAME` (which may be an empty folder: rename replaces those, and
/// fails on anything else). On a failure the temporary folder is removed.
fn write_folder(parent: &Path, name: &str, files: &[File]) -> Result<()> {
    let staging = parent.join(format!(".{name}.new-{}", std::process::id()));
    fs::create_dir(&staging)
        .with_context(|| format!("failed to create `{}`", staging.display()))?;
    let written = files
        .iter()
        .try_for_each(|file| write_file(&staging, file))
        .and_then(|()| {
            fs::rename(&staging, parent.join(name)).with_context(|| {
                format!(
                    "NAME `{name}`: failed to move the new folder into place (did `{name}` appear meanwhile?)"
                )
            })
        });
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written
}

fn write_file(dir: &Path, file: &File) -> Result<()> {
    let path = dir.join(file.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create `{}`", parent.display()))?;
    }
    // Less the umask, as for any new file.
    let mode = if file.executable { 0o777 } else { 0o666 };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("failed to create `{}`", path.display()))?;
    out.write_all(file.text.as_bytes())
        .with_context(|| format!("failed to write `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.join("wit")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "wit") {
                    let rel = path.strip_prefix(&root).unwrap().to_str().unwrap();
                    on_disk.push(rel.to_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = WIT.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn wit_bindgen_is_the_workspaces() {
        let lock = include_str!("../../Cargo.lock");
        assert!(
            lock.contains(&format!(
                "name = \"wit-bindgen\"\nversion = \"{WIT_BINDGEN}\""
            )),
            "Cargo.lock has no wit-bindgen {WIT_BINDGEN}"
        );
        let major_minor = WIT_BINDGEN.rsplit_once('.').unwrap().0;
        assert!(
            include_str!("../../Cargo.toml").contains(&format!("wit-bindgen = \"{major_minor}\"")),
            "the workspace's wit-bindgen is not {major_minor}"
        );
        assert_eq!(RUST_LIB.matches(RUST_WIT_PATH.0).count(), 1);
    }

    #[test]
    fn names() {
        for good in ["hello", "my-handler", "a1", "h2-api-3"] {
            check_name(good).unwrap();
        }
        for bad in [
            "", "../x", "x/y", "Hello", "1st", "-x", "x-", "a--b", "a_b", "a.b", "std", "fn", "a b",
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("NAME `"), "{bad}: {e}");
        }
        check_name(&"a".repeat(64)).unwrap();
        check_name(&"a".repeat(65)).unwrap_err();
    }
}
