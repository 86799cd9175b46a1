"""`cli evaluate`: stream real clips through the server's own pipeline and score clip-level labels.

Each clip is streamed frame by frame (service.streaming) and labelled by one rule: the most
confident non-`none` prediction over the clip (`none` if there is none). Top-5 uses the class
probabilities of the clip's most confident prediction.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.recognizer import Recognizer
from service.settings import Settings
from service.streaming import stream_clip

VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv"}


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    gloss: str
    source: str
    name: str = ""  # how reports name the clip (its manifest path, or <gloss>/<file>): no machine paths


def clips_in_folder(folder: Path) -> list[LabelledClip]:
    """`<gloss>/<clip>` files under `folder`."""
    return [
        LabelledClip(path, path.parent.name, path.parent.name, f"{path.parent.name}/{path.name}")
        for path in sorted(folder.glob("*/*"))
        if path.suffix.lower() in VIDEO_SUFFIXES
    ]


def clips_in_manifest(manifest: Path, roots: dict[str, Path], split: str | None) -> list[LabelledClip]:
    """Rows of a manifest (gloss,path,source_repo,...,split); `path` starts with a root name."""
    clips = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if split and row.get("split") != split:
                continue
            root, _, rest = row["path"].partition("/")
            if root not in roots:
                raise ValueError(f"{manifest}: no --root given for {root!r} (path {row['path']})")
            clips.append(LabelledClip(roots[root] / rest, row["gloss"], row.get("source_repo", ""), row["path"]))
    return clips


async def evaluate(recognizer: Recognizer, settings: Settings, clips: list[LabelledClip]) -> dict[str, Any]:
    labels = recognizer.labels
    per_clip: list[dict[str, Any]] = []
    for clip in clips:
        result = await stream_clip(recognizer, settings, clip.path)
        top5 = [labels[i] for i in np.argsort(result.probabilities)[::-1][:5]] if result.probabilities else []
        per_clip.append(
            {
                "file": clip.name or clip.path.name,
                "gloss": clip.gloss,
                "source": clip.source,
                "predicted": result.label,
                "score": round(result.score, 4),
                "top5": top5,
                "frames": len(result.timeline),
            }
        )
    n = len(per_clip)
    per_gloss: dict[str, dict[str, int]] = {}
    for row in per_clip:
        counts = per_gloss.setdefault(str(row["gloss"]), {"n": 0, "top1": 0, "top5": 0})
        counts["n"] += 1
        counts["top1"] += row["predicted"] == row["gloss"]
        counts["top5"] += row["gloss"] in row["top5"]
    return {
        "model": recognizer.name,
        "window_seconds": settings.window_seconds,
        "embeddings_per_second": settings.embeddings_per_second,
        "threshold": settings.threshold,
        "rule": "clip label = most confident non-none streamed prediction; top5 from that prediction",
        "n": n,
        "top1": round(sum(c["top1"] for c in per_gloss.values()) / n, 4) if n else 0.0,
        "top5": round(sum(c["top5"] for c in per_gloss.values()) / n, 4) if n else 0.0,
        "per_gloss": dict(sorted(per_gloss.items())),
        "per_clip": per_clip,
    }


def confusion_png(report: dict[str, Any], labels: list[str], path: Path) -> None:
    """A confusion matrix (rows: true gloss, columns: predicted) drawn with OpenCV."""
    columns = [*labels, "none"]
    rows = sorted({str(r["gloss"]) for r in report["per_clip"]})
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for r in report["per_clip"]:
        counts[rows.index(str(r["gloss"])), columns.index(str(r["predicted"]))] += 1
    cell, left, top = 34, 110, 110
    image = np.full((top + cell * len(rows) + 40, left + cell * len(columns) + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    peak = max(1, int(counts.max()))
    for i, gloss in enumerate(rows):
        cv2.putText(image, gloss, (4, top + i * cell + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(len(columns)):
            x, y = left + j * cell, top + i * cell
            shade = 255 - int(200 * counts[i, j] / peak)
            colour = (shade, shade, 255) if columns[j] != gloss else (shade, 255, shade)
            cv2.rectangle(image, (x, y), (x + cell, y + cell), colour if counts[i, j] else (250, 250, 250), -1)
            cv2.rectangle(image, (x, y), (x + cell, y + cell), (200, 200, 200), 1)
            if counts[i, j]:
                cv2.putText(image, str(counts[i, j]), (x + 10, y + 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for j, name in enumerate(columns):
        text = np.full((cell, top - 6, 3), 255, np.uint8)
        cv2.putText(text, name, (2, 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        image[0 : top - 6, left + j * cell : left + (j + 1) * cell] = cv2.rotate(text, cv2.ROTATE_90_COUNTERCLOCKWISE)
    caption = f"n={report['n']} top1={report['top1']:.2f} top5={report['top5']:.2f} (rows: true, columns: predicted)"
    cv2.putText(image, caption, (4, image.shape[0] - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), image)
