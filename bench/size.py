"""Size of the built Lambda layer: unzipped, zipped, and what each dependency contributes.

Measures ``.aws-sam/build/CoreLayer/python`` when ``sam build`` made it from the current
requirements (a stale build is ignored); otherwise builds
the layer the way SAM does into a cache directory (``pip install --platform
manylinux2014_aarch64 --only-binary=:all: --python-version 3.13 --target ...`` of
``layers/core/requirements.txt``, plus ``layers/core/call_enricher``), once per requirements
content. Files are attributed to distributions through their ``RECORD`` (the library itself
is ``call_enricher``); zipped sizes are each file's deflated size in one zip of the tree,
as the layer is uploaded.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from bench.report import Figure, figure

ROOT = Path(__file__).resolve().parent.parent
SAM_BUILD = ROOT / ".aws-sam" / "build" / "CoreLayer" / "python"
REQUIREMENTS = ROOT / "layers" / "core" / "requirements.txt"
LIBRARY = ROOT / "layers" / "core" / "call_enricher"
MB = 1_000_000  # decimal megabytes, as Lambda's quotas are written
UNZIPPED_LIMIT_MB = 250  # Lambda: function + all its layers, unzipped


def _build(target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",  # as sam build: no __pycache__ in the layer
            "--platform",
            "manylinux2014_aarch64",
            "--implementation",
            "cp",
            "--python-version",
            "3.13",
            "--only-binary=:all:",
            "--target",
            str(target),
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )


def layer_directory() -> tuple[Path, str]:
    """The layer's ``python/`` tree and where it comes from."""
    built_requirements = SAM_BUILD / "requirements.txt"
    if (
        built_requirements.is_file()
        and built_requirements.read_bytes() == REQUIREMENTS.read_bytes()
    ):
        return SAM_BUILD, "sam build (.aws-sam)"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"call-enricher-bench-layer-nc-{digest}"
    if not cache.is_dir():
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _build(partial)
        partial.rename(cache)
    tree = Path(tempfile.mkdtemp(prefix="call-enricher-layer-")) / "python"
    shutil.copytree(cache, tree)
    shutil.copy2(REQUIREMENTS, tree / "requirements.txt")  # SAM ships it too
    shutil.copytree(LIBRARY, tree / "call_enricher", ignore=shutil.ignore_patterns("__pycache__"))
    return tree, "pip --platform manylinux2014_aarch64 (as sam build)"


def _owners(tree: Path) -> dict[str, str]:
    """Relative path -> distribution name, from each ``*.dist-info/RECORD``."""
    owners: dict[str, str] = {}
    for record in tree.glob("*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0].lower().replace("_", "-")
        with record.open(newline="") as f:
            for row in csv.reader(f):
                if row:
                    owners[row[0]] = name
    return owners


def measure(tree: Path) -> tuple[int, int, Counter[str], Counter[str]]:
    """(unzipped bytes, zipped bytes, unzipped per distribution, zipped per distribution)."""
    owners = _owners(tree)
    unzipped: Counter[str] = Counter()
    zipped: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                relative = path.relative_to(tree).as_posix()
                zf.write(path, "python/" + relative)
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                relative = info.filename.removeprefix("python/")
                top = relative.split("/")[0]
                owner = owners.get(relative) or (
                    "bytecode (.pyc of every package, compiled after sam build)"
                    if relative.endswith(".pyc")
                    else "call-enricher"
                    if top == "call_enricher"
                    else f"other ({top})"
                )
                unzipped[owner] += info.file_size
                zipped[owner] += info.compress_size
        total_zipped = archive.stat().st_size
    return sum(unzipped.values()), total_zipped, unzipped, zipped


def run(quick: bool = False) -> list[Figure]:
    tree, source = layer_directory()
    total, total_zipped, unzipped, zipped = measure(tree)
    pyc = sum(1 for _ in tree.rglob("*.pyc"))
    figures = [
        figure(
            "layer unzipped",
            total / MB,
            "MB",
            f"<= {UNZIPPED_LIMIT_MB}",
            f"{source}; {pyc} .pyc files; Lambda limit is for function + layers",
        ),
        figure("layer zipped", total_zipped / MB, "MB", note="deflate, as uploaded"),
    ]
    figures.extend(
        figure(
            f"  {name}",
            size / MB,
            "MB",
            note=f"zipped {zipped[name] / MB:.2f} MB, {100 * size / total:.0f} % of unzipped",
        )
        for name, size in unzipped.most_common()
        if size / MB >= 0.05
    )
    small = sum(size for size in unzipped.values() if size / MB < 0.05)
    if small:
        figures.append(figure("  (smaller ones)", small / MB, "MB"))
    return figures
