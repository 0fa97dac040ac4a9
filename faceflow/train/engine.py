"""The training loop: build backbone + head on global tensors, run eager or nn.Graph steps, log, checkpoint, resume.

One code path for eager/graph, CPU/CUDA and 1/N processes: parameters, data and loss are global
tensors on `all_ranks_placement(device)`. A rerun resumes from the newest complete checkpoint and
a finished run returns at once.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import yaml

from faceflow.runtime.flow import flow

from faceflow.checkpoint import (MANIFEST, latest_checkpoint, read_checkpoint_meta, remove_partial_checkpoints,
                                 step_dir_name, write_checkpoint, write_manifest)
from faceflow.data.atomic import atomic_file
from faceflow.errors import FaceflowError
from faceflow.runtime.affinity import pin_local_rank
from faceflow.runtime.device import (all_ranks_placement, local_rank, local_world_size, rank, resolve_device,
                                     wait_for_queued_work, world_size)
from faceflow.train.amp import FORCE_OVERFLOW_ENV, DynamicLossScaler, forced_overflow
from faceflow.train.config import total_steps
from faceflow.train.graph import TrainGraph
from faceflow.train.metrics import SpeedMeter, TrainLog, speed_line
from faceflow.train.optimizer import build_optimizer
from faceflow.train.resume import find_conflict
from faceflow.train.rules import check_run
from faceflow.train.schedule import build_scheduler, learning_rate

Batches = Iterator[tuple[flow.Tensor, flow.Tensor]]
BatchFactory = Callable[[dict[str, Any], flow.placement, int], Batches]


class TrainingDiverged(FaceflowError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def pipeline_batches(config: dict[str, Any], placement: flow.placement, start_step: int) -> Batches:
    """Global (images, labels) batches, split(0) over ranks, from the OFRecord training pipeline.

    OneFlow reads the checked training folder (faceflow.data.train_parts): the data itself, or a view
    without the records its decoder cannot read (bad_images: skip).

    One batch is always in flight: OneFlow runs ops asynchronously, so on CUDA the next batch is read
    and decoded on the CPU while the GPU computes the step (on a CPU-only run both share the cores).
    """
    from faceflow.data.pipeline import TrainPipeline, check_parts_divisible
    from faceflow.data.train_parts import verify_train_parts

    data = verify_train_parts(config["train_data"], config["bad_images"])  # checked by `faceflow train`: cached
    check_parts_divisible(data.read_dir, world_size())
    pipeline = TrainPipeline(
        data.read_dir, config["batch_size"], placement=placement, sbp=flow.sbp.split(0),
        shuffle=config["shuffle"], shuffle_buffer=config["shuffle_buffer"], seed=config["seed"] + start_step,
        mirror=config["mirror"], num_threads=config["num_threads"], image_size=data.image_size)
    upcoming = pipeline()
    while True:
        current, upcoming = upcoming, pipeline()
        yield current


def _to_targets(loaded: dict[str, Any], targets: dict[str, flow.Tensor], where: Path) -> dict[str, Any]:
    """Loaded (rank-0) tensors moved to each target tensor's placement and sbp."""
    result = {}
    for key, target in targets.items():
        if key not in loaded:
            raise FaceflowError(f"{where}: checkpoint lacks {key!r} (different network or head?)")
        value = loaded[key]
        if tuple(value.shape) != tuple(target.shape):
            raise FaceflowError(f"{where}: {key} has shape {tuple(value.shape)}, run needs {tuple(target.shape)}")
        result[key] = value.to_global(placement=target.placement, sbp=flow.sbp.broadcast).to_global(sbp=target.sbp)
    return result


