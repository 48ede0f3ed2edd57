"""Where a training step's (or, with ``--eval``, an eval forward's) CPU time goes: ``torch.profiler``, one thread.

The side-by-side timing workload (the shared refbench's wavecl timer): a configuration's network with a randomly
initialised ``roberta-base`` text encoder and no backbone checkpoint, in train mode, on random frames;
the loss is the mean of every decoder layer's mask logits (``--eval``: eval mode, no-grad forward only).
One untimed step comes first. Prints the step's wall time and the operators with the most self CPU time,
each with the input shapes that cost most (to find which module calls them).

Usage::

    python benchmarks/profile_train_step.py [--config a2d_sentences] [--size 1 4 192 320] [--rows 25]
        [--eval] [--bf16]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from dataclasses import replace

import torch

from wavecl.config import load_config
from wavecl.model.wavecl import WaveCL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="a2d_sentences", help="packaged recipe name or YAML file")
    parser.add_argument("--size", type=int, nargs=4, default=[1, 4, 192, 320], metavar=("B", "T", "H", "W"))
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    parser.add_argument("--eval", action="store_true", help="profile an eval forward (no grad) instead")
    parser.add_argument("--bf16", action="store_true", help="run the forward under CPU bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(args.config).model
    model = WaveCL(replace(config, text_encoder="random:roberta-base", backbone_pretrained_path=None)).train(
        not args.eval
    )
    B, T, H, W = args.size
    inputs = {
        "frames": torch.randn(T, B, 3, H, W),
        "pad_mask": torch.zeros(T, B, H, W, dtype=torch.bool),
        "texts": ["the man in a red shirt riding a horse"] * B,
        "image_sizes": torch.tensor([[H, W]] * B),
    }

    def step() -> None:
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16),
            torch.no_grad() if args.eval else nullcontext(),
        ):
            output = model(**inputs)
        if args.eval:
            return
        loss = output.pred_masks.mean() + sum(aux.pred_masks.mean() for aux in output.aux_outputs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
    by_shape: dict[str, tuple[float, str]] = {}
    for event in profile.key_averages(group_by_input_shape=True):
        total = event.self_cpu_time_total / 1e6
        if total > by_shape.get(event.key, (0.0, ""))[0]:
            by_shape[event.key] = (total, f"{event.count} x {event.input_shapes}")
    events = sorted(profile.key_averages(), key=lambda event: -event.self_cpu_time_total)[: args.rows]
    work = ("eval forward" if args.eval else "train step") + (" bf16" if args.bf16 else "")
    print(f"{args.config} B={B} T={T} {H}x{W}, {work} {seconds:.2f} s (profiled), one thread")
    print(f"| {'operator':<36} | self s | calls | costliest input shapes (self s, calls x shapes) |")
    print(f"|{'-' * 38}|--------|-------|{'-' * 50}|")
    for event in events:
        total, shapes = by_shape[event.key]
        self_seconds = event.self_cpu_time_total / 1e6
        print(f"| {event.key:<36} | {self_seconds:6.2f} | {event.count:5d} | {total:.2f}: {shapes} |")


if __name__ == "__main__":
    main()
