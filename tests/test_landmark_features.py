"""Which stored features an extraction run keeps."""

from __future__ import annotations

import numpy as np

from training.landmark_features import stored_to_keep


def test_stored_features_stay_for_catalogued_clips_not_re_extracted_only() -> None:
    frames = np.zeros((3, 4), np.float16)
    arrays = {
        name: frames
        for key in ("found/a/hello/kept", "found/g/hello/dropped", "shared/clips/go/redone")
        for name in (key, f"{key}|served0", f"{key}|served0|t")
    }
    index = {"found/a/hello/kept": {"fps": 25}, "found/g/hello/dropped": {"fps": 30}, "shared/clips/go/redone": {}}
    catalogued = {"found/a/hello/kept", "shared/clips/go/redone"}  # "dropped" left the catalogue
    kept, kept_index = stored_to_keep(arrays, index, catalogued, redo={"shared/clips/go/redone"})
    assert sorted(kept) == ["found/a/hello/kept", "found/a/hello/kept|served0", "found/a/hello/kept|served0|t"]
    assert kept_index == {"found/a/hello/kept": {"fps": 25}}
