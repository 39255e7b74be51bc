"""The training loop: one function, read top to bottom.

AdamW (weight decay on matrices only), linear warmup then cosine or warmup-stable-decay,
gradient clipping, bf16 autocast where supported, optional torch.compile, periodic
evaluation on val, a tqdm bar, metrics.jsonl, checkpoints (and one when SIGTERM or SIGINT
asks the run to stop: train/stop.py), and the model folder written into the run folder at
the end. The run's objective (objectives/) builds the model, which supplies the
loss of a batch, and says what its data and its validation are.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from seemore.config import Config, TrainConfig
from seemore.data.datasets import DATASETS, data_workers, dataset_of, members
from seemore.data.user import UserDataset
from seemore.device import autocast_context, autocast_dtype, resolve_device
from seemore.errors import UserError
from seemore.layers.lora import add_lora
from seemore.layers.moe import router_report
from seemore.objectives import build_model, objective_of, training_data
from seemore.objectives.load import load_components, load_folder
from seemore.tracking import MLflowRun
from seemore.train.allocator import keep_freed_memory
from seemore.train.checkpoint import (
    gather_rng_states,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from seemore.train.distributed import LossOf, World, join, leave
from seemore.train.stop import GracefulStop, Stopped


def learning_rate(step: int, config: Config) -> float:
    """Linear warmup to lr, then train.schedule's decay to min_lr at the last step."""
    t = config.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "wsd":
        decay_steps = max(1, round(t.cooldown * t.steps))
        progress = (step + 1 - (t.steps - decay_steps)) / decay_steps
        return t.lr + (t.min_lr - t.lr) * min(1.0, max(0.0, progress))
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def prepare(model: nn.Module, config: Config) -> None:
    """Start the model from the folders the config names, freeze what it says and give it
    the adapters it names."""
    t = config.train
    for folder in t.init_from:
        load_components(model, folder)
    if t.vision_from:
        load_components(model, t.vision_from, only=("vision",))
    if t.vq_from:
        model.vq.load_state_dict(load_folder(t.vq_from).state_dict())
    children = dict(model.named_children())
    for name in t.freeze:
        if name not in children:
            raise UserError(f"train.freeze: a {t.objective} model has no {name} "
                            f"(it has {', '.join(children)})")
        children[name].requires_grad_(False)
    if t.lora:  # the adapted components train only through their adapters
        for name in {target.partition(".")[0] for target in t.lora_targets}:
            if name in children:
                children[name].requires_grad_(False)
        add_lora(model, t.lora_targets, t.lora, t.lora_alpha)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("train.freeze leaves nothing to train")


