"""The training/evaluation manifest: one row per clip, with where it came from and its split.

`data/manifest.csv` columns: gloss,path,source_repo,source_path,commit,signer,licence,split,note.
`path` is relative to a clips root:
- ``shared/<file from ../shared/data/clips.csv>`` resolves under the shared data folder
  (``../shared/data``, i.e. ``shared/clips/book/x.mp4`` -> ``<shared_root>/clips/book/x.mp4``);
- ``extra/a/<file>`` / ``extra/b/<file>`` resolve under ``--extra-root`` (default /work/extra_clips).

Clips are not committed; the manifest and the derived embeddings are.

Run ``python -m training.manifest`` to (re)write data/manifest.csv and data/rejected.csv from the
helpers' lists (clips.csv + extra_clips/{a,b}/manifest.csv, rejected.csv).
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO_ROOT / "data" / "manifest.csv"
DEFAULT_SHARED_ROOT = (REPO_ROOT.parent / "shared" / "data").resolve()
DEFAULT_EXTRA_ROOT = Path("/work/extra_clips")
COLUMNS = ["gloss", "path", "source_repo", "source_path", "commit", "signer", "licence", "split", "note"]

# Reserved held-out sources (split=test). Everything else is train.
TEST_SOURCES = {"team-ruku/hearbridge-slr", "WelsonAA/SignVision", "CallMeHus/Sign-Language-Recognition"}
TEST_PATHS = {"extra/a/drink/aslflashcards-drink.mp4", "extra/a/book/hk-wlasl-70266.mp4"}

# Training clips dropped because they are the same recording as a test clip (checked by eye and by
# embedding similarity, see data/README.md). path -> reason.
DROPPED_AS_TEST_DUPLICATE: dict[str, str] = {
    "shared/clips/school/aslflashcards.mp4": (
        "same StartASL recording as test clip extra/a/school/signvision-school.mp4 (67 frames both, "
        "identical poses frame by frame; only resolution differs) - dropped from training"
    ),
    "shared/clips/university/aslflashcards.mp4": (
        "same StartASL recording as test clip extra/a/university/signvision-university.mp4 (100 vs 101 "
        "frames, identical poses frame by frame) - dropped from training"
    ),
}


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


def resolve(path: str, shared_root: Path = DEFAULT_SHARED_ROOT, extra_root: Path = DEFAULT_EXTRA_ROOT) -> Path:
    """Manifest path -> file on disk."""
    head, _, rest = path.partition("/")
    if head == "shared":
        return Path(shared_root) / rest
    if head == "extra":
        return Path(extra_root) / rest
    raise ValueError(f"manifest path must start with shared/ or extra/: {path!r}")


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> list[Clip]:
    with open(path, newline="") as f:
        return [Clip(**{k: row[k] for k in COLUMNS}) for row in csv.DictReader(f)]


def _shared_signer(row: dict[str, str]) -> str:
    file, repo = row["file"], row["source_repo"]
    m = re.search(r"wlasl-(\d+)", file)
    if m:
        return f"wlasl-{m.group(1)}"
    if repo == "sdb1228/ASLFlashCards":
        return "startasl (StartASL dictionary signer)"
    if "lifeprint" in file:
        return "lifeprint"
    if "handspeak" in file:
        return "handspeak"
    if "signingsavvy" in file:
        return "signingsavvy"
    return f"unknown ({repo.split('/')[0]})"


def build_rows(shared_root: Path, extra_root: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    with open(shared_root / "clips.csv", newline="") as f:
        for r in csv.DictReader(f):
            m = re.search(r"commit ([0-9a-f]{7,40})", r["note"])
            path = f"shared/{r['file']}"
            rows.append(
                {
                    "gloss": r["gloss"],
                    "path": path,
                    "source_repo": r["source_repo"],
                    "source_path": r["source_path"],
                    # clips.csv has no commit column; a short hash is sometimes in the note.
                    "commit": m.group(1) if m else "unknown",
                    "signer": _shared_signer(r),
                    "licence": "unknown",
                    "split": "test" if (r["source_repo"] in TEST_SOURCES or path in TEST_PATHS) else "train",
                    "note": r["note"],
                }
            )
    for sub in ("a", "b"):
        with open(extra_root / sub / "manifest.csv", newline="") as f:
            for r in csv.DictReader(f):
                path = f"extra/{sub}/{r['file']}"
                split = "test" if (r["source_repo"] in TEST_SOURCES or path in TEST_PATHS) else "train"
                if split != r["split"]:
                    raise ValueError(f"{path}: helper split {r['split']!r} disagrees with reserved sources")
                rows.append(
                    {
                        "gloss": r["gloss"],
                        "path": path,
                        "source_repo": r["source_repo"],
                        "source_path": r["source_path"],
                        "commit": r["commit"] or "unknown",
                        "signer": r["signer"] or "unknown",
                        "licence": r["licence"] or "unknown",
                        "split": split,
                        "note": r["note"],
                    }
                )
    for r in rows:
        if r["path"] in DROPPED_AS_TEST_DUPLICATE:
            r["split"] = "excluded"
            r["note"] = f"{r['note']}; EXCLUDED: {DROPPED_AS_TEST_DUPLICATE[r['path']]}"
    return rows


def write(shared_root: Path, extra_root: Path, out_dir: Path) -> None:
    rows = build_rows(shared_root, extra_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    rejected = []
    for sub in ("a", "b"):
        with open(extra_root / sub / "rejected.csv", newline="") as f:
            for r in csv.DictReader(f):
                extra = r.pop(None, None)  # a reason with unquoted commas spills into extra fields
                if extra:
                    r["reason"] = ",".join([r["reason"], *extra])
                rejected.append({**r, "found_by": f"extra/{sub}"})
    with open(out_dir / "rejected.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["source_repo", "source_path", "reason", "found_by"], lineterminator="\n")
        w.writeheader()
        w.writerows(rejected)
    n = {s: sum(r["split"] == s for r in rows) for s in ("train", "test", "excluded")}
    print(f"[manifest] {len(rows)} clips ({n}) -> {out_dir / 'manifest.csv'}; {len(rejected)} rejected rows")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared-root", type=Path, default=DEFAULT_SHARED_ROOT)
    p.add_argument("--extra-root", type=Path, default=DEFAULT_EXTRA_ROOT)
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "data")
    a = p.parse_args(argv)
    write(a.shared_root, a.extra_root, a.out_dir)


if __name__ == "__main__":
    main()
