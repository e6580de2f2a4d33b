"""The reference a network takes when its checkpoint says ``reference_matching = N``: the reference
patch-matched onto the LR's view.

A CPU-sized network cannot reach the 30–60 px displacements of real pairs (a stereo baseline, a pan, a
cyclist between two frames), and its synthesis passes little of a misaligned reference's detail through
(docs/real-suite.md, "the networks' ceiling"). With ``reference_matching`` the correspondence is solved
before the network, by the PatchMatch of :mod:`refsr_cli.inference.baselines.patchmatch` started from
coarse-to-fine block matching (any displacement is reached before the first iteration) and refined by
``N`` iterations: the network sees the sharp reference patches pasted where the LR says they belong, as
the PatchMatch baseline does before its back-projection, and learns to fuse them with the LR — keep what
agrees with it, repair what does not.

The same function prepares the reference in training (each sample of a batch), in validation and at
inference (whole images, before any tiling: the matching must see the whole reference).

At inference the network's output then passes the *paste gate* (:func:`paste_gate`): where the matched
reference already agrees with the LR, the back-projected paste replaces the network's output, whose
small fusion network blurs a nearly exact paste (docs/real-suite.md, "the paste gate").

*Rematching* (``rematch = [steps]``, with guided matching): the first pass's output is a better guide than
the block matching's paste, so the reference is matched again with the output as the guide
(:func:`rematched_reference`), and each step either runs the network again on it (``"network"``) or only
passes the output through the paste gate with it (``"gate"``): docs/real-suite.md, "rematching". Each step
costs a guided matching (and a network pass); training scores the first pass, validation all steps.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from refsr_cli.errors import RefsrError
from refsr_cli.inference.baselines.patchmatch import guide_band, match_and_paste, matching_images
from refsr_cli.ops.block_match import match_flow
from refsr_cli.ops.resize import back_project, downscale, upscale

# Random-search radius (HR px) of the refinement: the block-matching start is within a few pixels.
MATCHING_SEARCH_RADIUS = 8

# The gate's tolerance per unit of scale: exp(-error / (TAU_PER_SCALE · s)), error = the paste's mean
# absolute LR residual ([0, 1] units) over a window of about two LR pixels. Chosen on real pairs that
# neither the bench nor the networks saw (80 pairs of ViSP's and Kivy's footage, the tuning pairs of the
# matcher) with the shipped networks and their 3-LR-pixel patches: 0.003 was best at ×4 and at ×8 of
# 0.0008–0.005 (docs/real-suite.md, "larger patches"). The matcher's 2-LR-pixel pastes were less
# trustworthy: 0.00125 then (on bikes frame pairs; "the paste gate").
GATE_TAU_PER_SCALE = 0.003

# Back-projection rounds of the paste that guides the guided iterations (as many as the baseline's).
GUIDE_BACK_PROJECTION = 2

# Side of the matched and pasted patches in LR pixels when a checkpoint does not say (``matching_patch``):
# the PatchMatch baseline's ``2s + 1``, which every checkpoint before that key was trained on.
DEFAULT_MATCHING_PATCH = 2


def reference_matching(model: nn.Module | None) -> int:
    """PatchMatch iterations of the reference ``model`` was trained to take (0: the raw reference, and for
    ``None``: a baseline has no network)."""
    model = getattr(model, "module", model)          # a DDP-wrapped network
    return int(getattr(model, "reference_matching", 0) or 0)


def guided_matching(model: nn.Module | None) -> int:
    """How many of the matching iterations of ``model``'s reference are guided (0: none)."""
    model = getattr(model, "module", model)
    return int(getattr(model, "guided_matching", 0) or 0)


def matching_patch(model: nn.Module | None) -> tuple[int, ...]:
    """Sides in LR pixels of the patches ``model``'s reference is matched and pasted with: one, or several
    whose pastes are combined (:func:`paste_consensus`)."""
    model = getattr(model, "module", model)
    patch = getattr(model, "matching_patch", None) or DEFAULT_MATCHING_PATCH
    return (int(patch),) if isinstance(patch, int) else tuple(int(p) for p in patch)


def rematch_steps(model: nn.Module | None) -> tuple[str, ...]:
    """The steps ``model`` takes at inference after its first pass, each on the reference matched again with
    the output before as the guide: ``"network"`` (another pass) or ``"gate"`` (the paste gate only)."""
    model = getattr(model, "module", model)
    return tuple(getattr(model, "rematch", ()) or ())