def skipped_rows(config: Config) -> dict | None:
    """How many rows of a user's dataset were left out (data.on_bad_sample=skip) and why."""
    if not objective_of(config).images or config.data.dataset in DATASETS:
        return None
    skipped = [bad for m in members(dataset_of(config)).values() if isinstance(m, UserDataset)
               for bad in m.skipped]
    if not skipped:
        return None
    reasons = Counter(bad.reason.split(" (")[0] for bad in skipped)
    return {"rows": len(skipped), "reasons": dict(reasons.most_common()),
            "first": [str(bad) for bad in skipped[:10]]}


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; each group's "lr_scale" multiplies the
    scheduled learning rate (train.vision_lr / train.lr for the ViT and the projector)."""
    t = config.train
    image_side = {id(p) for name, child in model.named_children()
                  if name in ("vision", "projector") for p in child.parameters()}
    by_setting: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            scale = t.vision_lr / t.lr if t.vision_lr and id(p) in image_side else 1.0
            decay = t.weight_decay if p.dim() >= 2 else 0.0
            by_setting.setdefault((scale, decay), []).append(p)
    groups = [{"params": params, "lr_scale": scale, "weight_decay": decay}
              for (scale, decay), params in by_setting.items()]
    # the fused kernel is several times faster than the per-tensor loop, on CPU too
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=True)


def micro_batches(start: int, steps: int, batch: int, world: World,
                  accum: int) -> list[list[int]]:
    """This process's micro-batches, in order, as example indices. Step s trains on the
    global batch of examples s*batch .. (s+1)*batch - 1; of its world.size * accum equal
    slices, micro-step m of rank r takes slice m * world.size + r."""
    micro = batch // (world.size * accum)
    return [list(range(first, first + micro))
            for s in range(start, steps) for m in range(accum)
            for first in [s * batch + (m * world.size + world.rank) * micro]]


def place(t: TrainConfig) -> tuple[torch.device, World]:
    """The device this process trains on and the torchrun world it belongs to."""
    device = resolve_device(t.device)
    world = join(device.type)
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    if t.batch_size % (world.size * t.grad_accum):
        raise UserError(f"train.batch_size ({t.batch_size}) is the global batch: it must "
                        f"divide into {world.size} processes x train.grad_accum "
                        f"({t.grad_accum}) equal micro-batches")
    return device, world


class Waited:
    """An iterator over batches that adds up how long its next() took: the time training
    waited for data (with data.num_workers=0, all of the time spent making it)."""

    def __init__(self, batches):
        self.batches, self.seconds = batches, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.seconds += time.perf_counter() - start


def optimizer_step(batches, replica, loss_of, optimizer, scaler, config: Config,
                   device: torch.device, world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over train.grad_accum micro-batches; (loss, gradient norm)."""
    t = config.train
    loss = torch.zeros((), device=device)
    for micro in range(t.grad_accum):
        b = next(batches).to(device)
        # gradients are averaged across processes once, at the last micro-step
        syncs = world.size == 1 or micro == t.grad_accum - 1
        with (nullcontext() if syncs else replica.no_sync()), \
                autocast_context(t.precision, device):
            micro_loss = loss_of(b) / t.grad_accum
            scaler.scale(micro_loss).backward()
        loss += micro_loss.detach()
    scaler.unscale_(optimizer)  # clip the true gradients
    # grad_clip 0: no clipping, the norm still measured for the log
    grad_norm = torch.nn.utils.clip_grad_norm_(replica.parameters(), t.grad_clip or math.inf)
    scaler.step(optimizer)  # skipped when fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm


def restore(out_dir: Path, model: nn.Module, optimizer, scaler) -> tuple[int, list | None]:
    """Load out_dir's newest checkpoint into the model, optimizer and scaler; returns the
    step to go on from and every process's saved generator states (none: step 0)."""
    state = load_checkpoint(out_dir)
    if state is None:
        return 0, None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state["step"] + 1, state["rng"]


def write(metrics, tracker: MLflowRun | None, step: int, record: dict) -> None:
    """One line of metrics.jsonl (and the same to MLflow)."""
    metrics.write(json.dumps({"step": step, **record}) + "\n")
    metrics.flush()
    if tracker:
        tracker.log_metrics(record, step)


def save_run(model: nn.Module, out_dir: Path, tracker: MLflowRun | None) -> None:
    model.save_pretrained(out_dir)
    if tracker:
        for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl"):
            if (out_dir / name).is_file():  # a VQ run has no tokenizer.json
                tracker.log_artifact(out_dir / name)
        tracker.finish()


