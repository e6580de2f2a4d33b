"""Image operations: resizing, warping, alignment, matching primitives (no project imports above errors/console)."""
