"""Running a method: the method registry, tiling, the infer pipeline, baselines."""

# Back-projection rounds applied to every network's output (as many as PatchMatch's own); what they gain
# on the real-pair suite is measured in docs/infer.md. Here, not in methods.py, so that `refsr infer --help`
# can name it without importing torch.
BACK_PROJECTION = 2
