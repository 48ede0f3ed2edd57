"""The training loop: one process or many under ``torchrun`` (training.md §2, decisions table).

A run directory ``<output_dir>/<dataset_name>/<version>/`` holds:

- ``config.yaml``: the resolved configuration, and ``run_info.json``: the flags given explicitly,
  world size, git revision and command line;
- ``log.jsonl``: one JSON line per epoch (training averages and evaluation metrics);
- ``tensorboard/``: every loss term and learning rate per step, metrics per evaluation;
- ``checkpoints/``: one folder per epoch (safetensors weights + training state), written atomically.

Only rank 0 writes files. Checkpoints are written before evaluation, so a crash while evaluating
loses nothing; ``resume`` continues exactly where the last checkpoint stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from wavecl.amp import decide_precision
from wavecl.atomic import write_text
from wavecl.checkpoint import (
    CheckpointPaths,
    latest_checkpoint,
    load_model_weights,
    load_training_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from wavecl.config import Config
from wavecl.data.collate import collate_clips
from wavecl.data.robust import SkipBadSamples
from wavecl.data.types import Batch
from wavecl.distributed import DistInfo, gather_objects, gather_to_main, on_main_process, reduce_loss_dict
from wavecl.evaluation.datasets import build_dataset, evaluate_model
from wavecl.model.wavecl import WaveCL, build_model
from wavecl.training.criterion import SetCriterion
from wavecl.training.matcher import HungarianMatcher
from wavecl.training.optim import build_optimizer, build_scheduler
from wavecl.training.seeding import loader_seed, rank_seed, seed_process

log = logging.getLogger("wavecl.train")

# Beside the ``best`` pointer: which metric chose it and its value (read back on resume, since the
# epoch's checkpoint is written before its evaluation).
BEST_METRIC_FILE = "best.json"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite and the run is configured to stop."""


def git_revision() -> str | None:
    """The git revision of the wavecl source tree, or None outside a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build_criterion(config: Config) -> SetCriterion:
    loss = config.loss
    matcher = HungarianMatcher(
        cost_class=loss.cost_class,
        cost_dice=loss.cost_dice,
        cost_bbox=loss.cost_bbox,
        cost_giou=loss.cost_giou,
        cost_con=loss.cost_con,
        focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma,
    )
    return SetCriterion(
        matcher,
        config.model.num_classes,
        loss,
        num_aux_layers=config.model.dec_layers - 1,
    )


def parameters_without_gradient(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that the last backward pass gave no gradient.

    Under DDP (built with ``find_unused_parameters=False``) every trainable parameter must receive a
    gradient at every step; a parameter the configuration never uses must be frozen instead.
    """
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad and parameter.grad is None]