def matched_reference(lr: torch.Tensor, ref: torch.Tensor, scale: int, iterations: int,
                      guided: int = 0, patch: int | tuple[int, ...] = DEFAULT_MATCHING_PATCH,
                      guide: torch.Tensor | None = None) -> torch.Tensor:
    """``N×3×H×W``: ``ref`` (``N×3×(s·h)×(s·w)``) patch-matched onto the view of ``lr`` (``N×3×h×w``) —
    PatchMatch's overlap-averaged sharp patches, without its back-projection (the network has the LR).

    The PatchMatch starts from block matching at LR resolution (:func:`refsr_cli.ops.block_match.match_flow`,
    coarse to fine: it reaches displacements of any size in tens of milliseconds), compares luma patches,
    and refines with ``iterations`` rounds searching ±``MATCHING_SEARCH_RADIUS`` px: on the real suite as
    good as two iterations of random-start RGB PatchMatch at half its time or less (docs/real-suite.md).

    The last ``guided`` (≤ ``iterations``) of those rounds are guided: they start again from the block
    matching, and their patch distance also compares the paste of the rounds before them (with none, the
    block matching's own paste), back-projected onto the LR, with the reference in the band twice the
    LR's: the LR alone cannot tell apart patches that differ only in finer detail, a first paste can
    (docs/real-suite.md, "guided matching").

    Patches span ``patch`` LR pixels (``patch·s + 1`` HR pixels), their centres a quarter patch apart
    (``patch·s // 4``: the baseline's ``s/2`` at 2 LR pixels): patches of 3 LR pixels paste a reference
    closer to the truth than the baseline's 2 on real pairs, at about the same cost with the sparser
    centres (docs/real-suite.md, "larger patches"). Several sides (a tuple) match the reference once per
    side, from the same block matching, their guided rounds guided by the same paste (the first side's),
    and return the pastes' per-pixel :func:`paste_consensus`: pastes of different sizes fail in different
    places (docs/real-suite.md, "patch sizes").

    ``guide`` (``N×3×H×W``, an estimate of the output, e.g. a network's output: rematching) replaces the paste
    of the rounds before the guided ones, which are then skipped: the guided rounds start again from the
    block matching anyway.
    """
    if not 0 <= guided <= iterations or (guide is not None and not guided):
        raise RefsrError(f"guided matching: {guided} guided of {iterations} iterations"
                         + (" (a guide needs guided iterations)" if guide is not None else ""))
    lr, ref_f = lr.float(), ref.float()
    sides = (patch,) if isinstance(patch, int) else tuple(patch)
    with torch.no_grad():
        flow, _ = match_flow(lr, downscale(ref_f, scale))
        # The LR band's images once for every side and round (luma descriptors: a third of RGB's cost).
        bands = matching_images(lr, ref_f, scale, "luma")
        if guided and guide is None:
            # One guide for every side, pasted at the first: a guide per side measured the same on the tuning
            # pairs (Cross-MPI ×4 with 3, 5, 7: 37.85 dB either way) at 1.25× the matching time.
            guide = back_project(_paste(bands, ref_f, scale, flow, iterations - guided, sides[0]), lr, scale,
                                 GUIDE_BACK_PROJECTION)
        if guided:
            guide_up, guide_ref = guide_band(guide.float(), ref_f, scale, "luma")
            bands = torch.cat([bands[0], guide_up], 1), torch.cat([bands[1], guide_ref], 1)
        pastes = [_paste(bands, ref_f, scale, flow, guided or iterations, side) for side in sides]
        pasted = pastes[0] if len(pastes) == 1 else paste_consensus(pastes, lr, scale)
    return pasted.to(ref.dtype)


