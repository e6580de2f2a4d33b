"""Landmark cache: SIFT matches per training sample, computed once and kept beside the run."""
from __future__ import annotations

from refsr_cli.ops.features import landmark_matches


class LandmarkCache:
    """SIFT matches per training sample, computed on first use and then reused for every step.

    ``cache.get(key, hr, ref)`` returns ``(p, q)`` for the sample ``key`` (any hashable, e.g.
    ``(light_field_index, view)``), running :func:`landmark_matches` only the first time. With ``path``
    the cache is also kept in an ``.npz`` file (:meth:`save`; loaded on construction), so repeated or
    resumed trainings never recompute it. Matches refer to the full, unaugmented images: apply crops and
    parallax shifts with :func:`crop_matches`.
    """

    def __init__(self, path=None, ratio: float = 0.3, max_matches: int = 1000):
        from pathlib import Path

        import numpy as np

        self.path = Path(path) if path is not None else None
        self.ratio, self.max_matches = float(ratio), int(max_matches)
        self._data: dict[str, tuple] = {}
        self.computed = 0                             # how many pairs this instance ran SIFT on
        if self.path is not None and self.path.is_file():
            with np.load(self.path, allow_pickle=False) as npz:
                keys = {name.rsplit("/", 1)[0] for name in npz.files}
                for key in keys:
                    self._data[key] = (npz[f"{key}/p"], npz[f"{key}/q"])

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return str(key) in self._data

    def get(self, key, hr, ref):
        """``(p, q)`` float32 ``M×2`` arrays of ``(x, y)`` in ``hr`` and ``ref`` for sample ``key``."""
        k = str(key)
        if k not in self._data:
            self._data[k] = landmark_matches(hr, ref, self.ratio, self.max_matches)
            self.computed += 1
        return self._data[k]

    def save(self) -> None:
        """Write the cache to ``path`` atomically (no-op without a path)."""
        if self.path is None:
            return
        import numpy as np

        from refsr_cli.data.files import atomic_write

        arrays = {}
        for k, (p, q) in self._data.items():
            arrays[f"{k}/p"], arrays[f"{k}/q"] = p, q

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self.path, write)