def load_finetune_weights(model: WaveCL, path: str | Path) -> tuple[list[str], list[str]]:
    """Start a finetune from a pretraining checkpoint (training.md §2.12).

    The class heads are re-initialised (their weights are not loaded), every other weight is loaded
    non-strictly. Returns the missing and unexpected keys, which the caller logs.
    """
    state = {k: v for k, v in load_model_weights(path).items() if not k.startswith("class_embed.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("class_embed.")]
    return missing, list(result.unexpected_keys)


@dataclass
class EpochResult:
    losses: dict[str, float]
    skipped_batches: int
    bad_samples: int
    seconds: float


class Trainer:
    """Trains WaveCL as configured, on this process's device, as one rank of ``dist``.

    Args:
        config: the resolved configuration.
        dist: this process's place in the job (:func:`wavecl.distributed.init_distributed`).
        explicit_overrides: the configuration fields given on the command line (saved in the run).
        resume: a checkpoint folder or run directory to continue from, or None.
    """

    def __init__(
        self,
        config: Config,
        dist: DistInfo,
        explicit_overrides: dict[str, Any] | None = None,
        resume: str | Path | None = None,
    ) -> None:
        self.config = config
        self.dist = dist
        self.device = dist.device
        self.run_dir = config.run_directory()
        train_cfg = config.train

        seed_process(train_cfg.seed)  # identical initial weights and sample list on every rank
        model = build_model(config.model).to(self.device)
        self.model = model
        if train_cfg.pretrained_weights and resume is None:
            missing, unexpected = load_finetune_weights(model, train_cfg.pretrained_weights)
            log.info(
                "finetuning from %s; missing keys: %s; unexpected keys: %s",
                train_cfg.pretrained_weights,
                missing,
                unexpected,
            )
        self.ddp_model: nn.Module = (
            DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if dist.distributed
            else model
        )
        self.criterion = build_criterion(config)
        self.optimizer = build_optimizer(
            model, train_cfg.lr, train_cfg.lr_backbone, train_cfg.text_encoder_lr, train_cfg.weight_decay
        )
        self.scheduler = build_scheduler(self.optimizer, train_cfg.lr_drop, train_cfg.lr_gamma)
        self._gradients_checked = False
        self.precision = decide_precision(train_cfg.amp, self.device)
        log.info(self.precision.describe())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaler)

        self.train_set: Dataset = build_dataset(config.data, "train")
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=train_cfg.seed
        )
        seed_process(rank_seed(train_cfg.seed, dist.rank))  # from here on, every rank draws its own numbers
        self.start_epoch = 0
        self.best_metric: float | None = None
        if resume is not None:
            self._resume(resume)

        self.writer: SummaryWriter | None = None
        on_main_process(lambda: self._open_run_directory(explicit_overrides or {}), "creating the run directory")

    def _open_run_directory(self, explicit_overrides: dict[str, Any]) -> None:
        """Rank 0: create the run directory, write its config and run info, open TensorBoard."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._save_run_config(explicit_overrides)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.global_step)

    @property
    def steps_per_epoch(self) -> int:
        batches = math.ceil(len(self.sampler) / self.config.train.batch_size)
        limit = self.config.train.max_steps_per_epoch
        return min(batches, limit) if limit else batches

    @property
    def global_step(self) -> int:
        return self.start_epoch * self.steps_per_epoch

    def _save_run_config(self, explicit_overrides: dict[str, Any]) -> None:
        write_text(self.run_dir / "config.yaml", self.config.to_yaml())
        info = {
            "explicit_overrides": explicit_overrides,
            "world_size": self.dist.world_size,
            "git_revision": git_revision(),
            "command": sys.argv,
            "torch": torch.__version__,
            "precision": self.precision.summary(),
        }
        write_text(self.run_dir / "run_info.json", json.dumps(info, indent=2, default=str))

    def _resume(self, resume: str | Path) -> None:
        path = latest_checkpoint(resume)
        self.model.load_state_dict(load_model_weights(path), strict=True)
        state = load_training_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        else:  # written without loss scaling (e.g. bf16 on another GPU): the scaler starts afresh
            log.warning("%s was written without loss scaling; the float16 loss scale starts afresh", path)
        self.start_epoch = int(state["epoch"]) + 1
        best = self.run_dir / "checkpoints" / BEST_METRIC_FILE
        self.best_metric = json.loads(best.read_text())["value"] if best.is_file() else None
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:  # every rank keeps the streams of its own seed (set above) rather than sharing a saved one
            log.warning(
                "checkpoint was written by %d processes, resuming with %d: random streams restart per rank",
                len(rng),
                self.dist.world_size,
            )
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(loader_seed(self.config.train.seed, self.dist.rank, epoch))
        return DataLoader(
            self.train_set,
            batch_size=self.config.train.batch_size,
            sampler=self.sampler,
            collate_fn=collate_clips,
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=False,
        )

    def fit(self) -> dict[str, float]:
        """Train for the configured epochs; returns the last evaluation's metrics (may be empty)."""
        metrics: dict[str, float] = {}
        for epoch in range(self.start_epoch, self.config.train.epochs):
            result = self.train_one_epoch(epoch)
            self.scheduler.step()
            self._broadcast_buffers()
            checkpoint = self._save(epoch)
            evaluate_now = (epoch + 1) % self.config.train.eval_interval == 0 or epoch + 1 == self.config.train.epochs
            metrics, primary = self.evaluate(epoch) if evaluate_now else ({}, None)
            record = functools.partial(self._record_epoch, epoch, result, metrics, primary, checkpoint)
            on_main_process(record, f"recording epoch {epoch}")
        if self.writer is not None:
            self.writer.close()
        return metrics

    def _check_finite(
        self, reduced: dict[str, float], loss_dict: dict[str, torch.Tensor], epoch: int, step: int
    ) -> bool:
        """Whether every loss term is finite on every rank; names the bad terms otherwise.

        ``reduced`` holds the terms averaged over ranks (:func:`reduce_loss_dict`): a NaN or infinite
        term on any rank makes its mean non-finite on every rank, so the ranks agree without another
        collective and the check needs no device synchronisation of its own.
        """
        if all(math.isfinite(value) for value in reduced.values()):
            return True
        bad = [k for k, v in loss_dict.items() if not torch.isfinite(v).all()]
        message = f"non-finite loss at epoch {epoch} step {step}: {bad or 'on another rank'}"
        if self.config.train.nonfinite_loss == "stop":
            raise NonFiniteLossError(message + " (nonfinite_loss: stop; no weights were written for this step)")
        log.warning("%s; skipping the batch and the gradients accumulated since the last optimizer step", message)
        return False

    def train_one_epoch(self, epoch: int) -> EpochResult:
        self.ddp_model.train()
        config = self.config.train
        accumulate = config.grad_accum_steps
        sums: dict[str, float] = {}
        count, skipped = 0, 0
        bad_before = self._bad_sample_count()
        started = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(self._loader(epoch)):
            if step >= self.steps_per_epoch:
                break
            batch = batch.to(self.device, non_blocking=True)
            last_micro_step = (step + 1) % accumulate == 0 or step + 1 == self.steps_per_epoch
            sync = (
                contextlib.nullcontext() if last_micro_step or not self.dist.distributed else self.ddp_model.no_sync()
            )
            with sync:
                loss_dict, total = self._forward_loss(batch)
                reduced = reduce_loss_dict(loss_dict)  # the step's one copy to the host, before backward
                if not self._check_finite(reduced, loss_dict, epoch, step):
                    skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    bar.update(1)
                    continue
                self.scaler.scale(total / accumulate).backward()
            if last_micro_step:
                self._optimizer_step()
            reduced["loss"] = sum(reduced[k] * w for k, w in self.criterion.weight_dict.items() if k in reduced)
            for key, value in reduced.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{reduced['loss']:.3f}", lr=f"{lr:.2e}")
            bar.update(1)
            if self.writer is not None:
                global_step = epoch * self.steps_per_epoch + step
                for key, value in reduced.items():
                    self.writer.add_scalar(f"train/{key}", value, global_step)
                for index, group in enumerate(self.optimizer.param_groups):
                    self.writer.add_scalar(f"lr/{group.get('name', index)}", group["lr"], global_step)
        bar.close()
        averages = {k: v / max(count, 1) for k, v in sums.items()}
        bad_samples = sum(gather_objects(self._bad_sample_count() - bad_before))  # collective: all ranks
        return EpochResult(averages, skipped, bad_samples, time.perf_counter() - started)

    def _bad_sample_count(self) -> int:
        """Training samples this rank failed to load so far (counted by :class:`SkipBadSamples`, workers included)."""
        return self.train_set.num_skipped if isinstance(self.train_set, SkipBadSamples) else 0

    def _forward_loss(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        valid_indices, targets = batch.valid_frames()
        with self.precision.autocast():
            outputs = self.ddp_model(batch.frames, batch.pad_mask, batch.texts, batch.image_sizes, valid_indices)
        outputs = outputs_to_float(outputs)
        loss_dict = self.criterion(outputs, targets)
        return loss_dict, self.criterion.weighted_total(loss_dict)

    def _optimizer_step(self) -> None:
        if not self._gradients_checked:  # once: before the first update, on every rank
            unused = parameters_without_gradient(self.model)
            if unused:
                raise RuntimeError(
                    f"trainable parameters received no gradient: {unused}; freeze what this configuration does "
                    "not use (DDP cannot synchronise them)"
                )
            self._gradients_checked = True
        if self.config.train.clip_max_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _broadcast_buffers(self) -> None:
        """Give every rank rank 0's buffers before saving and evaluating.

        BatchNorm running statistics (SEP's ``bn_s_w``) are updated from each rank's own batch; DDP
        re-broadcasts them only at the start of the next forward, so after an epoch the ranks differ
        and would evaluate their shards with statistics the checkpoint (rank 0's) does not hold.
        """
        if self.dist.distributed:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def _save(self, epoch: int) -> CheckpointPaths:
        """Rank 0 writes the checkpoint (every rank's random state included); every rank gets its paths."""
        rng_per_rank = gather_to_main(rng_state())  # collective: every rank takes part

        def write() -> CheckpointPaths:
            state = {
                "epoch": epoch,
                "total_epochs": self.config.train.epochs,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_per_rank,
            }
            return save_checkpoint(self.run_dir / "checkpoints", epoch, self.model.state_dict(), state)

        return on_main_process(write, f"writing the checkpoint of epoch {epoch}")

    def evaluate(self, epoch: int) -> tuple[dict[str, float], str | None]:
        """Evaluate with the dataset's protocol; returns the metrics and the one that picks "best"."""
        out_dir = self.run_dir / "eval" / f"epoch_{epoch:04d}"
        return evaluate_model(self.model, self.config, out_dir, self.dist, self.precision)

    def _record_epoch(
        self,
        epoch: int,
        result: EpochResult,
        metrics: dict[str, float],
        primary: str | None,
        checkpoint: CheckpointPaths | None,
    ) -> None:
        if primary is not None and primary in metrics and checkpoint is not None:
            if self.best_metric is None or metrics[primary] > self.best_metric:
                self.best_metric = metrics[primary]
                checkpoints = self.run_dir / "checkpoints"
                record = {"metric": primary, "value": self.best_metric, "epoch": epoch}
                write_text(checkpoints / BEST_METRIC_FILE, json.dumps(record))
                write_text(checkpoints / "best", checkpoint.directory.name + "\n")
        record = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in result.losses.items()},
            "train_skipped_batches": result.skipped_batches,
            "train_bad_samples": result.bad_samples,
            "train_seconds": result.seconds,
            **{f"eval_{k}": v for k, v in metrics.items()},
        }
        with open(self.run_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"eval/{key}", value, epoch)
            self.writer.flush()
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})


def outputs_to_float(outputs):
    """Cast autocast outputs back to fp32 before the losses (a no-op in fp32)."""
    if outputs.pred_masks.dtype == torch.float32:
        return outputs
    return replace(
        outputs,
        pred_masks=outputs.pred_masks.float(),
        pred_cls=outputs.pred_cls.float(),
        pred_boxes=outputs.pred_boxes.float(),
        pred_logit=outputs.pred_logit.float(),
        text_sentence_feature=outputs.text_sentence_feature.float(),
        aux_outputs=[outputs_to_float(aux) for aux in outputs.aux_outputs],
    )
