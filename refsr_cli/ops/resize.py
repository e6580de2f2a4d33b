"""MATLAB-compatible bicubic resizing (``imresize(x, s, 'bicubic')`` with antialiasing), in torch.

The one resize of the project: the LR degradation, the bicubic baseline and every network's
upsampled-LR input all go through :func:`imresize`. Resizing is linear and separable, so each axis is
a dense ``out×in`` weight matrix built once (cached per size, dtype and device) and applied with a
matrix product — batched, exact, and as fast on a GPU as on a CPU.

Semantics follow MATLAB's ``imresize``: output length ``ceil(in·s)``; sample positions
``u = x/s + 0.5·(1 − 1/s)`` (1-based); Keys cubic kernel with a = −0.5; when shrinking, the kernel is
stretched by ``1/s`` (antialiasing); out-of-range taps mirror symmetrically (``[1..n, n..1]``);
weights normalised to sum to one. Float in, float out (no uint8 rounding).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys (1981) cubic convolution kernel with a = −0.5, as in MATLAB."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _weights_cpu(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """``out_len × in_len`` float64 matrix W such that ``out = W @ in`` along one axis."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if shrink else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric mirroring of out-of-range taps: [1..n, n..1] repeated.
    zero_based = (indices - 1).long() % (2 * in_len)
    zero_based = torch.where(zero_based >= in_len, 2 * in_len - 1 - zero_based, zero_based)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, zero_based, weights)
    return matrix


_device_cache: dict = {}


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``out_len × in_len`` resize matrix of one axis, on ``device`` in ``dtype``."""
    key = (in_len, out_len, float(scale), antialias, dtype, str(device))
    matrix = _device_cache.get(key)
    if matrix is None:
        if len(_device_cache) > 256:
            _device_cache.clear()
        matrix = _weights_cpu(in_len, out_len, float(scale), antialias).to(device=device, dtype=dtype)
        _device_cache[key] = matrix
    return matrix


def imresize(image: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> torch.Tensor:
    """Resize ``(…, H, W)`` by ``scale`` (or to ``size=(h, w)``) like MATLAB's bicubic ``imresize``.

    Args:
        image: float tensor ``…×H×W`` (any leading dims, e.g. ``N×C×H×W``), any device.
        scale: factor applied to both axes; output is ``ceil(H·s) × ceil(W·s)``.
        size: explicit output size; the per-axis scale is then ``out/in`` as in MATLAB.
        antialias: stretch the kernel when shrinking (MATLAB's default).
    Returns:
        ``…×h×w`` tensor of the same dtype (float16/bfloat16 are computed in float32).
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    in_h, in_w = image.shape[-2:]
    if size is not None:
        out_h, out_w = size
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        out_h, out_w = math.ceil(in_h * scale - 1e-9), math.ceil(in_w * scale - 1e-9)
        scale_h = scale_w = float(scale)
    work_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    x = image.to(work_dtype)
    # An axis of unchanged length has the identity as its matrix (the kernel is 1 at 0, 0 at the other
    # integers): left out, so that one axis can be resized on its own.
    if out_h != in_h:
        rows = resize_matrix(in_h, out_h, scale_h, antialias, work_dtype, image.device)
        x = torch.matmul(rows, x)
    if out_w != in_w:
        cols = resize_matrix(in_w, out_w, scale_w, antialias, work_dtype, image.device)
        x = torch.matmul(x, cols.t())
    return x.to(image.dtype)


def downscale(hr: torch.Tensor, factor: int) -> torch.Tensor:
    """The LR degradation: bicubic downscaling by an integer ``factor`` (H and W must divide by it)."""
    h, w = hr.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {h}×{w} is not a multiple of the scale {factor}")
    return imresize(hr, size=(h // factor, w // factor))


def back_project(sr: torch.Tensor, lr: torch.Tensor, factor: int, steps: int) -> torch.Tensor:
    """``steps`` rounds of back-projection (Irani & Peleg 1991): ``SR += (LR − SR↓)↑``, the LR degradation
    and its bicubic inverse, so that the output downscales to its own LR. It moves only what the LR
    contradicts: detail finer than the LR samples stays as it was, content put in the wrong place by a
    reference (a moving object, an occlusion) loses the part the LR can see."""
    for _ in range(int(steps)):
        sr = sr + upscale(lr - downscale(sr, factor), factor)
    return sr


def upscale(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """The matching bicubic upscaling by an integer ``factor`` (the bicubic baseline, networks' LR↑)."""
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * factor, w * factor))
