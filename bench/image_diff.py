"""Issue #13's proof that a container bake makes the same image as a VM bake: every
package and every file of two local images, compared.

    .venv/bin/python bench/image_diff.py A.qcow2 B.qcow2 [--json out.json]

Each image's root partition is mounted read-only (root, loop device, no journal replay)
and walked: for each path its type, mode, owner, size, the sha256 of a regular file's
content and a symlink's target; and the installed Debian packages with their versions
(dpkg's database in the image). Printed: the packages that differ, then the paths only
in A, only in B and in both but different, grouped by top folder with up to
--show of each. Time stamps are not compared (no two bakes share them).

Not bakery code, and not a test: a measurement whose output goes into the closing
note and docs/local-bake.md, where each remaining difference is explained.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bakery.local.base_image import partition_table


@contextmanager
def mounted(image: Path, work: Path, arch: str, size_gb: int) -> Iterator[Path]:
    raw = work / f"{image.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    _, start_mib, size_mib = partition_table(arch, size_gb)
    loop = subprocess.run(
        ["losetup", "--show", "-f", "-r", "-o", str(start_mib << 20),
         "--sizelimit", str(size_mib << 20), str(raw)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    point = work / image.stem
    point.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro,noload", loop, str(point)], check=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", str(point)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        raw.unlink()


def describe(root: Path) -> dict[str, str]:
    """path -> its type, mode, owner, size and content digest (or link target)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            fields = [oct(stat.S_IMODE(info.st_mode)), f"{info.st_uid}:{info.st_gid}"]
            if stat.S_ISREG(kind):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                fields += ["file", str(info.st_size), digest]
            elif stat.S_ISLNK(kind):
                fields += ["link", os.readlink(path)]
            elif stat.S_ISDIR(kind):
                fields += ["dir"]
            else:
                fields += [f"special {kind:o}"]
            found["/" + str(path.relative_to(root))] = " ".join(fields)
    return found


PACKAGE_FORMAT = "${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n"


def packages(root: Path) -> dict[str, str]:
    listing = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", PACKAGE_FORMAT],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {line.split()[0]: " ".join(line.split()[1:]) for line in listing.splitlines()}


def group(paths: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for path in sorted(paths):
        parts = path.split("/")
        grouped["/".join(parts[:3]) if len(parts) > 3 else path].append(path)
    return grouped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--disk-size-gb", type=int, default=4)
    parser.add_argument("--show", type=int, default=4, help="paths shown per group")
    parser.add_argument("--json", type=Path, help="write every difference here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="image-diff-") as tmp:
        work = Path(tmp)
        sides = []
        for image in (args.a, args.b):
            with mounted(image, work, args.arch, args.disk_size_gb) as root:
                sides.append((packages(root), describe(root)))
    (pkg_a, files_a), (pkg_b, files_b) = sides
    package_diff = {
        name: [pkg_a.get(name), pkg_b.get(name)]
        for name in sorted(set(pkg_a) | set(pkg_b))
        if pkg_a.get(name) != pkg_b.get(name)
    }
    only_a = sorted(set(files_a) - set(files_b))
    only_b = sorted(set(files_b) - set(files_a))
    changed = sorted(p for p in set(files_a) & set(files_b) if files_a[p] != files_b[p])
    print(f"A: {args.a}\nB: {args.b}")
    print(f"packages: {len(pkg_a)} in A, {len(pkg_b)} in B, {len(package_diff)} differ")
    for name, (one, other) in package_diff.items():
        print(f"  {name}: A {one} | B {other}")
    print(f"paths: {len(files_a)} in A, {len(files_b)} in B; equal: "
          f"{len(set(files_a) & set(files_b)) - len(changed)}")  # fmt: skip
    for title, paths in (("only in A", only_a), ("only in B", only_b), ("differ", changed)):
        print(f"{title}: {len(paths)}")
        for prefix, members in group(paths).items():
            print(f"  {prefix} ({len(members)})")
            for path in members[: args.show]:
                both = f"A {files_a.get(path)} | B {files_b.get(path)}"
                print(f"    {path} {both if title == 'differ' else ''}")
    if args.json:
        args.json.write_text(json.dumps(
            {"packages": package_diff, "only_a": only_a, "only_b": only_b,
             "differ": {p: [files_a[p], files_b[p]] for p in changed}}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