def _paste(bands: tuple[torch.Tensor, torch.Tensor], ref: torch.Tensor, scale: int, flow: torch.Tensor,
           iterations: int, patch: int) -> torch.Tensor:
    """The paste of ``iterations`` PatchMatch rounds started from ``flow`` (``N×2×h×w``) between the images
    ``bands`` (:func:`~refsr_cli.inference.baselines.patchmatch.matching_images`, with the guide's band or
    not), patches of ``patch`` LR pixels."""
    side = patch * scale + 1
    generator = torch.Generator().manual_seed(0)       # the random search: the same for every run
    pasted, _ = match_and_paste(*bands, ref, scale, side, max(1, side // 4), iterations, MATCHING_SEARCH_RADIUS,
                                generator, init_flow=flow, maps=False)
    return pasted.clamp(0, 1)


def lr_residual(pasted: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``N×1×H×W``: how far ``pasted`` (``N×3×H×W``) is from agreeing with ``lr`` (``N×3×(H/s)×(W/s)``) —
    the absolute residual ``|pasted↓s − lr|`` (channel mean, brought to the HR grid), averaged over a
    ``(2s+1)²`` window. A correctly matched patch downsamples to the LR almost exactly."""
    s = int(scale)
    residual = upscale((downscale(pasted, s) - lr).abs().mean(1, keepdim=True), s)
    return F.avg_pool2d(residual, 2 * s + 1, stride=1, padding=s, count_include_pad=False)


def paste_consensus(pastes: list[torch.Tensor], lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``N×3×H×W``: the ``pastes`` (each ``N×3×H×W``, matched with patches of different sizes) blended per
    pixel by a softmax of their :func:`lr_residual` (temperature ``GATE_TAU_PER_SCALE · s``, the paste
    gate's): where one size's patch agrees with the LR and another's does not (an occlusion edge that the
    larger patch straddles, fine texture that the smaller one mismatches), that one's paste wins."""
    residual = torch.cat([lr_residual(p, lr, scale) for p in pastes], 1)
    weights = torch.softmax(-residual / (GATE_TAU_PER_SCALE * int(scale)), 1)
    return sum(weights[:, i:i + 1] * p for i, p in enumerate(pastes))


def reference_for_network(model: nn.Module, lr: torch.Tensor, ref: torch.Tensor, scale: int) -> torch.Tensor:
    """The reference ``model`` takes for the pair ``(lr, ref)``: ``ref`` itself, or its matched version."""
    iterations = reference_matching(model)
    if not iterations:
        return ref
    return matched_reference(lr, ref, scale, iterations, guided_matching(model), matching_patch(model))


def rematched_reference(model: nn.Module, lr: torch.Tensor, ref: torch.Tensor, scale: int,
                        output: torch.Tensor) -> torch.Tensor:
    """The reference of a rematching step of ``model``: ``ref`` matched as for its first pass, its guided
    iterations guided by ``output`` (``N×3×H×W``, the output so far) instead of the block matching's paste.
    The output already holds detail from the reference where it fits the LR, so the guided patch distance
    tells candidates apart that the paste could not (measured gains in docs/real-suite.md, "rematching")."""
    return matched_reference(lr, ref, scale, reference_matching(model), guided_matching(model),
                             matching_patch(model), guide=output.to(ref.device))


def rematched_output(model: nn.Module, steps: tuple[str, ...], lr: torch.Tensor, ref: torch.Tensor, scale: int,
                     output: torch.Tensor, network_pass, rounds: int) -> torch.Tensor:
    """``output`` (``N×3×H×W``, a first pass) after the rematching ``steps``: each matches ``ref`` again guided
    by the output so far (:func:`rematched_reference`), then either ``network_pass(matched)`` (``"network"``)
    or the :func:`paste_gate` of the output with it (``"gate"``, ``rounds`` of back-projection). Inference
    (:func:`refsr_cli.inference.footprint.pair_inference`) and validation run the steps through this, so that
    validation scores what inference hands out."""
    for step in steps:
        matched = rematched_reference(model, lr, ref, scale, output)
        output = network_pass(matched) if step == "network" else paste_gate(output.float(), matched, lr, scale,
                                                                            rounds)
    return output


def paste_gate(sr: torch.Tensor, pasted: torch.Tensor, lr: torch.Tensor, scale: int, rounds: int) -> torch.Tensor:
    """``N×3×H×W``: the network's output ``sr`` where the matched reference ``pasted`` disagrees with ``lr``,
    the paste where it agrees, each back-projected (``rounds``) and blended per pixel.

    The paste's confidence is its own LR consistency: ``α = exp(−e / τ)``, ``e`` its :func:`lr_residual`,
    ``τ = GATE_TAU_PER_SCALE · s``. A correctly matched patch downsamples to the LR almost exactly; a
    wrong one (occlusion, another object, a reference of another scene) does not, and leaves the
    network's output in place. Shapes: ``sr``, ``pasted`` ``N×3×H×W``; ``lr`` ``N×3×(H/s)×(W/s)``.
    """
    s = int(scale)
    lr = lr.to(sr.device, torch.float32)
    pasted = pasted.to(sr.device, torch.float32)
    alpha = torch.exp(-lr_residual(pasted, lr, s) / (GATE_TAU_PER_SCALE * s))
    blended = alpha * back_project(pasted, lr, s, rounds) + (1 - alpha) * sr
    return back_project(blended, lr, s, rounds)


def as_inferred(sr: torch.Tensor, matched: torch.Tensor, lr: torch.Tensor, scale: int, rounds: int) -> torch.Tensor:
    """``N×3×H×W``: a matched-reference network's raw output ``sr`` as inference hands it out — back-projected
    onto ``lr`` (``rounds``), then through the :func:`paste_gate` with the ``matched`` reference it took.
    Differentiable: training with ``paste_gate_loss`` scores this, not the raw output."""
    return paste_gate(back_project(sr, lr, scale, rounds), matched, lr, scale, rounds)
