"""The training loop: one process or many under ``torchrun`` (docs/training.md#the-training-loop).

:class:`Trainer` builds the model, optimizer and data, and steps; what the run keeps (config, history,
``log.jsonl``, TensorBoard, ``best``) is written by its :class:`~wavecl.training.recorder.RunRecorder`, and
a resume is restored by :func:`~wavecl.training.restore.restore`.

Epochs and steps are numbered from 0 everywhere: the progress bar (``epoch 3 [0-39]``), ``log.jsonl``,
the log lines, the checkpoint and evaluation folders (``epoch_0003``) and the resume messages.

Only rank 0 writes files. Checkpoints are written before evaluation, so a crash while evaluating
loses nothing: a resume first completes the evaluation and ``log.jsonl`` line of that epoch. ``resume``
continues exactly where the last checkpoint stopped, mid-epoch included; a run stopped before its first
checkpoint starts again from the beginning in its own directory. Whatever stops :meth:`Trainer.fit` (an
error, Ctrl-C, SIGTERM turned into an exception by the command line, a full disk, a non-finite loss
under ``nonfinite_loss: stop``) leaves a resumable run, and one warning line says how to continue it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from wavecl.amp import decide_precision
from wavecl.checkpoint import CheckpointPaths, checkpoint_folder_name, rng_state, save_checkpoint
from wavecl.config import Config, load_config
from wavecl.data.collate import collate_clips
from wavecl.data.datasets import build_dataset, check_dataset
from wavecl.data.robust import SkipBadSamples
from wavecl.data.types import Batch
from wavecl.distributed import (
    DistInfo,
    gather_objects,
    gather_to_main,
    on_main_process,
    reduce_loss_dict,
)
from wavecl.evaluation.protocols import evaluate_model
from wavecl.model.compile import compile_model
from wavecl.model.wavecl import build_model
from wavecl.model.weights import load_weights
from wavecl.progress import progress_bar
from wavecl.run_directory import RunDirectory, RunDirectoryError
from wavecl.training.criterion import SetCriterion
from wavecl.training.matcher import HungarianMatcher, NonFiniteCostError
from wavecl.training.optim import build_optimizer, build_scheduler
from wavecl.training.recorder import EpochResult, RunRecorder, run_info
from wavecl.training.restore import UnfinishedEpoch, restore
from wavecl.training.resumable import EpochOrder, SeededSamples
from wavecl.training.run_rules import (
    check_location_unchanged,
    config_differences,
    remove_empty_folders,
    resume_checkpoint,
    run_directory_holding,
)
from wavecl.training.seeding import rank_seed, seed_process

log = logging.getLogger("wavecl.train")

# Finetuning (``--pretrained``) starts from a checkpoint with these heads re-initialised:
# the class heads of a pretraining run predict other classes. Every other weight must be in the file.
FINETUNE_REINITIALISED = ("class_embed.",)


class NonFiniteLossError(FloatingPointError):
    """A model output, matching cost or loss term became NaN or infinite and the run is configured to stop."""


def parameters_without_gradient(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that the last backward pass gave no gradient.

    Under DDP (built with ``find_unused_parameters=False``) every trainable parameter must receive a
    gradient at every step; a parameter the configuration never uses must be frozen instead.
    """
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad and parameter.grad is None]


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
        giou_form=loss.giou_form,
    )
    return SetCriterion(
        matcher,
        config.model.num_classes,
        loss,
        num_aux_layers=config.model.dec_layers - 1,
    )


