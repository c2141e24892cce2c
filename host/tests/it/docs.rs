//! Issue 20: the docs held to the code. README's configuration table
//! against `wasmlet serve --help` (flags, environment variables, defaults,
//! both ways), the metrics table in docs/operations.md against a live
//! `/metrics`, and scripts/check-links.py against the tracked markdown.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn read_doc(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The rows of the first table under the heading `heading` (`## Name`),
/// split into cells (a `\|` inside a cell is not a separator).
fn table_rows(doc: &str, file: &str, heading: &str) -> Vec<Vec<String>> {
    let section = doc
        .split('\n')
        .skip_while(|line| line.trim() != heading)
        .skip(1)
        .take_while(|line| !line.starts_with("## "));
    let rows: Vec<Vec<String>> = section
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its |---| line
        .map(|line| {
            let mut cells = vec![String::new()];
            let mut chars = line.trim().trim_matches('|').chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'|') => {
                        cells.last_mut().unwrap().push(chars.next().unwrap())
                    }
                    '|' => cells.push(String::new()),
                    c => cells.last_mut().unwrap().push(c),
                }
            }
            cells.into_iter().map(|c| c.trim().to_owned()).collect()
        })
        .collect();
    assert!(!rows.is_empty(), "{file}: no table under `{heading}`");
    rows
}

/// The text of each `code span` in a cell, in order.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// What README's configuration table documents for one flag.
#[derive(Debug, PartialEq)]
struct Documented {
    env: Option<String>,
    /// The cell's first code span when the cell starts with one.
    default: Option<String>,
}

/// `--flag` → its row, plus the environment variables of rows without a flag
/// and the positional arguments (a bare `NAME`).
struct ConfigTable {
    flags: BTreeMap<String, Documented>,
    env_only: Vec<String>,
    positional: Vec<String>,
}

fn config_table(readme: &str) -> ConfigTable {
    let mut table = ConfigTable {
        flags: BTreeMap::new(),
        env_only: Vec::new(),
        positional: Vec::new(),
    };
    for row in table_rows(readme, "README.md", "## Configuration") {
        assert!(
            row.len() >= 4,
            "README.md: configuration row with under 4 cells: {row:?}"
        );
        let env = code_spans(&row[1]).first().map(|s| s.to_string());
        let default = row[2]
            .starts_with('`')
            .then(|| code_spans(&row[2])[0].to_string());
        match code_spans(&row[0]).first() {
            Some(flag) if flag.starts_with("--") => {
                let name = flag.split_whitespace().next().unwrap().to_string();
                let previous = table
                    .flags
                    .insert(name.clone(), Documented { env, default });
                assert!(previous.is_none(), "README.md: `{name}` documented twice");
            }
            Some(positional) => table.positional.push(positional.to_string()),
            None => table.env_only.push(
                env.unwrap_or_else(|| panic!("README.md: a row with no flag and no env: {row:?}")),
            ),
        }
    }
    table
}

/// `--flag` → (env, default) as `wasmlet serve --help` prints them.
fn help_flags(help: &str) -> BTreeMap<String, Documented> {
    let options = help
        .split_once("\nOptions:\n")
        .expect("`wasmlet serve --help` has no Options section")
        .1;
    // One entry per option: its first line starts with `-`, the rest are its
    // wrapped description.
    let mut entries: Vec<String> = Vec::new();
    for line in options.lines() {
        let text = line.trim();
        if text.starts_with('-') && line.starts_with("  ") && !line.starts_with("          ") {
            entries.push(text.to_owned());
        } else if let Some(entry) = entries.last_mut() {
            entry.push(' ');
            entry.push_str(text);
        }
    }
    let bracketed = |entry: &str, key: &str| -> Option<String> {
        let rest = &entry[entry.find(&format!("[{key}: "))? + key.len() + 3..];
        Some(rest[..rest.find(']')?].to_owned())
    };
    entries
        .iter()
        .filter_map(|entry| {
            let flag = entry
                .split([' ', ','])
                .find(|word| word.starts_with("--"))?
                .to_owned();
            if flag == "--help" || flag == "--version" {
                return None;
            }
            let env = bracketed(entry, "env").map(|e| e.split('=').next().unwrap().to_owned());
            let default = bracketed(entry, "default");
            Some((flag, Documented { env, default }))
        })
        .collect()
}

