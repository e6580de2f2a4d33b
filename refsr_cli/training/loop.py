"""The training loop: batches, loss, checkpoints, validation, exact resume, DDP.

Why resume is exact: every training sample is a pure function of ``(seed, global sample number)`` (the
datasets derive view pair, crop, parallax shift and flips from that number), so the data order needs
no saved state; the model, optimiser, schedule and the torch RNG are saved in ``RUN/last.pt``. On CPU,
``N`` iterations + resume + ``N`` iterations therefore ends with the same weights as ``2N`` in one go.

Run folder ``RUN/``::

    config.json      the resolved configuration (preset ← --config TOML ← flags), its stores and what it
                     validates on; written when the run starts (a resume must match it)
    last.pt          training state (model, optimiser, schedule, RNG, iteration) — for resume
    model.pt         the latest model checkpoint (refsr checkpoint format; `infer --weights`)
    best.pt          the best model checkpoint by validation PSNR
    log.jsonl        one JSON object per logged step / validation

A resumed run first removes what a killed one leaves: temporaries of these files and the log records past
the iteration it resumes from (they are logged again).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from contextlib import nullcontext

from refsr_cli import console
from refsr_cli.archs import build_model, spec
from refsr_cli.archs.checkpoint import checkpoint_dict, save_checkpoint
from refsr_cli.data.files import atomic_write, check_writable_dir, folder_lock, remove_temporaries, write_json
from refsr_cli.data.store import read_digest
from refsr_cli.errors import RefsrError
from refsr_cli.inference import BACK_PROJECTION
from refsr_cli.inference.matched_reference import (as_inferred, matched_reference, reference_for_network,
                                                   reference_matching, rematch_steps, rematched_output)
from refsr_cli.training.config import loss_weights, model_kwargs, uses_loss
from refsr_cli.training.initialise import initialise
from refsr_cli.training.losses.terms import LossContext, compute_loss
from refsr_cli.training.plateau import CONVERGED, DROP, PlateauRule

# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


class RangeSampler(Sampler):
    """Yields global sample numbers ``start, start+1, …`` (this rank's share under DDP)."""

    def __init__(self, start: int, stop: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __iter__(self):
        return iter(range(self.start * self.world + self.rank, self.stop * self.world, self.world))

    def __len__(self):
        return max(0, self.stop - self.start)


def training_dataset(config: dict, run_dir: Path | None = None, skip_bad: bool = False):
    from refsr_cli.data.training_samples import open_training_data

    return open_training_data(config["data"], scale=config["scale"], crop=config["crop"],
                              views=config["views"], ref_view=config["ref_view"],
                              parallax_shift=config["parallax_shift"], flips=config["flips"],
                              seed=config["seed"], mix=config.get("mix"),
                              landmarks=uses_loss(config, "landmark"),
                              cache_dir=run_dir, flow=uses_loss(config, "flow"),
                              holdout=config.get("val_holdout", 0), skip_bad=skip_bad,
                              partial_reference=config.get("partial_reference", 0.0))


def _tell_validation(config: dict, run_dir: Path) -> None:
    validation = config["validation"]
    if validation["kind"] == "holdout":
        count = sum(len(names) for names in validation["items"].values())
        console.notice(f"validating on {count} item(s) held out of the training data ({run_dir / 'config.json'})")
    elif validation["kind"] == "none" and config["val_holdout"] == "auto":
        console.notice("no validation: no readable item to hold out of the training data (a store of one light "
                       "field or pair); give --val for a best.pt")


def _store_record(path) -> dict:
    """What identifies a store in a run's record: where it is and, for a prepared one, what made it."""
    return {"path": str(Path(path).resolve()), "prepare_digest": read_digest(path)}


def _validation(val, config: dict, dataset, skip_bad: bool) -> tuple[list | None, dict]:
    """The validation pairs and the run's record of them: ``val``'s store, else the items held out of the
    training stores, else none."""
    if val:
        skipped = [] if skip_bad else None
        pairs = _validation_pairs(val, config, skipped)
        for message in skipped or []:
            console.warn(f"skipped unreadable validation pair: {message}")
        return pairs or None, {"kind": "store", "store": _store_record(val)}
    pairs = dataset.validation_pairs()
    if pairs:
        return pairs, {"kind": "holdout", "items": dataset.held_out_names()}
    return None, {"kind": "none"}


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    iterations: int
    best_psnr: float | None


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _device(name: str | None, rank: int) -> torch.device:
    """The run's device (:func:`refsr_cli.inference.methods.resolve_device`); under torchrun, a bare ``cuda`` means
    this rank's GPU."""
    from refsr_cli.inference.methods import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return device


# Settings that say how a run is kept, not what it computes: a resumed run may change them.
_BOOKKEEPING = {"checkpoint_every", "log_every", "workers"}
# How a command spelled its stores (a prepare folder, a relative path); what they are is in "stores" and
# "validation", which are compared instead.
_SPELLING = {"data", "val"}


def _check_resumable(run_dir: Path, config: dict) -> dict | None:
    """The saved training state, after checking it belongs to the same run; ``None`` for a new run.

    Every setting must match the saved run's (but :data:`_BOOKKEEPING`): a run folder is never continued
    under other data, another schedule or other validation, whose iterations its record would then
    misdescribe.
    """
    state_path = run_dir / "last.pt"
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RefsrError(f"{state_path}: unreadable training state ({type(exc).__name__})") from None
    saved, current = state["config"], json.loads(json.dumps(config))
    # A key that a run saved by an earlier refsr lacks is not compared.
    differ = [key for key in saved if key not in _BOOKKEEPING | _SPELLING and saved[key] != current.get(key)]
    if differ:
        what = "; ".join(f"{_WORDING.get(key, f'{key} differs')} (run has {_short(saved[key])}, this command "
                         f"{_short(current.get(key))})" for key in differ[:3])
        raise RefsrError(f"{run_dir}: cannot resume — {what}; use another --out")
    return state


_WORDING = {"scale": "scale mismatch", "stores": "stores differ"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:99] + "…"


_RUN_FILES = ("last.pt", "model.pt", "best.pt", "config.json", "log.jsonl", "landmarks.npz")


def _clear_debris(run_dir: Path, resumed_at: int | None) -> None:
    """Remove what a killed run left: temporaries of the run's files, and the log records past the saved
    state this run continues from (``None``: a new run, whose folder held no saved state — all of them)."""
    remove_temporaries(run_dir, _RUN_FILES)
    log = run_dir / "log.jsonl"
    if not log.exists():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:      # the torn last line of a killed writer
            continue
        if resumed_at is not None and isinstance(record, dict) and record.get("iter", 0) <= resumed_at:
            kept.append(line + "\n")
    if kept:
        atomic_write(log, lambda tmp: tmp.write_text("".join(kept)))
    else:
        log.unlink()


def train(config: dict, out: str | os.PathLike, device: str | None = None, val: str | None = None,
          vgg: str | None = None, max_iters_this_call: int | None = None, skip_bad: bool = False) -> TrainResult:
    """Train ``config["variant"]`` into run folder ``out``; resumes when ``out/last.pt`` exists.

    Validation: on the store ``val``, else on ``config["val_holdout"]`` items of each training store, held
    out of training (:func:`refsr_cli.data.training_samples.held_out_items`). ``skip_bad``: leave out samples
    whose data cannot be read, with a warning each. ``max_iters_this_call`` stops early (for tests of
    interruption); the schedule still spans ``config["iters"]``.

    The run folder belongs to one run at a time: a second ``train`` into it while the first runs stops at
    once with a :class:`RefsrError` (two runs would write each other's checkpoints). A folder this call
    created and left empty (it failed before writing anything) is removed.
    """
    run_dir = Path(out)
    rank, world = _distributed()
    if rank != 0:       # the other ranks of a distributed run share rank 0's folder and lock
        return _train(config, run_dir, rank, world, device, val, vgg, max_iters_this_call, skip_bad)
    created = not run_dir.exists()
    check_writable_dir(run_dir, "run folder")
    try:
        with folder_lock(run_dir, busy="another refsr train is writing this run folder; wait for it to end "
                                        "(rerunning then resumes) or give another --out"):
            return _train(config, run_dir, rank, world, device, val, vgg, max_iters_this_call, skip_bad)
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _train(config: dict, run_dir: Path, rank: int, world: int, device: str | None, val: str | None,
           vgg: str | None, max_iters_this_call: int | None, skip_bad: bool) -> TrainResult:
    dev = _device(device, rank)
    torch.manual_seed(config["seed"])
    config = dict(config)
    config["data"] = [str(p) for p in (config["data"] if isinstance(config["data"], list) else [config["data"]])]
    if val:
        config["val_holdout"] = 0       # a validation store takes the place of the hold-out
    dataset = training_dataset(config, run_dir, skip_bad)
    config["stores"] = [_store_record(source.store.path) for source in dataset.sources]
    val_pairs, config["validation"] = _validation(val, config, dataset, skip_bad)
    state = _check_resumable(run_dir, config)

    recipe = spec(config["variant"]).recipe
    context = LossContext()
    if config["loss"].get("perceptual"):
        if not vgg:
            raise RefsrError("the perceptual loss needs a VGG-19 weights file: pass --vgg FILE "
                             "(it cannot be downloaded here) or set loss.perceptual = 0")
        from refsr_cli.training.losses.perceptual import VGGPerceptual

        context.perceptual = VGGPerceptual(vgg).to(dev)
    elif "perceptual" in recipe.loss_terms and rank == 0:
        console.notice(f"{config['variant']} perceptual (VGG-19) term is off: no --vgg weights file given")
    plateau = PlateauRule.from_config(config["plateau"])
    if plateau is not None and val_pairs is None:
        raise RefsrError("[plateau] watches the validation PSNR: give --val (or hold out validation items "
                         "of a store with several: --val-holdout N)")

    model = build_model(config["variant"], **model_kwargs(config)).to(dev)
    matching = reference_matching(model)
    # Score the output as inference gives it: the paste gate hands the matched reference's agreeing
    # regions over to the paste, so the network need not learn to redo them (docs/train.md; resolve_config
    # has checked that the network takes a matched reference).
    gated = bool(config.get("paste_gate_loss")) and bool(matching)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=tuple(config["betas"]),
                                 weight_decay=config["weight_decay"])
    milestones = [int(m * config["iters"]) for m in config["milestones"]]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=config["gamma"])
    start, best = 0, None
    if config.get("init") and state is None:
        initialise(model, config)
    if state is not None:
        model.load_state_dict(state["model"]["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, best = int(state["iteration"]), state.get("best_psnr")
        if plateau is not None and state.get("plateau"):
            plateau.load_state(state["plateau"])
        if plateau is not None and plateau.converged_at is not None:
            if rank == 0:
                console.notice(f"{run_dir}: converged at iteration {plateau.converged_at} ([plateau] rule)")
            return TrainResult(run_dir, run_dir / "model.pt", start, best)
        if rank == 0:
            console.notice(f"resuming {run_dir} at iteration {start}")
    if rank == 0:
        _clear_debris(run_dir, start if state is not None else None)
        if state is None or not (run_dir / "config.json").exists():
            write_json(run_dir / "config.json", config, indent=2)
        if state is None:
            _tell_validation(config, run_dir)
    # Multi-scale models (MDSR's per-scale heads, the coarsest stages at ×4) leave parameters unused
    # in a step; DDP must know, or its gradient reduction waits for them forever.
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model

    stop = config["iters"] if max_iters_this_call is None else min(config["iters"], start + max_iters_this_call)
    if start >= config["iters"]:
        if rank == 0:
            console.notice(f"{run_dir}: already trained for {config['iters']} iterations")
        return TrainResult(run_dir, run_dir / "model.pt", start, best)
    from refsr_cli.data.training_samples import collate

    loader = DataLoader(dataset, batch_size=config["batch"], drop_last=False, collate_fn=collate,
                        sampler=RangeSampler(start * config["batch"], stop * config["batch"], rank, world),
                        # Workers only feed a GPU; on a CPU they would compete with the step for cores.
                        num_workers=config["workers"] if dev.type == "cuda" else 0,
                        pin_memory=dev.type == "cuda", persistent_workers=False)
    log_path = run_dir / "log.jsonl"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    writer = _tensorboard(run_dir) if rank == 0 else None
    iteration, t_wait, t_step, t_mark, logged_at = start, 0.0, 0.0, time.perf_counter(), start

    def validate() -> None:
        """Score the validation set at ``iteration``; keep the best checkpoint; apply the plateau rule."""
        nonlocal best, stop
        event = None
        if rank == 0:
            scores = _validate(model, val_pairs, config["scale"], dev, gated)
            _append_log(log_path, {"iter": iteration, "val_psnr": scores["psnr"], "val_ssim": scores["ssim"]})
            if writer is not None:
                writer.add_scalar("val/psnr", scores["psnr"], iteration)
            if best is None or scores["psnr"] > best:
                best = scores["psnr"]
                save_checkpoint(run_dir / "best.pt", model, config["scale"],
                                _meta(config, iteration, {"val_psnr": best, "val_ssim": scores["ssim"]}))
            event = plateau.observe(scores["psnr"], iteration) if plateau is not None else None
        if plateau is not None and world > 1:  # every rank must drop the rate / stop together
            event = _broadcast_event(event, dev)
        if event == DROP:
            for group in optimizer.param_groups:
                group["lr"] *= plateau.gamma
        elif event == CONVERGED:
            stop = iteration
        if event is not None and rank == 0:
            _append_log(log_path, {"iter": iteration, "plateau": event, "lr": optimizer.param_groups[0]["lr"]})
        net.train()

    # A run started from other weights is scored before its first step: the plateau rule then has the
    # starting point to beat, and best.pt is never worse than the start.
    if val_pairs is not None and start == 0 and config.get("init"):
        validate()
    net.train()
    with console.progress_bar(f"train {config['variant']}", config["iters"]) as bar:
        bar.advance(start)
        data_iter = iter(loader)
        while iteration < stop:
            t0 = time.perf_counter()
            try:
                batch = next(data_iter)
            except RefsrError as exc:
                # Raised in a DataLoader worker, it comes back with the worker's traceback in its message,
                # whose last line is "module.Class: message".
                lines = str(exc).strip().splitlines()
                if len(lines) > 1:
                    raise type(exc)(lines[-1].split(": ", 1)[-1]) from None
                raise
            batch = {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                     for k, v in batch.items()}
            t1 = time.perf_counter()
            options = recipe.training_options(batch)
            if matching:   # the network takes the reference patch-matched onto the LR's view (and no sweep)
                batch["ref"], options = reference_for_network(model, batch["lr"], batch["ref"], config["scale"]), {}
            weights = loss_weights(config, iteration)
            with autocast:
                sr, aux = net(batch["lr"], batch["ref"], config["scale"], **options)
            if gated:
                sr = as_inferred(sr.float(), batch["ref"], batch["lr"], config["scale"], BACK_PROJECTION)
            total, terms = compute_loss(config["variant"], weights, sr.float(), aux, batch, context)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            t_wait += t1 - t0
            t_step += t2 - t1
            iteration += 1
            bar.advance()
            bar.info(f"loss {float(total.detach()):.4f}")
            if rank == 0 and (iteration % config["log_every"] == 0 or iteration == stop):
                elapsed = time.perf_counter() - t_mark
                record = {"iter": iteration, "loss": float(total.detach()), **terms,
                          "lr": scheduler.get_last_lr()[0],
                          "it_per_s": (iteration - logged_at) / elapsed if elapsed > 0 else None,
                          "data_wait_fraction": t_wait / max(t_wait + t_step, 1e-9)}
                _append_log(log_path, record)
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, (int, float)) and key != "iter":
                            writer.add_scalar(f"train/{key}", value, iteration)
                t_wait = t_step = 0.0
                t_mark, logged_at = time.perf_counter(), iteration
            if val_pairs is not None and (iteration % config["val_every"] == 0 or iteration == stop):
                validate()
            if rank == 0 and (iteration % config["checkpoint_every"] == 0 or iteration == stop):
                _save_state(run_dir, model, optimizer, scheduler, config, iteration, best, dataset.landmarks,
                            plateau)
    if writer is not None:
        writer.close()
    if dataset.skipped and rank == 0:
        console.notice(f"{len(dataset.skipped)} unreadable sample(s) skipped (--skip-bad)")
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, run_dir / "model.pt", iteration, best)


