"""`python -m training.found_clips`: a found clip rebuilt from a git copy of its source repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from service.clips import CLIPS_DIR, iter_clip_frames
from training.found_clips import Recipe, rebuild, recipes

CLIP = CLIPS_DIR / "hello" / "chaevirayo.mp4"


def _frames(path: Path) -> tuple[int, tuple[int, int]]:
    frames = list(iter_clip_frames(path))
    return len(frames), (frames[-1].shape[1], frames[-1].shape[0])


def _repository(root: Path) -> str:
    """A git repository `owner+name` holding the real clip at videos/hello.mp4; returns its commit."""
    repo = root / "owner+name"
    (repo / "videos").mkdir(parents=True)
    shutil.copyfile(CLIP, repo / "videos" / "hello.mp4")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "clip"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_a_clip_is_rebuilt_at_its_commit_resized_and_checked(tmp_path: Path) -> None:
    commit = _repository(tmp_path / "mirrors")
    frames, _ = _frames(CLIP)
    recipe = Recipe("x/hello/rebuilt.mp4", "owner/name", "videos/hello.mp4", commit, 320, 180, frames, False)
    rebuild(recipe, tmp_path / "mirrors", tmp_path / "out")
    assert _frames(tmp_path / "out" / "x" / "hello" / "rebuilt.mp4") == (frames, (320, 180))
    # A catalogue that disagrees with the file is an error, not a silent rebuild.
    with pytest.raises(SystemExit, match="the catalogue says"):
        rebuild(
            Recipe(recipe.file, recipe.repo, recipe.path, commit, 320, 180, frames + 1, False),
            tmp_path / "mirrors",
            tmp_path / "out",
        )
    with pytest.raises(SystemExit, match="no git copy of other/repo"):
        rebuild(
            Recipe(recipe.file, "other/repo", recipe.path, commit, 320, 180, frames, False),
            tmp_path / "mirrors",
            tmp_path / "out",
        )


def test_every_found_clip_says_how_it_was_written() -> None:
    rows = recipes()
    assert len(rows) == 31
    assert all(r.width > 0 and r.height > 0 and r.frames > 0 and len(r.commit) == 40 for r in rows)
