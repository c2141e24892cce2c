#!/usr/bin/env python3
"""Checks every relative link and #anchor in the tracked markdown files.

    scripts/check-links.py [ROOT]     default: this repository

A link `[text](path#anchor)` must name a tracked file or folder (relative to
the file it is in), and its anchor a heading of that markdown file, slugged
the way GitHub does (`## Test it under \\`wasmtime serve\\`` is
`#test-it-under-wasmtime-serve`). Links with a scheme (https:, mailto:) are
not fetched. Code blocks and `inline code` are skipped. Prints one line per
broken link, `file:line: target: reason`, and exits 1 if there was any.
"""

import re
import subprocess
import sys
from pathlib import PurePosixPath

# [text](target) or [text](target "title"); ![img](target) too.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L\d+(-L\d+)?$")


def tracked_files(root):
    out = subprocess.run(
        ["git", "-C", root, "ls-files", "-z"], check=True, capture_output=True
    ).stdout.decode()
    return {f for f in out.split("\0") if f}


def prose_lines(text):
    """(line number, line) outside fenced code blocks, inline code blanked."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = None
            continue
        if marker:
            fence = marker.group(1)
            continue
        yield number, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    found = set()
    seen = {}
    fence = None
    for line in text.split("\n"):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = None
            continue
        if marker:
            fence = marker.group(1)
            continue
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def check(root):
    files = tracked_files(root)
    folders = {str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."}
    texts = {}

    def text_of(path):
        if path not in texts:
            with open(f"{root}/{path}", encoding="utf-8") as f:
                texts[path] = f.read()
        return texts[path]

    broken = []
    for md in sorted(f for f in files if f.endswith(".md")):
        here = PurePosixPath(md).parent
        lines = list(prose_lines(text_of(md)))
        for i, (number, line) in enumerate(lines):
            # A link's text may wrap onto the next line: search both, keep
            # the links that start on this one.
            following = lines[i + 1][1] if i + 1 < len(lines) and lines[i + 1][0] == number + 1 else ""
            both = f"{line}\n{following}"
            targets = [m.group(1) for m in INLINE_LINK.finditer(both) if m.start() < len(line)]
            targets += REFERENCE_DEF.findall(line)
            for target in targets:
                if SCHEME.match(target) or target.startswith("//"):
                    continue
                path, _, anchor = target.partition("#")
                if path:
                    resolved = normalise(here / path) if not path.startswith("/") else normalise(PurePosixPath(path.lstrip("/")))
                else:
                    resolved = md
                where = f"{md}:{number}: {target}"
                if resolved is None:
                    broken.append(f"{where}: points outside the repository")
                    continue
                is_dir = resolved in folders or resolved == ""
                if resolved not in files and not is_dir:
                    broken.append(f"{where}: no tracked file or folder `{resolved}`")
                    continue
                if not anchor:
                    continue
                if is_dir:
                    broken.append(f"{where}: an anchor on a folder")
                elif resolved.endswith(".md"):
                    if anchor not in anchors(text_of(resolved)):
                        broken.append(f"{where}: no heading `#{anchor}` in `{resolved}`")
                elif not LINE_ANCHOR.match(anchor):
                    broken.append(f"{where}: `#{anchor}` is not a heading or a line")
    return broken


def normalise(path):
    """`a/b/../c` -> `a/c`; None if it climbs out of the repository."""
    parts = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts).rstrip("/")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else str(PurePosixPath(__file__).parent.parent)
    broken = check(root)
    for line in broken:
        print(line)
    if broken:
        print(f"check-links: {len(broken)} broken link(s)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