class Trainer:
    """One training run writing to `out_dir`; `run()` trains from scratch or resumes.

    `loss_scaling` turns the eager dynamic loss scaler on or off; by default it runs with eager AMP
    (fp16 on CUDA). True also uses it without autocast, e.g. to test its decisions on CPU.
    """

    def __init__(self, config: dict[str, Any], out_dir: str | os.PathLike,
                 batches: BatchFactory = pipeline_batches, loss_scaling: bool | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.batch_factory = batches
        self.device = resolve_device(config["device"])
        self.world = world_size()
        check_run(config, self.world, self.device)  # `faceflow train` checked this before starting the processes
        self.cpus = (pin_local_rank(local_rank(), local_world_size())
                     if self.device == "cpu" and config["cpu_affinity"] else None)
        self.is_writer = rank() == 0
        self.placement = all_ranks_placement(self.device)
        self.total = total_steps(config, self.world)
        self.global_batch = config["batch_size"] * self.world
        self.amp = bool(config["fp16"])  # check_run refuses fp16 off CUDA
        self.loss_scaling = self.amp if loss_scaling is None else loss_scaling
        self.updates = 0  # optimizer steps taken so far, counting those before a resume
        self.log = TrainLog(self.out_dir, self.is_writer, tensorboard=config["tensorboard"])
        self.checkpoints = self.out_dir / "checkpoints"
        self.losses: list[float] = []

    # ----- construction -------------------------------------------------------------------
    def _build(self, fresh: bool) -> None:
        """Backbone, head, optimizer, schedule; a `fresh` run (no checkpoint to resume) takes `pretrained`."""
        from faceflow.heads import build_head
        from faceflow.models import build_backbone

        cfg = self.config
        # random kernels run asynchronously: drain them so the seed applies to this build only
        wait_for_queued_work()
        flow.manual_seed(cfg["seed"])
        wait_for_queued_work()
        np.random.seed(cfg["seed"])
        backbone = build_backbone(cfg["network"], embedding_size=cfg["embedding_size"],
                                  dropout=cfg["dropout"], **(cfg["network_kwargs"] or {}))
        if fresh and cfg["pretrained"]:
            self._load_pretrained(backbone)
        if self.world > 1:  # the same weights on every rank before they are declared broadcast
            with flow.no_grad():
                for tensor in list(backbone.parameters()) + list(backbone.buffers()):
                    flow.comm.broadcast(tensor, 0)
        self.backbone = backbone.to_global(placement=self.placement, sbp=flow.sbp.broadcast)
        wait_for_queued_work()  # backbone init kernels done before the head draws its seed
        self.head = build_head(cfg, self.placement)
        wait_for_queued_work()
        self.params = [p for m in (self.backbone, self.head) for p in m.parameters() if p.requires_grad]
        self.backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        self.frozen = False
        self.optimizer = build_optimizer(self.params, cfg)
        if hasattr(self.head, "bind_optimizer"):  # Partial FC swaps optimizer-state rows with its class sample
            self.head.bind_optimizer(self.optimizer, keep_momentum=cfg["partial_fc_momentum"] == "exact")
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total)
        self.graph = TrainGraph(self.backbone, self.head, self.optimizer, self.scheduler, self.amp) \
            if cfg["graph"] else None
        forced = forced_overflow()
        self.scaler = DynamicLossScaler(forced=forced) if self.loss_scaling and self.graph is None else None
        if self.scaler is None and forced is not None:
            self.log.message(f"note: {FORCE_OVERFLOW_ENV} only acts on eager runs with loss scaling (fp16 on CUDA)")

    def _load_pretrained(self, backbone) -> None:
        """Every rank reads `pretrained` (the same file, so the same weights and the same errors)."""
        from faceflow.train.pretrained import load_pretrained

        pretrained = load_pretrained(self.config["pretrained"], self.config)
        backbone.load_state_dict({k: flow.tensor(v) for k, v in pretrained.state.items()})
        self.log.message(f"backbone initialised from {pretrained.description}; the {self.config['loss']} head "
                         f"({self.config['num_classes']} classes) starts fresh")

    def freeze_backbone(self, frozen: bool) -> None:
        """Hold the backbone fixed (no gradients, BatchNorm on its running statistics) or release it."""
        if frozen == self.frozen:
            return
        for param in self.backbone_params:
            param.requires_grad = not frozen
        self.backbone.train(not frozen)
        self.frozen = frozen

    # ----- one step ------------------------------------------------------------------------
    def _eager_step(self, images: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        if self.amp:
            with flow.autocast(device_type="cuda"):
                embeddings = self.backbone(images)
            loss = self.head(embeddings.to(flow.float32), labels)
        else:
            loss = self.head(self.backbone(images), labels)
        apply = True
        if self.scaler is not None:
            scale = self.scaler.scale
            (loss * scale).backward()
            apply = self.scaler.unscale_and_check(self.params, self.updates)
            if not apply:
                self.log.message(f"step {self.updates}: gradient overflow, update skipped; "
                                 f"loss scale {scale:g} -> {self.scaler.scale:g}")
        else:
            loss.backward()
        if apply:
            if self.config["clip_grad_norm"] is not None:
                self.optimizer.clip_grad()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # a kept zeroed grad would add one more copy next step
        self.scheduler.step()
        return loss

    def step(self, images: flow.Tensor, labels: flow.Tensor) -> float:
        """Run one optimizer step; returns the loss as a Python float."""
        self.updates += 1
        loss = self.graph.step(images, labels) if self.graph is not None else self._eager_step(images, labels)
        return float(loss.to_local().numpy().reshape(-1)[0]) if loss.is_global else float(loss.numpy())

    # ----- checkpoints ---------------------------------------------------------------------
    def _optimizer_state(self) -> dict[str, Any]:
        if self.graph is None:
            return self.optimizer.state_dict()
        return {k: v for k, v in self.graph.state_dict().items() if isinstance(v, flow.Tensor)}

    def save(self, step: int, loss: float) -> Path:
        """Checkpoint after `step` updates (all ranks call; rank 0 writes)."""
        state = {"epoch": self.epoch(step), "world_size": self.world, "loss": loss, "time": time.time(),
                 "graph": self.graph is not None, "total_steps": self.total}
        if self.scaler is not None:
            state["loss_scale"] = self.scaler.state_dict()

        def payload(tmp: Path) -> None:
            flow.save(self.backbone.state_dict(), tmp / "backbone", global_dst_rank=0)
            flow.save(self.head.state_dict(), tmp / "head", global_dst_rank=0)
            flow.save(self._optimizer_state(), tmp / "optimizer", global_dst_rank=0)

        return write_checkpoint(self.checkpoints, step, self.config, state, payload, writer=self.is_writer)

    def load(self, path: Path) -> int:
        """Restore model, optimizer and schedule from a checkpoint; returns its step."""
        _, state = read_checkpoint_meta(path)
        step = int(state["step"])
        if self.config["fc_mode"] != "data_parallel" and int(state.get("world_size", self.world)) != self.world:
            raise FaceflowError(f"{path}: written by {state['world_size']} processes, this run has {self.world} "
                                f"(fc_mode {self.config['fc_mode']} shards the head by rank)")
        for name, module in (("backbone", self.backbone), ("head", self.head)):
            loaded = flow.load(str(path / name), global_src_rank=0)
            module.load_state_dict(_to_targets(loaded, module.state_dict(), path / name))
        same_mode = bool(state.get("graph", False)) == (self.graph is not None)
        optimizer_state = flow.load(str(path / "optimizer"), global_src_rank=0) if same_mode else None
        if self.graph is None:
            if optimizer_state is not None:
                self.optimizer.load_state_dict(optimizer_state)
            for _ in range(step):
                self.scheduler.step()
        elif optimizer_state is not None:
            self.graph.load_state_dict({k: v.to_global(placement=self.placement, sbp=flow.sbp.broadcast)
                                        for k, v in optimizer_state.items()}, strict=False)
        else:
            raise FaceflowError(f"{path}: written in eager mode; resume it with graph: false "
                                "(the graph's optimizer and LR state differ)")
        if optimizer_state is None:
            self.log.message(f"note: {path.name} was written in graph mode; optimizer state restarts in eager mode")
        if self.scaler is not None and "loss_scale" in state:
            self.scaler.load_state_dict(state["loss_scale"])
        if hasattr(self.head, "resume_sampling"):  # Partial FC: a class sample sequence of its own from here on
            self.head.resume_sampling(step)
        return step

    # ----- the loop ------------------------------------------------------------------------
    def epoch(self, step: int) -> int:
        """Epoch number (from 0) that update `step` belongs to."""
        images = self.config.get("num_images")
        return int(step * self.global_batch // images) if images else 0

    def _finished(self) -> tuple[int, Path] | None:
        latest = latest_checkpoint(self.checkpoints)
        if latest and latest[0] >= self.total:
            return latest
        return None

    def _write_run_config(self) -> None:
        if not self.is_writer:
            return
        with atomic_file(self.out_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _validator(self) -> Callable[[int], None] | None:
        if not self.config["validate_every"] or not self.config["val_benchmarks"]:
            return None
        from faceflow.eval.benchmarks import validate_model

        highest: dict[str, float] = {}

        def validate(step: int) -> None:
            results = validate_model(self.backbone, self.config["val_benchmarks"], self.config["val_batch_size"],
                                     step=step, highest=highest, log=self.log.message)
            for name, result in results.items():
                self.log.record({"step": step, "benchmark": name, "accuracy": result.accuracy,
                                 "accuracy_std": result.accuracy_std, "xnorm": result.xnorm, "time": time.time()},
                                file_name="validation.jsonl")

        return validate

    def run(self) -> int:
        """Train until the last step (resuming if the checkpoints were trained with the same settings), then
        write the completion manifest OUT/train.json; returns the final step."""
        conflict = find_conflict(self.checkpoints, self.config, self.world)
        if conflict is not None:
            raise FaceflowError(conflict.message())
        finished = self._finished()
        if finished:
            self.log.message(f"training already finished: {finished[1]} is step {finished[0]} of {self.total}; "
                             "nothing to do")
            self._write_manifest()
            return finished[0]
        self._write_run_config()
        if self.is_writer:  # a manifest of a shorter earlier run does not describe this one
            (self.out_dir / MANIFEST).unlink(missing_ok=True)
            remove_partial_checkpoints(self.checkpoints)
        start = 0
        latest = latest_checkpoint(self.checkpoints)
        self._build(fresh=latest is None)
        if latest:
            start = self.load(latest[1])
            self.updates = start
            scale = f", loss scale {self.scaler.scale:g}" if self.scaler is not None else ""
            self.log.message(f"resuming from {latest[1]} (step {start} of {self.total}{scale})")
        self.log.start(start)
        if start == 0:
            self.log.message(f"training {self.config['network']} / {self.config['loss']} / {self.config['fc_mode']} "
                             f"for {self.total} steps, {self.world} process(es), batch {self.global_batch}, "
                             f"{self.config['optimizer']} lr {self.config['lr']:g}, "
                             f"{'graph' if self.graph is not None else 'eager'} on {self.device}"
                             f"{' with AMP' if self.amp else ''}"
                             f"{', each process pinned to its share of the CPUs' if self.cpus else ''}")
        validate = self._validator()
        batches = self.batch_factory(self.config, self.placement, start)
        self._loop(start, batches, validate)
        self.log.close()
        self._write_manifest()
        return self.total

    def _write_manifest(self) -> None:
        if self.is_writer:
            write_manifest(self.out_dir, self.total)

    def _loop(self, start: int, batches: Batches, validate: Callable[[int], None] | None) -> None:
        cfg = self.config
        meter = SpeedMeter(self.global_batch)
        last_saved = latest_checkpoint(self.checkpoints)
        freeze = cfg["freeze_backbone_steps"]
        for step in range(start, self.total):
            if (step < freeze) != self.frozen:
                self.freeze_backbone(step < freeze)
                self.log.message(f"backbone frozen until step {freeze}: only the head trains" if self.frozen
                                 else f"step {step}: backbone released, the whole network trains")
            images, labels = next(batches)
            loss = self.step(images, labels)
            if not math.isfinite(loss):
                where = last_saved[1] if last_saved else "none (no checkpoint written yet)"
                message = (f"loss is {loss} at step {step + 1}: training stopped; last good checkpoint: {where} "
                           "(lower lr, add warmup_steps or set clip_grad_norm)")
                self.log.error(message)
                raise TrainingDiverged(message)
            self.losses.append(loss)
            meter.update(loss)
            done = step + 1
            if done % cfg["log_every"] == 0 or done == self.total:
                speed, mean_loss, per_step = meter.read()
                lr = learning_rate(cfg, step, self.total)
                hours = per_step * (self.total - done) / 3600.0
                self.log.message(speed_line(speed, mean_loss, lr, self.epoch(step), done, hours))
                self.log.record({"step": done, "epoch": self.epoch(step), "loss": mean_loss, "lr": lr,
                                 "samples_per_sec": speed, "time": time.time()})
                meter.reset()
            if validate is not None and (done % cfg["validate_every"] == 0 or done == self.total):
                validate(done)
            if done % cfg["checkpoint_every"] == 0 or done == self.total:
                path = self.save(done, loss)
                last_saved = (done, path)
                self.log.message(f"saved checkpoint {self.checkpoints / step_dir_name(done)}")
