"""Running a method: the method registry, tiling, the infer pipeline, baselines."""
