"""Where a training step reads values back from the device: a table of host reads per source line.

One training step of the packaged config ``tiny`` on synthetic clips (forward, criterion with matching, the
logged and checked loss values, backward, optimizer step) runs under a torch function mode that
records every call that needs a tensor's values on the host (``item``, ``tolist``, ``bool``/``int``/
``float`` of a tensor, ``cpu``, ``numpy``, indexing with a boolean mask or a list), attributed to
the innermost line that made it. On the CPU every tensor is a host tensor, so the table also lists
reads that cost nothing on a GPU: AdamW's step counters (``torch/optim``) and the matches (criterion)
are CPU tensors there too. On CUDA the script also counts torch's own synchronisation warnings
(``torch.cuda.set_sync_debug_mode("warn")``), which catch blocking copies as well and are the
authoritative count.

Usage::

    python benchmarks/host_syncs.py [--device cpu|cuda] [--amp off|bf16|fp16]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.overrides import TorchFunctionMode

from wavecl.config import AMP_CHOICES, apply_overrides, load_config
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.device import resolve_device
from wavecl.distributed import DistInfo
from wavecl.training.trainer import Trainer

HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero"}


def caller() -> str:
    """``package/file:line  code`` of the innermost frame on the stack outside this script and torch's
    dispatch machinery (``torch/overrides.py``, ``torch/_tensor.py``)."""
    skipped = (__file__, "torch/overrides.py", "torch/_tensor.py", "torch/utils/_contextlib.py")
    frame = [f for f in traceback.extract_stack() if not f.filename.endswith(skipped)][-1]
    where = "/".join(Path(frame.filename).parts[-2:])
    return f"{where}:{frame.lineno}  {(frame.line or '').strip()[:60]}"


class HostReads(TorchFunctionMode):
    """Counts host reads by the line that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.counts[f"{name}: {caller()}"] += 1
        elif name == "__getitem__" and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, list) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool) for i in index):
                self.counts[f"mask/list index: {caller()}"] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="off", choices=AMP_CHOICES)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_ytvos(Path(folder) / "data", 2, num_frames=4, size=(64, 96), seed=0, split="train")
        values = {"data.root": str(Path(folder) / "data"), "train.output_dir": str(Path(folder) / "runs")}
        config = apply_overrides(load_config("tiny"), {**values, "train.amp": args.amp})
        trainer = Trainer(config, DistInfo(0, 1, 0, device))
        batch = next(iter(trainer._loader(0)))
        trainer.ddp_model.train()
        for _ in range(2):  # the first step warms up lazy initialisation; the second is counted
            reads = HostReads()
            with warnings.catch_warnings(record=True) as caught, reads:
                warnings.simplefilter("always")
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                trainer.train_step(batch, epoch=0, step=0, last_micro_step=True)
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
    console = Console()
    table = Table(title=f"host reads in one training step (tiny, {device}, amp {args.amp})")
    table.add_column("reads", justify="right")
    table.add_column("call: where")
    for where, count in reads.counts.most_common():
        table.add_row(str(count), where)
    console.print(table)
    console.print(f"total host reads: {sum(reads.counts.values())}")
    if device.type == "cuda":
        synchronising = [w for w in caught if "synchroniz" in str(w.message)]
        console.print(f"CUDA synchronising operations reported by torch: {len(synchronising)}")
        for warning in synchronising:
            console.print(f"  {Path(warning.filename).name}:{warning.lineno}: {warning.message}")


if __name__ == "__main__":
    main()