def train(config: Config, out_dir: str | Path, progress: bool = True,
          resume: bool = False) -> nn.Module:
    """Train a model of the config's objective and save it (with metrics) into out_dir.
    resume: continue from out_dir's newest checkpoint, to the same weights an unbroken run
    would reach (train/checkpoint.py). Under torchrun, every process trains its shard of
    each batch (train/distributed.py) and the first one writes everything."""
    t, objective, out_dir = config.train, objective_of(config), Path(out_dir)
    t.check_schedule()
    device, world = place(t)
    keep_freed_memory()  # the steps reuse their buffers instead of faulting in fresh pages
    torch.manual_seed(t.seed)
    model = build_model(config)
    prepare(model, model.run)
    model.to(device)
    config = model.run
    optimizer = make_optimizer(model, config)
    # fp16 has too few exponent bits for small gradients: scale the loss up, then back
    scaler = torch.amp.GradScaler(
        device.type, enabled=autocast_dtype(t.precision, device) == torch.float16)
    replica = LossOf(model)
    if world.size > 1:
        replica = DistributedDataParallel(
            replica, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=objective.unused_parameters(config))
    loss_of = torch.compile(replica) if t.compile else replica  # shares the weights

    dataset, collate_fn = training_data(model, config)
    if world.main:  # once the model and its data are ready: a run that cannot start leaves
        out_dir.mkdir(parents=True, exist_ok=True)  # no folder behind
        config.save(out_dir / "config.json")
    start, rngs = restore(out_dir, model, optimizer, scaler) if resume else (0, None)
    # examples are drawn by index, so the data position is the step
    loader = DataLoader(dataset, batch_sampler=micro_batches(
        start, t.steps, t.batch_size, world, t.grad_accum),
        num_workers=data_workers(config.data.num_workers, device.type), collate_fn=collate_fn)
    batches = Waited(iter(loader))  # before the generators are restored: it draws from them
    if rngs is not None:  # this process's generators (the first's, if there were fewer)
        set_rng_state(rngs[world.rank] if world.rank < len(rngs) else rngs[0])

    tracker = MLflowRun(out_dir, config.to_dict()) if t.track == "mlflow" and world.main \
        else None
    model.train()
    tick, seen = time.perf_counter(), 0
    with (open(out_dir / "metrics.jsonl" if world.main else os.devnull, "a") as metrics,
          tqdm(total=t.steps, initial=start, disable=not (progress and world.main),
               desc="train", dynamic_ncols=True) as bar, GracefulStop() as stop):
        if world.main and (skipped := skipped_rows(config)):
            metrics.write(json.dumps({"skipped": skipped}) + "\n")
            bar.write(f"skipped {skipped['rows']} bad rows of {config.data.dataset}: "
                      + ", ".join(f"{n} x {why}" for why, n in skipped["reasons"].items()))
        for step in range(start, t.steps):
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            loss, grad_norm = optimizer_step(batches, replica, loss_of, optimizer, scaler,
                                             config, device, world)
            seen += t.batch_size
            bar.update(1)
            last = step == t.steps - 1
            stopping = 0 if last else stop.requested(world, device)
            checkpoints_now = stopping or t.checkpoint_every and (
                (step + 1) % t.checkpoint_every == 0 or last)
            rngs = gather_rng_states(world.size) if checkpoints_now else None
            if stopping:
                path = save_checkpoint(out_dir, step, model, optimizer, scaler, rngs,
                                       max(t.keep_checkpoints, 1)) if world.main else None
                leave(world)
                raise Stopped(f"stopped by {signal.Signals(stopping).name} after step "
                              f"{step + 1} of {t.steps}; checkpoint {path}; go on with: "
                              f"seemore train --resume {out_dir}", stopping)
            if not world.main:
                continue
            if step % t.log_every == 0 or last:
                elapsed = time.perf_counter() - tick
                record = {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                          "samples_per_s": seen / elapsed, "data_wait": batches.seconds / elapsed,
                          **({"moe": routers} if (routers := router_report(model)) else {}),
                          **objective.record(model)}
                write(metrics, tracker, step, record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.1e}",
                                samples_s=f"{record['samples_per_s']:.0f}",
                                data=f"{record['data_wait']:.0%}")
                tick, seen, batches.seconds = time.perf_counter(), 0, 0.0
            evaluates = t.eval_every and step > 0 and (step % t.eval_every == 0 or last)
            if evaluates and (validation := objective.validate(model, config)):
                write(metrics, tracker, step, {"val": validation[0]})
                bar.write(f"step {step}: {validation[1]}")
                model.train()
                tick, batches.seconds = time.perf_counter(), 0.0
            if checkpoints_now:
                save_checkpoint(out_dir, step, model, optimizer, scaler, rngs,
                                t.keep_checkpoints)
    model.eval()
    if world.main:
        save_run(model, out_dir, tracker)
    leave(world)  # a worker process ends here
    return model
