"""Training: configuration, the loop, losses, the plateau rule."""
