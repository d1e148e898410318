"""Training: ``fit(config) -> RunRecord``, and ``python -m stlib.train PARAMS.yaml --set k=v``.

One readable loop (nanoGPT-style): set up, resume, then per epoch train -> evaluate -> step the
schedule -> checkpoint and log. What a run writes is described in :mod:`stlib.record`; the
model and optimizer come from :mod:`stlib.build`; torchrun and stop signals from
:mod:`stlib.distributed`.

``run_id`` is a hash of the resolved config and seed, so rerunning the same settings resumes an
unfinished run or returns the finished record without training.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .build import build_model, resolve_device
from .distributed import Distributed, RunInterrupted, StopSignal, launch_torchrun, under_torchrun
from .errors import USER_ERRORS, one_line
from .params import Config, load_params
from .record import RunRecord, finished_record, save_checkpoint
from .run import EpochState, Run

__all__ = ["fit", "train_one_epoch", "evaluate", "accuracy", "main", "RunRecord", "build_model",
           "resolve_device"]


def fit(config: Config, *, gpus: int = 1, resume_from: str | Path | None = None,
        force: bool = False) -> RunRecord:
    """Train ``config`` to completion -> RunRecord.

    * A finished run with the same settings is returned as it is; an unfinished one resumes
      from its ``last.pt`` (end of the last epoch, or mid-epoch after a stop signal).
    * ``gpus > 1`` (outside torchrun) launches ``torchrun --nproc_per_node=gpus -m stlib.train``
      on the saved config and returns its record; under torchrun every rank calls ``fit``.
    * ``resume_from``: start from another checkpoint; one from a different config is refused
      unless ``force``.
    """
    if (record := finished_record(config.run_dir)) is not None:
        return record
    if gpus > 1 and not under_torchrun():
        return launch_torchrun(config, gpus)
    run = Run.set_up(config)
    run.resume(Path(resume_from) if resume_from else run.ckpt_dir / "last.pt",
               required=resume_from is not None, force=force)
    run.start()
    with StopSignal() as stop:
        for epoch in range(run.start_epoch, run.num_epochs):
            tic = time.perf_counter()
            loss_sum, correct, seen = run_epoch(run, epoch, stop, tic)
            val_stats = evaluate(run.model, run.bundle.val_loader, run.device, amp=run.amp,
                                 max_batches=config.train.eval_batches, ddp=run.ddp)
            run.scheduler.step(epoch + 1)
            run.seconds += time.perf_counter() - tic
            run.end_epoch({"epoch": epoch, "lr": run.lr_at_start, "train_loss": loss_sum / seen,
                           "train_acc1": 100.0 * correct / seen, **val_stats,
                           "seconds": time.perf_counter() - tic})
    if run.ddp.is_main:
        run.finish()
    run.ddp.barrier()
    return RunRecord.load(config.run_dir)


def run_epoch(run: Run, epoch: int, stop: StopSignal, tic: float) -> list[float]:
    """One epoch (the rest of it after a mid-epoch stop) -> summed (loss, correct, seen)."""
    tc, loader = run.config.train, run.bundle.train_loader
    if run.mixup is not None and tc.mixup_off_epoch and epoch >= tc.mixup_off_epoch:
        run.mixup.mixup_enabled = False  # the recipe's mixup_off_epoch; targets stay soft
    loader.sampler.set_epoch(epoch)  # the order depends on (seed, epoch) only: resumable
    loader.sampler.skip(run.epoch_state.step * loader.batch_size)
    run.lr_at_start = run.optimizer.param_groups[0]["lr"]

    def on_stop(partial: EpochState):
        run.seconds += time.perf_counter() - tic
        if run.ddp.is_main:
            save_checkpoint(run.checkpoint(epoch, partial), run.ckpt_dir / "last.pt")
        raise RunInterrupted(f"stopped by signal {stop.received} at epoch {epoch}, step "
                             f"{partial.step}; rerun the same settings to resume")

    state = train_one_epoch(
        run.model, loader, run.optimizer, run.loss_fn, run.device, scaler=run.scaler,
        amp=run.amp, mixup=run.mixup, clip_grad=tc.clip_grad, accum_steps=tc.accum_steps,
        progress=tc.progress and run.ddp.is_main, epoch=epoch, state=run.epoch_state,
        stop=stop, ddp=run.ddp, on_stop=on_stop)
    run.epoch_state = EpochState()
    return run.ddp.all_sum([state.loss_sum, state.correct, state.seen], run.device)


def train_one_epoch(model, loader, optimizer, loss_fn, device, *, scaler, amp: torch.dtype | None, mixup,
                    clip_grad: float | None, accum_steps: int, progress: bool, epoch: int,
                    state: EpochState, stop: StopSignal | None = None,
                    ddp: Distributed = Distributed(), on_stop=None) -> EpochState:
    """Train over ``loader`` (which already skips ``state.step`` batches when resuming).

    ``amp``: the autocast dtype (None: fp32). A batch is split into ``accum_steps`` interleaved
    micro-batches (``x[j::accum_steps]``), whose gradients are summed before one optimizer
    step: exactly what ``accum_steps`` DDP processes would compute on their shares of the same
    global batch.
    """
    model.train()
    bar = _progress(loader, progress, desc=f"epoch {epoch}", leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        hard_labels = labels
        if mixup is not None and len(images) % 2 == 0:  # timm's Mixup needs an even batch
            shape = images.shape  # event frames [B, T, P, H, W]: one box cut from every bin
            images, labels = mixup(images.flatten(1, 2) if images.dim() == 5 else images, labels)
            images = images.view(shape)
        elif mixup is not None:
            labels = _smooth_one_hot(labels, mixup.num_classes, mixup.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for j in range(accum_steps):
            micro_x, micro_y = images[j::accum_steps], labels[j::accum_steps]
            sync = j == accum_steps - 1 or not ddp.enabled
            no_sync = not sync and hasattr(model, "no_sync")
            with model.no_sync() if no_sync else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=amp or torch.float16, enabled=amp is not None):
                    logits = model(micro_x)
                    loss = loss_fn(logits, micro_y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch}, step {state.step}; training "
                        f"stopped and the last good checkpoint is kept")
                # each micro-batch is 1/accum of the batch: scale so the gradients add to the mean
                scaler.scale(loss / accum_steps).backward()
            batch_loss += loss.item() / accum_steps  # .item() syncs once per micro-step
            logits = logits.mean(0) if logits.dim() == 3 else logits  # per-step (TET) logits
            state.correct += (logits.argmax(-1) == hard_labels[j::accum_steps]).sum().item()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        state.loss_sum += batch_loss * len(images)
        state.seen += len(images)
        state.step += 1
        if progress:  # the running means of this epoch, and where the schedule is
            bar.set_postfix(loss=f"{state.loss_sum / state.seen:.4f}",
                            acc=f"{100.0 * state.correct / state.seen:.2f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.3g}", refresh=False)
        if stop is not None and on_stop is not None and stop.requested(ddp, device):
            on_stop(state)
    return state


@torch.no_grad()
def evaluate(model, loader, device, *, amp: torch.dtype | None, max_batches: int | None = None,
             ddp: Distributed = Distributed()) -> dict[str, float]:
    """Validation loss, top-1 and top-5 (percent), summed over this rank's share and reduced."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss = top1 = top5 = seen = 0.0
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float16, enabled=amp is not None):
            logits = model(images)
        logits = logits.mean(0) if logits.dim() == 3 else logits  # per-step (TET) logits
        total_loss += loss_fn(logits.float(), labels).item()
        c1, c5 = accuracy(logits, labels)
        top1, top5, seen = top1 + c1, top5 + c5, seen + len(images)
    total_loss, top1, top5, seen = ddp.all_sum([total_loss, top1, top5, seen], device)
    return {"val_loss": total_loss / seen, "val_acc1": 100.0 * top1 / seen,
            "val_acc5": 100.0 * top5 / seen}


def accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> list[float]:
    """Top-k correct counts (not percentages) for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices  # [B, maxk]
    hit = pred.eq(target[:, None])
    return [hit[:, :min(k, maxk)].any(dim=1).sum().item() for k in ks]


def _smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    target = torch.full((len(labels), num_classes), off, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stlib.train", description="Train one run from a params file.")
    parser.add_argument("params", help="params YAML, e.g. params/spikformer/cifar10.yaml")
    parser.add_argument("--preset", default=None, help="e.g. quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted override, e.g. train.epochs=5")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="resume from this checkpoint instead of the run's own last.pt")
    parser.add_argument("--force", action="store_true",
                        help="resume even if the checkpoint comes from a different config")
    parser.add_argument("--gpus", type=int, default=1,
                        help="launch torchrun with this many processes (or call torchrun yourself)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a bad setting or a missing dataset, not one line")
    args = parser.parse_args(argv)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        config = load_params(args.params, preset=args.preset, overrides=args.overrides)
        if main_rank:
            print(f"run directory: {config.run_dir}", file=sys.stderr, flush=True)
        record = fit(config, gpus=args.gpus, resume_from=args.resume, force=args.force)
    except USER_ERRORS as err:  # a setting, path or file to fix: the message says how
        if args.debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    if not main_rank:
        return 0
    print(json.dumps(record.summary, indent=2))
    print(f"run directory: {record.run_dir} ({record.summary.get('status')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
