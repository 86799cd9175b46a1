"""The clip catalogue: the one place that knows where clips live and which ones are test clips.

Clips are read from `DATA_ROOT` (default `../shared/data` beside the checkout; override with
`SIGNSTREAM_DATA_ROOT`), catalogued by `DATA_ROOT/clips.csv`, plus the clips the project found
itself, catalogued (with repository, path and commit) in `data/found_clips.csv` and read from
`FOUND_ROOT` (default `../found_clips`, override with `SIGNSTREAM_FOUND_ROOT`). Found clips are not in
`../shared`, so their derived features are committed and kept when the clip files are absent.

The split is by signer: every clip of a signer with a `test_signer=yes` clip is test, never trained
on and never used to choose anything.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from service.clips import DATA_ROOT

ROOT = Path(__file__).resolve().parents[1]
FOUND_ROOT = Path(os.environ.get("SIGNSTREAM_FOUND_ROOT", ROOT.parent / "found_clips"))
FOUND_CSV = ROOT / "data" / "found_clips.csv"
FORMS = ("canonical", "variant", "doubtful")


@dataclass(frozen=True)
class ClipRecord:
    key: str  # "<origin>/<file without suffix>", the clip's key in data/*.npz
    gloss: str
    path: Path
    signer: str
    form: str
    test: bool
    source_repo: str
    source_path: str
    commit: str
    origin: str  # "shared" (../shared/data/clips.csv) or "found" (data/found_clips.csv)

    @property
    def exists(self) -> bool:
        return self.path.is_file()


def _read(csv_path: Path, root: Path, origin: str) -> list[ClipRecord]:
    if not csv_path.is_file():
        return []
    records = []
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            file = row["file"]
            if row["form"] not in FORMS:
                raise ValueError(f"{csv_path}: unknown form {row['form']!r} for {file}")
            records.append(
                ClipRecord(
                    key=f"{origin}/{Path(file).with_suffix('').as_posix()}",
                    gloss=row["gloss"],
                    path=root / file,
                    signer=row["signer"],
                    form=row["form"],
                    test=row["test_signer"].strip().lower() == "yes",
                    source_repo=row["source_repo"],
                    source_path=row["source_path"],
                    commit=row["commit"],
                    origin=origin,
                )
            )
    return records


def load_catalogue(
    data_root: Path = DATA_ROOT, found_csv: Path = FOUND_CSV, found_root: Path = FOUND_ROOT
) -> list[ClipRecord]:
    """Every catalogued clip; a signer with any test clip makes all of that signer's clips test."""
    records = _read(data_root / "clips.csv", data_root, "shared") + _read(found_csv, found_root, "found")
    test_signers = {r.signer for r in records if r.test}
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate clip keys in the catalogue")
    return [
        r if r.test or r.signer not in test_signers else ClipRecord(**{**r.__dict__, "test": True}) for r in records
    ]


def signer_folds(labels: list[int], signers: list[str], k: int, seed: int) -> list[list[int]]:
    """k validation folds (positions into `labels`), each holding whole signers, glosses spread
    over the folds: no signer is ever in both a fold's training and validation clips."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [[int(j) for j in val] for _, val in splitter.split(np.zeros(len(labels)), labels, signers)]
    for val in folds:
        held = {signers[j] for j in val}
        assert not held & {s for j, s in enumerate(signers) if j not in set(val)}
    return folds