class Trainer:
    """Trains WaveCL as configured, on this process's device, as one rank of ``dist``.

    Args:
        config: the resolved configuration. For a resume, the run's own ``config.yaml`` with any
            explicit changes (:func:`wavecl.training.run_rules.resume_config`); the changes are applied
            (learning rates and milestones to the loaded optimizer and scheduler) and recorded.
        dist: this process's place in the job (:func:`wavecl.distributed.init_distributed`).
        explicit_overrides: the configuration fields given on the command line (saved in the run).
        resume: a run directory, checkpoint folder or pointer of the run to continue, or None. The run
            continues in its own directory, whatever ``config.run_directory()`` says; a run directory
            stopped before its first checkpoint starts again from the beginning there.

    Raises:
        RunDirectoryError: another process trains in the run directory; a new run's directory already
            holds a run; a resume names another run directory or changes what a mid-epoch resume cannot.
        ValueError: ``train.checkpoint_every_steps`` or ``train.keep_checkpoints`` is invalid.
        DatasetCheckError: the dataset's check (:func:`~wavecl.data.datasets.check_dataset`, run
            before the model is built) found problems; they are listed with their files, videos and keys.
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
        _check_checkpoint_fields(config)
        # the checkpoint a resume continues from; None for a new run and for a run stopped before its first one
        self.resume_from = None if resume is None else resume_checkpoint(resume)
        self.run_dir = config.run_directory() if resume is None else run_directory_holding(resume, self.resume_from)
        self.run = RunDirectory(self.run_dir)
        self.changes: dict[str, tuple[Any, Any]] = {}
        if resume is not None:
            run_config = load_config(self.run.config)
            check_location_unchanged(run_config, config, self.run_dir)
            self.changes = config_differences(run_config, config)
            if "train.pretrained_weights" in self.changes:
                raise RunDirectoryError(
                    "train.pretrained_weights (--pretrained) sets the weights a new run starts from; a resume "
                    f"continues {self.run_dir} from its own checkpoint: leave it out, or start a new run"
                )
        self.recorder = RunRecorder(self.run, dist, fresh=resume is None)
        try:
            self._build(explicit_overrides or {}, resume is not None)
        except BaseException:
            self.close()
            if resume is None and dist.is_main:
                remove_empty_folders(self.run_dir, up_to=Path(config.train.output_dir))
            raise

    def _build(self, explicit_overrides: dict[str, Any], resume: bool) -> None:
        config, dist, train_cfg = self.config, self.dist, self.config.train
        # seconds, so a broken dataset stops the run before the model is built; rank 0 reads the files for all
        on_main_process(lambda: check_dataset(config.data), "checking the dataset")
        seed_process(train_cfg.seed)  # identical initial weights and sample list on every rank
        model = build_model(config.model).to(self.device)
        self.model = model
        # Parameters that never change in this run: written once per run, not in every checkpoint.
        self.frozen_names = [n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad]
        if train_cfg.pretrained_weights and self.resume_from is None:
            report = load_weights(model, train_cfg.pretrained_weights, skip=FINETUNE_REINITIALISED)
            log.info(
                "finetuning from %s: %d tensors loaded, %d re-initialised (%s)",
                train_cfg.pretrained_weights,
                len(report.loaded),
                len(report.skipped),
                ", ".join(FINETUNE_REINITIALISED),
            )
        if train_cfg.compile:
            compile_model(model)
        self.ddp_model: nn.Module = (
            DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if dist.distributed
            else model
        )
        self.criterion = build_criterion(config)
        self.optimizer = build_optimizer(
            model, train_cfg.lr, train_cfg.lr_backbone, train_cfg.text_encoder_lr, train_cfg.weight_decay
        )
        self.scheduler: torch.optim.lr_scheduler.LRScheduler = build_scheduler(
            self.optimizer, train_cfg.lr_drop, train_cfg.lr_gamma
        )
        self._gradients_checked = False
        self.precision = decide_precision(train_cfg.amp, self.device)
        log.info(self.precision.describe())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaler)

        self.train_set: Dataset = build_dataset(config.data, "train")
        self.sampler: DistributedSampler = DistributedSampler(
            self.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=train_cfg.seed
        )
        seed_process(rank_seed(train_cfg.seed, dist.rank))  # from here on, every rank draws its own numbers
        self.start_epoch = 0
        self.start_step = 0  # steps of start_epoch already trained (a mid-epoch resume)
        self.global_step = 0  # steps the run has trained, whatever the steps per epoch were then
        self.resumed_totals: EpochResult | None = None
        self.unfinished_epoch: UnfinishedEpoch | None = None
        if self.resume_from is not None:
            self._resume(self.resume_from)
        elif resume:
            log.warning("%s stopped before its first checkpoint: starting it again from the beginning", self.run_dir)
        resumed = None
        if resume:
            resumed = {
                "checkpoint": None if self.resume_from is None else str(self.resume_from),
                "continues_at": {"epoch": self.start_epoch, "step": self.start_step},
                "changed": {key: [old, new] for key, (old, new) in self.changes.items()},
            }
        info = run_info(explicit_overrides, dist, self.precision.summary())
        self.recorder.open(self.config, info, resumed, self.global_step)

    def close(self) -> None:
        """Close TensorBoard and release the run directory (called by :meth:`fit`; idempotent)."""
        self.recorder.close()

    @property
    def steps_per_epoch(self) -> int:
        batches = math.ceil(len(self.sampler) / self.config.train.batch_size)
        limit = self.config.train.max_steps_per_epoch
        return min(batches, limit) if limit else batches

    def _resume(self, path: Path) -> None:
        """Load the weights of checkpoint ``path``, then its training state (:func:`~wavecl.training.restore.restore`)
        and the best metric so far."""
        load_weights(self.model, path)
        restored = restore(
            path, self.config, self.changes, self.optimizer, self.scheduler, self.scaler, self.run, self.dist
        )
        self.scheduler = restored.scheduler
        self.start_epoch, self.start_step, self.global_step = restored.epoch, restored.step, restored.global_step
        self.resumed_totals, self.unfinished_epoch = restored.totals, restored.unfinished
        self.recorder.read_best()
        log.info(
            "resumed from %s: continuing with epoch %d, step %d (numbered from 0)",
            path,
            self.start_epoch,
            self.start_step,
        )

    def _loader(self, epoch: int, start_step: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.train.seed * 1000 + epoch)
        return DataLoader(
            SeededSamples(self.train_set, self.config.train.seed, epoch),
            batch_size=self.config.train.batch_size,
            sampler=EpochOrder(self.sampler, epoch, start_step * self.config.train.batch_size),
            collate_fn=collate_clips,
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=False,
        )

    def _evaluation_due(self, epoch: int) -> bool:
        return (epoch + 1) % self.config.train.eval_interval == 0 or epoch + 1 == self.config.train.epochs

    def fit(self) -> dict[str, float]:
        """Train for the configured epochs; returns the last evaluation's metrics (may be empty).

        A resumed epoch whose evaluation or ``log.jsonl`` line is missing (the run stopped after its
        checkpoint) is completed first. The run directory is released at the end, also on error.
        """
        metrics: dict[str, float] = {}
        try:
            if self.unfinished_epoch is not None:
                unfinished = self.unfinished_epoch
                log.warning("completing epoch %d, whose evaluation or log.jsonl line is missing", unfinished.epoch)
                metrics = self._finish_epoch(unfinished.epoch, unfinished.totals, unfinished.checkpoint)
                self.unfinished_epoch = None
            for epoch in range(self.start_epoch, self.config.train.epochs):
                result = self.train_one_epoch(epoch)
                self.scheduler.step()
                self._broadcast_buffers()
                metrics = self._finish_epoch(epoch, result, self._save(epoch, result))
        except BaseException:
            if self.dist.is_main:
                log.warning(self.recorder.how_to_continue())
            raise
        finally:
            self.close()
        return metrics

    def _finish_epoch(self, epoch: int, result: EpochResult, checkpoint: CheckpointPaths) -> dict[str, float]:
        """Evaluate (when due) and record the epoch (:meth:`RunRecorder.record_epoch`)."""
        metrics, primary = self.evaluate(epoch) if self._evaluation_due(epoch) else ({}, None)
        self.recorder.record_epoch(epoch, result, metrics, primary, checkpoint, self.config.train.keep_checkpoints)
        return metrics

    def _check_finite(self, names: list[str], flags: torch.Tensor, epoch: int, step: int) -> bool:
        """Whether nothing went non-finite on any rank (a collective and one read from the device);
        applies ``train.nonfinite_loss`` otherwise.

        Args:
            names, flags: this rank's model outputs, loss terms or matching costs and whether each holds
                NaN or inf (:meth:`_forward_loss`).

        Raises:
            NonFiniteLossError: under ``stop``, naming the non-finite ones.
        """
        flag = flags.any().float()
        if self.dist.distributed:
            torch.distributed.all_reduce(flag)
        if flag.item() == 0:
            return True
        bad = [name for name, nonfinite in zip(names, flags.tolist()) if nonfinite]
        message = f"non-finite values at epoch {epoch} step {step}: {bad or 'on another rank'}"
        if self.config.train.nonfinite_loss == "stop":
            raise NonFiniteLossError(
                f"{message} (train.nonfinite_loss: stop; no weights were written for this step). A resume repeats "
                "the step unless something changes, e.g. a lower --lr, or --set train.nonfinite_loss=skip"
            )
        log.warning("%s; skipping the batch and the gradients accumulated since the last optimizer step", message)
        return False

    def train_step(self, batch: Batch, epoch: int, step: int, last_micro_step: bool) -> dict[str, float] | None:
        """Train on one batch: forward, losses, backward and, after the last micro-step of an accumulation
        window, the optimizer step (DDP synchronises gradients only then).

        Args:
            batch: the loader's batch (on the host; copied to the device without blocking when pinned).
            epoch, step: where it is, for messages.
            last_micro_step: whether the optimizer steps after this batch.

        Returns:
            Every loss term and the weighted ``loss``, averaged over ranks, as host floats; ``None`` when a
            non-finite value skipped the batch (``train.nonfinite_loss: skip``; accumulated gradients are
            dropped too).

        Raises:
            NonFiniteLossError: a non-finite value under ``train.nonfinite_loss: stop``.
        """
        batch = batch.to(self.device, non_blocking=True)
        distributed_sync = last_micro_step or not self.dist.distributed
        # Without sync the run is distributed, so ddp_model is the DistributedDataParallel wrapper.
        no_sync = (
            contextlib.nullcontext() if distributed_sync else cast(DistributedDataParallel, self.ddp_model).no_sync()
        )
        with no_sync:
            loss_dict, total, names, flags = self._forward_loss(batch)
            if not self._check_finite(names, flags, epoch, step):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.scaler.scale(total / self.config.train.grad_accum_steps).backward()
        if last_micro_step:
            self._optimizer_step()
        reduced = reduce_loss_dict(loss_dict)  # one collective and one copy to the host for all terms
        reduced["loss"] = sum(reduced[k] * w for k, w in self.criterion.weight_dict.items() if k in reduced)
        return reduced

    def train_one_epoch(self, epoch: int) -> EpochResult:
        """Train epoch ``epoch`` (from step ``start_step`` when it is the resumed one); returns its totals."""
        self.ddp_model.train()
        config = self.config.train
        accumulate = config.grad_accum_steps
        first_step, resumed = (self.start_step, self.resumed_totals) if epoch == self.start_epoch else (0, None)
        totals = resumed or EpochResult({}, 0, 0, 0, 0.0)
        sums, count, skipped = dict(totals.sums), totals.count, totals.skipped_batches
        bad_before = self._bad_sample_count()
        started = time.perf_counter()
        bar = progress_bar(
            total=self.steps_per_epoch,
            initial=first_step,
            desc=f"epoch {epoch} [0-{config.epochs - 1}]",
            disable=not self.dist.is_main,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(self._loader(epoch, first_step), start=first_step):
            if step >= self.steps_per_epoch:
                break
            tensorboard_step = self.global_step
            self.global_step += 1
            last_micro_step = (step + 1) % accumulate == 0 or step + 1 == self.steps_per_epoch
            reduced = self.train_step(batch, epoch, step, last_micro_step)
            if reduced is None:
                skipped += 1
                bar.update(1)
                continue
            for key, value in reduced.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{reduced['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            self.recorder.record_step(tensorboard_step, reduced, self.optimizer)
            every = config.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < self.steps_per_epoch:
                bad = sum(gather_objects(self._bad_sample_count() - bad_before))  # collective: all ranks
                so_far = EpochResult(
                    sums, count, skipped, totals.bad_samples + bad, totals.seconds + time.perf_counter() - started
                )
                self._save(epoch, so_far, step=step)
                self.recorder.prune(config.keep_checkpoints)
        bar.close()
        bad_samples = totals.bad_samples + sum(gather_objects(self._bad_sample_count() - bad_before))  # collective
        return EpochResult(sums, count, skipped, bad_samples, totals.seconds + time.perf_counter() - started)

    def _bad_sample_count(self) -> int:
        """Training samples this rank failed to load so far (counted by :class:`SkipBadSamples`, workers included)."""
        return self.train_set.num_skipped if isinstance(self.train_set, SkipBadSamples) else 0

    def _forward_loss(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str], torch.Tensor]:
        """Forward pass and losses of one batch.

        Returns:
            The unweighted loss terms, their weighted total, and what may hold NaN or inf: names and a
            bool tensor on the device, True where that one does (read by :meth:`_check_finite`). The names
            are the model outputs (``pred_boxes``, ``aux_outputs[0].pred_masks``) and loss terms, or, when
            a matching cost is non-finite (``cost_giou_0``; the losses are then not computed and the first
            two are empty), the outputs and those costs.
        """
        valid_indices, targets = batch.valid_frames()
        with self.precision.autocast():
            outputs = self.ddp_model(batch.frames, batch.pad_mask, batch.texts, batch.image_sizes, valid_indices)
        outputs = outputs_to_float(outputs)
        names, flags = outputs.nonfinite_flags()
        try:
            loss_dict = self.criterion(outputs, targets)
        except NonFiniteCostError as error:
            costs = torch.ones(len(error.terms), dtype=torch.bool, device=flags.device)
            return {}, torch.zeros((), device=self.device), names + error.terms, torch.cat([flags, costs])
        losses = torch.stack([~torch.isfinite(value).all() for value in loss_dict.values()])
        return loss_dict, self.criterion.weighted_total(loss_dict), names + list(loss_dict), torch.cat([flags, losses])

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

    def _save(self, epoch: int, totals: EpochResult, step: int | None = None) -> CheckpointPaths:
        """Checkpoint the end of ``epoch``, or the point after its 0-based ``step``; collective: rank 0
        writes (every rank's random state included), every rank gets the paths."""
        rng_per_rank = gather_to_main(rng_state())  # collective: every rank takes part

        def write() -> CheckpointPaths:
            state = {
                "epoch": epoch,
                "step": step,
                "total_epochs": self.config.train.epochs,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_per_rank,
                "epoch_totals": totals.as_state(),
                "global_step": self.global_step,
            }
            return save_checkpoint(
                self.run.checkpoints, epoch, self.model.state_dict(), state, step=step, frozen=self.frozen_names
            )

        return on_main_process(write, f"writing the checkpoint of epoch {epoch}")

    def evaluate(self, epoch: int) -> tuple[dict[str, float], str | None]:
        """Evaluate with the dataset's protocol; returns the metrics and the one that picks "best"."""
        out_dir = self.run.evaluation(checkpoint_folder_name(epoch))
        record = {"dataset": self.config.data.dataset_name, "epoch": epoch}
        return evaluate_model(self.model, self.config, out_dir, self.dist, self.precision, record)


def outputs_to_float(outputs):
    """Cast autocast outputs back to fp32 before the losses (a no-op in fp32)."""
    if outputs.pred_masks.dtype == torch.float32:
        return outputs
    return replace(
        outputs,
        pred_masks=outputs.pred_masks.float(),
        pred_cls=outputs.pred_cls.float(),
        pred_boxes=outputs.pred_boxes.float(),
        video_queries=outputs.video_queries.float(),
        text_sentence_feature=outputs.text_sentence_feature.float(),
        aux_outputs=[outputs_to_float(aux) for aux in outputs.aux_outputs],
    )


def _check_checkpoint_fields(config: Config) -> None:
    """Refuse checkpoint settings that cannot work, naming the field."""
    train = config.train
    every, keep = train.checkpoint_every_steps, train.keep_checkpoints
    if every is not None and (every < 1 or every % train.grad_accum_steps):
        raise ValueError(
            f"train.checkpoint_every_steps must be a positive multiple of train.grad_accum_steps "
            f"({train.grad_accum_steps}), so that a checkpoint falls on an optimizer step; got {every}"
        )
    if keep is not None and keep < 1:
        raise ValueError(f"train.keep_checkpoints must be at least 1 (or null to keep all), got {keep}")