def _meta(config: dict, iteration: int, metrics: dict | None = None) -> dict:
    data = config["data"] if isinstance(config["data"], list) else [config["data"]]
    return {"iterations": iteration, "data": [str(d) for d in data], "train_config": json.dumps(config),
            "metrics": metrics or {}, "torch": str(torch.__version__)}


def _save_state(run_dir: Path, model, optimizer, scheduler, config, iteration, best, landmark_cache=None,
                plateau: PlateauRule | None = None) -> None:
    """Training state first, then the model checkpoint; both atomic, so a kill -9 loses at most
    the iterations since the previous save."""
    state = {"model": checkpoint_dict(model, config["scale"], _meta(config, iteration)),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": torch.get_rng_state(), "iteration": iteration, "best_psnr": best,
             "config": json.loads(json.dumps(config)),
             "plateau": plateau.state() if plateau is not None else None}
    atomic_write(run_dir / "last.pt", lambda p: torch.save(state, p))
    if landmark_cache is not None:
        landmark_cache.save()
    save_checkpoint(run_dir / "model.pt", model, config["scale"], _meta(config, iteration))


def _broadcast_event(event: str | None, device) -> str | None:
    """Rank 0's plateau decision, sent to every rank."""
    codes = [None, DROP, CONVERGED]
    code = torch.tensor([codes.index(event)], device=device)
    dist.broadcast(code, src=0)
    return codes[int(code.item())]


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``RUN/log.jsonl``: logged steps, validations and ``[plateau]`` events, in order."""
    with open(Path(run_dir) / "log.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _validation_pairs(path: str, config: dict, skipped: list[str] | None = None) -> list:
    from refsr_cli.data.lightfield_dataset import iter_test_pairs

    k = config["views"][0] if isinstance(config["views"], (list, tuple)) else 1
    return list(iter_test_pairs(path, config["scale"], k, skipped=skipped))


def _validation_pass(model, lr: torch.Tensor, ref: torch.Tensor, scale: int, gated: bool) -> torch.Tensor:
    """One network pass, scored as the training loss scores it (``gated``: as inference hands it out)."""
    sr = model(lr, ref, scale)[0].float()
    return as_inferred(sr, ref, lr, scale, BACK_PROJECTION) if gated else sr


@torch.inference_mode()
def _validate(model, pairs, scale: int, device, gated: bool = False) -> dict:
    from refsr_cli.metrics import psnr, ssim

    model.eval()
    p, s = [], []
    for _name, lr, ref, hr in pairs:
        lr, ref = lr[None].to(device), ref[None].to(device)
        sr = _validation_pass(model, lr, reference_for_network(model, lr, ref, scale), scale, gated)
        sr = rematched_output(model, rematch_steps(model), lr, ref, scale, sr,      # as inference runs them
                              lambda matched: _validation_pass(model, lr, matched, scale, gated), BACK_PROJECTION)
        sr = sr[0].float().clamp(0, 1).cpu()
        p.append(psnr(sr, hr))
        s.append(ssim(sr, hr))
    finite = [v for v in p if math.isfinite(v)]
    return {"psnr": sum(finite) / max(len(finite), 1), "ssim": sum(s) / max(len(s), 1)}
