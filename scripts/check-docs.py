#!/usr/bin/env python3
"""Checks the documentation's links (make check, make docs): README.md, terraform/README.md and
the book's pages (docs/src). Every relative link must name a file that exists and, with a
#fragment, a heading of that page (the id GitHub and mdBook both give it); a link from a book
page must stay inside the book, where the built HTML can follow it; every page must be in
docs/src/SUMMARY.md, and every page SUMMARY.md lists must exist; every mdBook include
({{#include FILE:ANCHOR}}) must name a file that exists and an anchor it marks with
ANCHOR: and ANCHOR_END:. Links inside code blocks and code spans are not links. External links (http, https, mailto) are not fetched: the machine that runs the checks
may have no internet. Prints each broken link as FILE:LINE: message and exits 1 if any.

Usage: scripts/check-docs.py [ROOT]
"""

import re
import sys
from pathlib import Path

LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INCLUDE = re.compile(r"\{\{#include\s+([^}:\s]+)(?::([A-Za-z0-9_-]+))?\s*\}\}")


def prose_lines(text, spans=False):
    """(line number, line) outside fenced code blocks, with code spans blanked out unless
    `spans`."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        marker = re.match(r"^\s*(```|~~~)", line)
        if marker:
            fence = None if fence == marker.group(1) else (fence or marker.group(1))
            continue
        if fence is None:
            yield number, line if spans else re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)


def slug(heading):
    """The id mdBook (and GitHub) gives a heading: lower case, markup and punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_]{1,2}([^*_]+)[*_]{1,2}", r"\1", text)
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def anchors(path):
    ids, seen = set(), {}
    for _, line in prose_lines(path.read_text(), spans=True):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def check(root):
    book = root / "docs" / "src"
    pages = sorted(book.glob("*.md"))
    files = [root / "README.md", root / "terraform" / "README.md", *pages]
    errors = []
    for path in files:
        name = path.relative_to(root)
        in_book = path.parent == book
        for number, line in prose_lines(path.read_text()):
            for file_part, anchor in INCLUDE.findall(line) if in_book else []:
                dest = path.parent / file_part
                where = f"{name}:{number}: include {file_part}"
                if not dest.exists():
                    errors.append(f"{where}: no such file")
                elif anchor and not all(
                        re.search(rf"ANCHOR{end}:\s*{re.escape(anchor)}\b", dest.read_text())
                        for end in ("", "_END")):
                    errors.append(f"{where}: no ANCHOR: / ANCHOR_END: {anchor} in it")
            for target in LINK.findall(line):
                if re.match(r"^(https?|mailto):", target):
                    continue
                file_part, _, fragment = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                where = f"{name}:{number}: {target}"
                if not dest.exists():
                    errors.append(f"{where}: no such file")
                    continue
                if in_book and book.resolve() not in dest.parents and dest != book.resolve():
                    errors.append(f"{where}: leaves the book (docs/src), whose HTML cannot follow it")
                    continue
                if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                    errors.append(f"{where}: {dest.name} has no heading with the id {fragment!r}")
    summary = book / "SUMMARY.md"
    listed = {(book / t).resolve() for _, line in prose_lines(summary.read_text())
              for t in LINK.findall(line)}
    for page in pages:
        if page.name != "SUMMARY.md" and page.resolve() not in listed:
            errors.append(f"{page.relative_to(root)}: not in docs/src/SUMMARY.md")
    return errors


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"check-docs: {len(errors)} broken link(s)", file=sys.stderr)
        return 1
    print("check-docs: every link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
