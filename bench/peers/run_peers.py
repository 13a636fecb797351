"""Run fastdup, imagededup and cleanvision on one image folder; write what each found as JSON.

    bench/peers/.venv/bin/python bench/peers/run_peers.py IMAGES_DIR OUT.json

Runs in its own environment (``bench/peers/setup.sh``): these tools pin numpy 1.x and
are not project dependencies. Each tool runs at its documented defaults, except fastdup's
near-duplicate cut, set to 0.96 as its docs recommend for near-identical images. Output per
tool: ``groups`` (lists of file names it considers copies of each other), ``flagged``
(file name -> reasons), ``seconds`` (wall, including the tool's own image reading) and
``error`` (what went wrong, if anything).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FASTDUP_NEAR = 0.96


def _components(pairs: list[tuple[str, str]]) -> list[list[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def run_fastdup(images: Path) -> dict:
    import fastdup

    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        fd = fastdup.create(work_dir=work, input_dir=str(images))
        fd.run(overwrite=True, print_summary=False)
        seconds = time.perf_counter() - started
        sim = fd.similarity()
        near = sim[sim["distance"] >= FASTDUP_NEAR]
        pairs = [(Path(a).name, Path(b).name) for a, b in zip(near["filename_from"], near["filename_to"])]
        flagged: dict[str, list[str]] = {}
        invalid = fd.invalid_instances()
        for name in invalid.get("filename", []):
            flagged.setdefault(Path(name).name, []).append("invalid")
        outliers = fd.outliers()
        column = "filename_outlier" if "filename_outlier" in outliers else "filename"
        for name in outliers[column]:
            flagged.setdefault(Path(name).name, []).append("outlier")
    return {"groups": _components(pairs), "flagged": flagged, "seconds": seconds}


def run_imagededup(images: Path, method: str) -> dict:
    from imagededup import methods

    started = time.perf_counter()
    found = getattr(methods, method)().find_duplicates(image_dir=str(images))
    seconds = time.perf_counter() - started
    pairs = [(a, b) for a, dups in found.items() for b in dups]
    return {"groups": _components(pairs), "flagged": {}, "seconds": seconds}


def run_cleanvision(images: Path) -> dict:
    from cleanvision import Imagelab

    def once(folder: Path) -> tuple[dict, float]:
        started = time.perf_counter()
        lab = Imagelab(data_path=str(folder))
        lab.find_issues(verbose=False)
        seconds = time.perf_counter() - started
        flagged: dict[str, list[str]] = {}
        for column in [c for c in lab.issues.columns if c.startswith("is_") and c.endswith("_issue")]:
            for path in lab.issues.index[lab.issues[column]]:
                flagged.setdefault(Path(path).name, []).append(column[3:-6])
        sets = [*lab.info["exact_duplicates"]["sets"], *lab.info["near_duplicates"]["sets"]]
        return {"groups": _components([(Path(s[0]).name, Path(x).name) for s in sets for x in s[1:]]),
                "flagged": flagged}, seconds  # fmt: skip

    try:
        result, seconds = once(images)
        return {**result, "seconds": seconds}
    except Exception as exc:  # it crashes on unreadable files: measure the rest, and say so
        error = f"{type(exc).__name__}: {str(exc)[:120]}"
        with tempfile.TemporaryDirectory() as tmp:
            readable = Path(tmp) / "images"
            shutil.copytree(images, readable, ignore=lambda d, names: [n for n in names if not _readable(Path(d) / n)])
            result, seconds = once(readable)
        return {**result, "seconds": seconds, "error": f"{error} (rerun without unreadable and non-RGB/grey files)"}


def _readable(path: Path) -> bool:
    from PIL import Image

    if path.is_dir():
        return True
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode in ("RGB", "L")  # it fails on grey+alpha, 16-bit and CMYK files
    except Exception:
        return False


RUNS = {
    "fastdup": run_fastdup,
    "imagededup-dhash": lambda images: run_imagededup(images, "DHash"),
    "imagededup-phash": lambda images: run_imagededup(images, "PHash"),
    "cleanvision": run_cleanvision,
}


def main() -> None:
    images, out = Path(sys.argv[1]), Path(sys.argv[2])
    if len(sys.argv) > 3:  # one tool, in a process of its own: some fork worker pools that hang after another's threads
        print(json.dumps(RUNS[sys.argv[3]](images)))
        return
    results = {}
    for name in RUNS:
        child = None
        try:
            child = subprocess.run([sys.executable, __file__, str(images), str(out), name], capture_output=True,
                                   text=True, timeout=900)  # fmt: skip
            results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        except Exception as exc:
            tail = child.stderr[-500:] if child else ""
            results[name] = {
                "groups": [],
                "flagged": {},
                "seconds": None,
                "error": f"{type(exc).__name__}: {exc} {tail}",
            }
        print(f"{name}: {results[name].get('seconds')} s {results[name].get('error', '')}", file=sys.stderr)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
