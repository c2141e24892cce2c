#!/usr/bin/env python3
"""The layering of host/src, checked: no import cycles, no import running up.

ARCHITECTURE.md describes the layers; LAYERS below is the same order, top
first. A module (one .rs file) may import its own folder's modules and the
layers below its own, never one above, and no set of modules may import each
other in a circle (inside a folder too). A new folder under host/src must be
given a place in LAYERS (and in ARCHITECTURE.md's code map), or this fails.

An import is any `crate::…` or `super::…` path in a file's code: `use` trees
(nested groups included) and paths written inline. Comments and the
`#[cfg(test)]` module at the end of a file are not code the crate runs, so
they do not count.

    scripts/check-layers.py [SRC]     check (default host/src); exit 1 on a finding
    scripts/check-layers.py --self-test
"""
import os
import re
import sys
import tempfile

# Top first. Files at the root of src/ (app.rs, main.rs, lib.rs, scaffold.rs, shutdown.rs)
# are the top layer, "app": they wire the layers together.
LAYERS = ["app", "http", "control", "routing", "run", "wasm", "kv", "config", "oci", "observe", "base"]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def modules(src):
    """{module path tuple: file}; `a/mod.rs` is module ("a",), lib.rs and main.rs are ()."""
    found = {}
    for d, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(d, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
                parts = parts[:-1]
            found.setdefault(tuple(parts), path)
    return found


def code_of(text):
    """The text without comments and without the trailing test module."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = "\n".join(line.split("//", 1)[0] if '"' not in line else line
                     for line in text.splitlines() if not line.lstrip().startswith("//"))
    cut = text.find("#[cfg(test)]\nmod ")
    return text if cut < 0 else text[:cut]


def use_tree(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]] (braces may nest)."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        head = re.split(r"\s+as\s+", tree)[0].strip()
        return [[p for p in head.split("::") if p]] if head else []
    prefix = [p for p in tree[:brace].split("::") if p]
    inner = tree[brace + 1:tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    paths = []
    for item in items:
        for sub in use_tree(item):
            paths.append(prefix + sub)
    return paths or [prefix]


def imports(module, text, known):
    """The modules `module`'s code names, as module path tuples."""
    code = code_of(text)
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", code):
        paths += use_tree(m.group(1))
    inline = re.sub(r"\buse\s+(?:crate|super)::[^;]*;", "", code)
    paths += [p.split("::") for p in re.findall(rf"\b(?:crate|super)(?:::{IDENT})+", inline)]
    # A file's own folder: for a/b.rs it is ("a",); for a/mod.rs it is ("a",) too.
    is_folder = known.get(module, "").endswith("mod.rs")
    parent = module if is_folder else module[:-1]
    found = set()
    for path in paths:
        if path[0] == "crate":
            rest = path[1:]
        else:  # super::…
            rest = list(parent[:-1] if is_folder else parent)
            for part in path:
                if part == "super":
                    continue
                rest.append(part)
        for n in range(len(rest), -1, -1):
            target = tuple(rest[:n])
            if target in known:
                # Naming a folder's mod.rs from inside it, or the crate root, is not an import.
                if target != module and module[:len(target)] != target:
                    found.add(target)
                break
    return found


def layer_of(module, known):
    """A module's layer: its top folder's, or "app" for a file at the root."""
    folder = len(module) > 1 or known[module].endswith("mod.rs")
    return LAYERS.index(module[0]) if module and folder else 0


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def check(src):
    """Findings (one line each) for the crate under `src`."""
    known = modules(src)
    name = lambda m: "/".join(m) or "lib"
    findings = []
    path_is_folder = lambda path: path.endswith("mod.rs")
    for module in sorted(known):
        if module and (len(module) > 1 or path_is_folder(known[module])) and module[0] not in LAYERS:
            findings.append(f"{os.path.relpath(known[module], src)}: folder {module[0]}/ has no place in LAYERS "
                            "(scripts/check-layers.py) and ARCHITECTURE.md")
    if findings:
        return findings
    edges = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            edges[module] = imports(module, f.read(), known)
    for module in sorted(edges):
        for target in sorted(edges[module]):
            low, high = layer_of(module, known), layer_of(target, known)
            if high < low:
                findings.append(f"{os.path.relpath(known[module], src)} imports {name(target)}: "
                                f"{LAYERS[low]} is below {LAYERS[high]}")
    for comp in cycles(edges):
        findings.append("import cycle: " + " <-> ".join(name(m) for m in comp))
    return findings


def self_test():
    """The check finds what it is for, and passes a clean tree."""
    def tree(files):
        root = tempfile.mkdtemp(prefix="check-layers-")
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return root

    clean = tree({
        "lib.rs": "pub mod app; pub mod run; pub mod wasm;",
        "app.rs": "use crate::run::p2::{self, X};\nuse crate::wasm::{engine, sandbox::Y};",
        "run/mod.rs": "pub mod p2; pub mod fault;",
        "run/p2.rs": "use super::fault::Fault;\nfn f() { crate::wasm::engine::go(); }",
        "run/fault.rs": "// use crate::run::p2; (a comment)\n#[cfg(test)]\nmod tests { use crate::run::p2; }",
        "wasm/mod.rs": "pub mod engine; pub mod sandbox;",
        "wasm/engine.rs": "use crate::wasm::sandbox;",
        "wasm/sandbox.rs": "",
    })
    assert check(clean) == [], check(clean)
    upward = tree({
        "lib.rs": "", "run/mod.rs": "", "run/p2.rs": "",
        "wasm/mod.rs": "", "wasm/engine.rs": "use crate::{run::p2::Thing};",
    })
    found = check(upward)
    assert len(found) == 1 and "wasm/engine.rs imports run/p2" in found[0], found
    circle = tree({
        "lib.rs": "", "run/mod.rs": "", "run/a.rs": "use super::b::X;",
        "run/b.rs": "fn f() { crate::run::c::go() }", "run/c.rs": "use crate::run::{a::{self}};",
    })
    found = check(circle)
    assert found == ["import cycle: run/a <-> run/b <-> run/c"], found
    stray = tree({"lib.rs": "", "extra/mod.rs": "", "extra/x.rs": ""})
    assert "has no place in LAYERS" in check(stray)[0]
    print("check-layers self-test: 4 cases pass")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return 0
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "host", "src"))
    findings = check(src)
    for line in findings:
        print(line)
    if findings:
        print(f"check-layers: {len(findings)} finding(s); the layers are in ARCHITECTURE.md")
        return 1
    print(f"check-layers: {len(modules(src))} modules, no import cycle, no import running up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