#[test]
fn the_configuration_table_matches_serve_help() {
    let (status, help, stderr) = run(&["serve", "--help"]);
    assert!(status.success(), "wasmlet serve --help failed: {stderr}");
    let readme = read_doc("README.md");
    let documented = config_table(&readme);
    let actual = help_flags(&help);
    assert!(
        actual.len() > 10,
        "parsed too few flags from --help:\n{help}"
    );

    let undocumented: Vec<_> = actual
        .keys()
        .filter(|f| !documented.flags.contains_key(*f))
        .collect();
    let unknown: Vec<_> = documented
        .flags
        .keys()
        .filter(|f| !actual.contains_key(*f))
        .collect();
    assert!(
        undocumented.is_empty(),
        "in `wasmlet serve --help` but not in README.md's configuration table: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in README.md's configuration table but not in `wasmlet serve --help`: {unknown:?}"
    );

    for (flag, help) in &actual {
        let doc = &documented.flags[flag];
        assert_eq!(
            doc.env, help.env,
            "README.md: `{flag}`'s environment variable differs from --help's"
        );
        match &help.default {
            Some(default) => assert_eq!(
                doc.default.as_ref(),
                Some(default),
                "README.md: `{flag}`'s default should start with `{default}`, as --help says"
            ),
            None => assert_eq!(
                doc.default, None,
                "README.md: `{flag}` has no default in --help, but the table starts its default cell with a value"
            ),
        }
    }
    for env in &documented.env_only {
        assert!(
            help.contains(env.as_str()),
            "README.md documents `{env}`, which `wasmlet serve --help` never mentions"
        );
    }
    for name in &documented.positional {
        assert!(
            help.contains(&format!("[{name}]")) || help.contains(&format!("<{name}>")),
            "README.md documents the argument `{name}`, which `wasmlet serve --help` lacks"
        );
    }
}

