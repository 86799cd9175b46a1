"""The training/evaluation manifest, built from the catalogue alone (training/catalogue.py).

`data/manifest.csv` columns: gloss,path,source_repo,source_path,commit,signer,licence,split,note.
`path` is `shared/<file of ../shared/data/clips.csv>` (under DATA_ROOT) or `found/<file of
data/found_clips.csv>` (under FOUND_ROOT). `split` is `test` for every clip of a test signer, else
`train` (`form=doubtful` clips are `train` rows; the trainers decide whether to use them, and say so).

Clips are not committed; the manifest and the derived features are. `python -m training.manifest`
rewrites data/manifest.csv.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

from service.clips import DATA_ROOT
from training.catalogue import FOUND_ROOT, ROOT, load_catalogue

REPO_ROOT = ROOT
DEFAULT_MANIFEST = REPO_ROOT / "data" / "manifest.csv"
COLUMNS = ["gloss", "path", "source_repo", "source_path", "commit", "signer", "licence", "split", "note"]


@dataclass(frozen=True)
class Clip:
    gloss: str
    path: str
    source_repo: str
    source_path: str
    commit: str
    signer: str
    licence: str
    split: str
    note: str


def resolve(path: str, shared_root: Path = DATA_ROOT, found_root: Path = FOUND_ROOT) -> Path:
    """Manifest path -> file on disk."""
    head, _, rest = path.partition("/")
    if head == "shared":
        return Path(shared_root) / rest
    if head == "found":
        return Path(found_root) / rest
    raise ValueError(f"manifest path must start with shared/ or found/: {path!r}")


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> list[Clip]:
    with open(path, newline="") as f:
        return [Clip(**{k: row[k] for k in COLUMNS}) for row in csv.DictReader(f)]


def build_rows() -> list[dict[str, str]]:
    rows = []
    root = {"shared": DATA_ROOT, "found": FOUND_ROOT}
    for rec in load_catalogue():
        rows.append(
            {
                "gloss": rec.gloss,
                "path": f"{rec.origin}/{rec.path.relative_to(root[rec.origin]).as_posix()}",
                "source_repo": rec.source_repo,
                "source_path": rec.source_path,
                "commit": rec.commit,
                "signer": rec.signer,
                "licence": "none stated",
                "split": "test" if rec.test else "train",
                "note": f"form={rec.form}",
            }
        )
    return rows


def write(out: Path = DEFAULT_MANIFEST) -> None:
    rows = build_rows()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    n = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    print(f"[manifest] {len(rows)} clips ({n}) -> {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=DEFAULT_MANIFEST)
    write(p.parse_args(argv).out)


if __name__ == "__main__":
    main()
