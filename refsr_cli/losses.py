"""Every training loss, in one module (design.md §4).

Sections: generic pixel losses; CrossNet / CrossNet++; Cross-MPI; RefSR-Net. Each function documents
the tensors it takes (shapes) and which ``aux`` keys of a model's output it reads.
"""
from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------
# Generic pixel losses + CrossNet / CrossNet++ (charbonnier, warping loss, landmark loss)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Cross-MPI (L1 + internal supervision + optional VGG-19 perceptual) and RefSR-Net (CC-Net softmax)
# ---------------------------------------------------------------------------------------------
