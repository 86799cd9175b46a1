"""Rebuild the found clips (data/found_clips.csv) from git copies of their source repositories.

The clip files are not committed (no licence allows it), and a fresh machine reaches only package
registries, so their features are committed instead. Re-extracting features with another front end
needs the files again: this writes them where `training.catalogue.FOUND_ROOT` reads them, from the
catalogued repository, commit and path, as the catalogue says each was written (`width` x `height`,
cv2 INTER_AREA, mp4v at the source's frame rate; with `drop_last_black`, a final all-black frame
dropped), and checks the frame count against `frames`.

`--mirrors DIR` holds one git directory per repository: `<owner>+<name>/repo` (a bare copy, as the
project's fetch tool leaves them), `<owner>+<name>` or `<owner>/<name>` (a clone or a bare copy).

    python -m training.found_clips --mirrors /path/to/mirrors          # -> ../found_clips
    python -m training.found_clips --mirrors DIR --only a/wall --out /tmp/found
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2

from service.clips import clip_fps, iter_clip_frames
from training.catalogue import FOUND_CSV, FOUND_ROOT

BLACK = 10.0  # mean pixel value under which a final frame counts as black


@dataclass(frozen=True)
class Recipe:
    file: str
    repo: str
    path: str
    commit: str
    width: int
    height: int
    frames: int
    drop_last_black: bool


def recipes(csv_path: Path = FOUND_CSV) -> list[Recipe]:
    with csv_path.open(newline="") as handle:
        return [
            Recipe(
                row["file"],
                row["source_repo"],
                row["source_path"],
                row["commit"],
                int(row["width"]),
                int(row["height"]),
                int(row["frames"]),
                row["drop_last_black"] == "yes",
            )
            for row in csv.DictReader(handle)
        ]


def git_dir(mirrors: Path, repo: str) -> Path:
    owner, name = repo.split("/", 1)
    for candidate in (mirrors / f"{owner}+{name}" / "repo", mirrors / f"{owner}+{name}", mirrors / owner / name):
        if candidate.is_dir():
            return candidate
    raise SystemExit(f"no git copy of {repo} under {mirrors} (looked for {owner}+{name}[/repo] and {repo})")


def write_clip(source: Path, out: Path, recipe: Recipe) -> int:
    """`source` -> `out` as the recipe says; returns the frames written."""
    frames = list(iter_clip_frames(source))
    if not frames:
        raise SystemExit(f"{recipe.repo}:{recipe.path}@{recipe.commit}: no frames decoded")
    if recipe.drop_last_black and float(frames[-1].mean()) < BLACK:
        frames.pop()
    out.parent.mkdir(parents=True, exist_ok=True)
    size = (recipe.width, recipe.height)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), clip_fps(source), size)
    for frame in frames:
        same_size = (frame.shape[1], frame.shape[0]) == size
        writer.write(frame if same_size else cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer.release()
    return len(frames)


def rebuild(recipe: Recipe, mirrors: Path, out_root: Path) -> None:
    blob = subprocess.run(
        ["git", "-C", str(git_dir(mirrors, recipe.repo)), "show", f"{recipe.commit}:{recipe.path}"],
        capture_output=True,
        check=False,
    )
    if blob.returncode != 0:
        raise SystemExit(f"{recipe.repo}: {recipe.path} at {recipe.commit}: {blob.stderr.decode().strip()}")
    with tempfile.NamedTemporaryFile(suffix=Path(recipe.path).suffix) as source:
        source.write(blob.stdout)
        source.flush()
        written = write_clip(Path(source.name), out_root / recipe.file, recipe)
    if written != recipe.frames:
        raise SystemExit(f"{recipe.file}: wrote {written} frames, the catalogue says {recipe.frames}")
    print(f"{recipe.file:48s} {written:4d} frames {recipe.width}x{recipe.height}  <- {recipe.repo}:{recipe.path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mirrors", type=Path, required=True, help="folder of git copies of the source repositories")
    parser.add_argument("--out", type=Path, default=FOUND_ROOT, help="where the clips go (default: FOUND_ROOT)")
    parser.add_argument("--only", nargs="*", default=None, help="only files starting with these prefixes")
    args = parser.parse_args(argv)
    todo = [r for r in recipes() if args.only is None or any(r.file.startswith(p) for p in args.only)]
    for recipe in todo:
        rebuild(recipe, args.mirrors, args.out)
    print(f"{len(todo)} clips written under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