/// Metrics in docs/operations.md's metrics table: each name with the
/// labels its `{...}` lists.
fn documented_metrics(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    table_rows(doc, "docs/operations.md", "## Metrics")
        .iter()
        .flat_map(|row| {
            code_spans(&row[0])
                .into_iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
        .map(|span| match span.split_once('{') {
            Some((name, labels)) => (
                name.to_owned(),
                labels
                    .trim_end_matches('}')
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .collect(),
            ),
            None => (span, BTreeSet::new()),
        })
        .collect()
}

/// Label names in a sample line's `{...}`; values are quoted and may hold
/// escaped quotes.
fn sample_labels(line: &str) -> BTreeSet<String> {
    let Some((_, rest)) = line.split_once('{') else {
        return BTreeSet::new();
    };
    let mut labels = BTreeSet::new();
    let mut chars = rest.chars();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '=' => {
                labels.insert(std::mem::take(&mut name));
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            ',' | ' ' => {}
            '}' => break,
            c => name.push(c),
        }
    }
    labels
}

/// Each family on `/metrics` by the name the table documents it under (a
/// counter's samples end in `_total`; a histogram goes by its family
/// name), with the labels its samples carry (a histogram's `le` left out).
fn exposed_metrics(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families = BTreeMap::new();
    // Sample name -> the family name the table uses.
    let mut family_of = BTreeMap::new();
    for line in exposition.lines() {
        let Some(family) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = family.split_whitespace();
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        let documented = match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        };
        let samples = match kind {
            "histogram" => ["_bucket", "_sum", "_count"]
                .map(|s| format!("{name}{s}"))
                .to_vec(),
            _ => vec![documented.clone()],
        };
        for sample in samples {
            family_of.insert(sample, documented.clone());
        }
        families.insert(documented, BTreeSet::new());
    }
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        if let Some(family) = family_of.get(name) {
            let mut labels = sample_labels(line);
            labels.remove("le");
            families.get_mut(family).unwrap().extend(labels);
        }
    }
    families
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_table_matches_a_live_metrics_endpoint() {
    // --max-total-memory makes the guest-memory gauges exist, and a route
    // with a canary the canary series.
    let dir = tempdir();
    copy(wasm::HELLO, &dir.path().join("hello.wasm"));
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[key_value_store.default]\ntype = \"memory\"\n\n\
             [[route]]\npath = \"/...\"\ncomponent = \"hello.wasm\"\ncanary = {{ component = \"hello.wasm\", weight = 50 }}\n\n\
             [[route]]\npath = \"/count\"\ncomponent = \"{}\"\nkey_value_stores = [\"default\"]\n",
            wasm::HELLO_COUNTER
        ),
    );
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&manifest),
        "--max-total-memory",
        "64MiB",
    ]);
    assert_eq!(get(host.public, "/").await.status, 200);
    // The key-value series exist once a guest used a store.
    assert_eq!(get(host.public, "/count").await.status, 200);
    // A family without samples is left out of the exposition, and the
    // rejection counters get their first sample at the first rejection.
    assert_eq!(get(host.public, "/a/%2e%2e/b").await.status, 400);
    let exposition = get(host.admin, "/metrics").await.text();
    let live = exposed_metrics(&exposition);
    let labelled = documented_metrics(&read_doc("docs/operations.md"));
    for (name, labels) in &live {
        if let Some(doc) = labelled.get(name) {
            assert_eq!(
                doc, labels,
                "docs/operations.md documents {name} with labels {doc:?}; /metrics has {labels:?}"
            );
        }
    }
    let live: BTreeSet<String> = live.into_keys().collect();
    let mut documented: BTreeSet<String> = labelled.into_keys().collect();
    assert!(
        documented.len() > 10,
        "parsed too few metric names: {documented:?}"
    );
    // The working set exists only where the process's memory cgroup is
    // readable; elsewhere it must be absent, not zero.
    if !memory_cgroup_readable() {
        assert!(documented.remove("wasmlet_memory_working_set_bytes"));
    }
    // The TLS series exist only with --tls-cert (tls.rs reads them there).
    let tls: Vec<String> = documented
        .iter()
        .filter(|name| name.starts_with("wasmlet_tls_"))
        .cloned()
        .collect();
    assert_eq!(tls.len(), 3, "{tls:?}");
    for name in tls {
        documented.remove(&name);
    }

    let undocumented: Vec<_> = live.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&live).collect();
    assert!(
        undocumented.is_empty(),
        "on /metrics but not in docs/operations.md's metrics table: {undocumented:?}\n{exposition}"
    );
    assert!(
        missing.is_empty(),
        "in docs/operations.md's metrics table but not on /metrics: {missing:?}\n{exposition}"
    );
}

/// `scripts/check-links.py ROOT`: its exit status and output.
fn check_links(root: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/check-links.py"))
        .arg(root)
        .output()
        .expect("cannot run python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let (ok, output) = check_links(&repo_root());
    assert!(ok, "broken links in the docs:\n{output}");
}

#[test]
fn the_link_check_fails_on_a_broken_link_or_anchor() {
    let dir = tempdir();
    let root = dir.path();
    std::fs::create_dir(root.join("sub")).unwrap();
    write(
        &root.join("a.md"),
        "# A\n\n## Part one\n\nSee [b](sub/b.md#part-two) and [here](#part-one).\n",
    );
    write(
        &root.join("sub/b.md"),
        "# B\n\n## Part `two`\n\n[up](../a.md)\n",
    );
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    let (ok, output) = check_links(root);
    assert!(ok, "a clean tree was reported broken:\n{output}");

    write(
        &root.join("a.md"),
        "# A\n\nSee [b](sub/b.md#part-three), [c](c.md) and\n[wrapped\ntext](#nowhere).\n",
    );
    let (ok, output) = check_links(root);
    assert!(!ok, "broken links passed:\n{output}");
    for expect in [
        "a.md:3: sub/b.md#part-three: no heading `#part-three`",
        "a.md:3: c.md: no tracked file or folder `c.md`",
        "a.md:4: #nowhere: no heading `#nowhere` in `a.md`",
    ] {
        assert!(output.contains(expect), "expected `{expect}` in:\n{output}");
    }
}
