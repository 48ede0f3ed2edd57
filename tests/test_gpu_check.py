"""``benchmarks/gpu_check.sh --dry-run``: the GPU machine's check, run on the CPU at the tiny size.

The fast test breaks every step (``PYTHON=false``) to show that each one still runs and the summary
lists them all; the slow test runs the real dry run and reads its summary, rows and probe.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from wavecl.amp import decide_precision

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PLAN_LINE = re.compile(r"^\s+(\d+)\. (.+?)\s+(\d+) s$")
SUMMARY_LINE = re.compile(r"^\s+(\d+)\s{2}(.+?)\s{2,}(pass|FAIL \([^)]*\))\s+(\d+)\s+(\d+)\s+(logs/\S+)$")


def run_check(arguments: list[str], extra_env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run the script; ``OUT`` is set only when ``extra_env`` names it."""
    env = {key: value for key, value in os.environ.items() if key != "OUT"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra_env})
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def plan_and_summary(stdout: str) -> tuple[list[tuple[str, int]], list[tuple[str, str, str]]]:
    """The plan's ``(step, estimate)`` lines and the summary's ``(step, result, log)`` lines."""
    plan_text = stdout.partition("estimated total")[0]
    summary = stdout.partition("gpu_check summary")[2]
    plan = [(m[2], int(m[3])) for line in plan_text.splitlines() if (m := PLAN_LINE.match(line))]
    rows = [(m[2].strip(), m[3], m[6]) for line in summary.splitlines() if (m := SUMMARY_LINE.match(line))]
    return plan, rows


def test_every_step_runs_after_failures_and_the_summary_lists_them(tmp_path):
    out = tmp_path / "from_env"
    result = run_check(["--dry-run"], {"PYTHON": "false", "OUT": str(out)}, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    plan, summary = plan_and_summary(result.stdout)
    assert len(plan) >= 14 and result.stdout.index("estimated total") < result.stdout.index("\n 1. environment")
    assert [name for name, _, _ in summary] == [name for name, _ in plan]
    assert {outcome for _, outcome, _ in summary} == {"FAIL (exit 1)"}
    assert f"0 of {len(plan)} steps passed" in result.stdout
    summary_file = (out / "summary.txt").read_text().strip()
    assert summary_file.startswith("gpu_check summary") and summary_file in result.stdout
    for _, _, log in summary:
        assert (out / log).read_text().startswith("$ false ")
    asking = [
        log
        for name, _, log in summary
        if name.startswith(("row:", "wavecl train", "wavecl evaluate", "wavecl predict"))
    ]
    assert len(asking) >= 10 and all(" --amp " in (out / log).read_text() for log in asking)


def test_a_spent_budget_still_ends_with_the_summary(tmp_path):
    result = run_check(["--dry-run", "--out", str(tmp_path), "--budget", "1"], {"PYTHON": "sleep"}, timeout=120)
    plan, summary = plan_and_summary(result.stdout)
    assert result.returncode == 1 and len(summary) == len(plan) >= 14
    assert {outcome for _, outcome, _ in summary} == {"FAIL (budget spent)"}


@pytest.mark.slow  # 16 fresh Python processes (each imports torch and transformers): about 3 minutes on 2 cores
def test_dry_run_passes_every_step_and_writes_rows_and_probe(tmp_path):
    out = tmp_path / "check"
    result = run_check(["--dry-run", "--out", str(out)], {}, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    plan, summary = plan_and_summary(result.stdout)
    assert [name for name, _, _ in summary] == [name for name, _ in plan]
    assert {outcome for _, outcome, _ in summary} == {"pass"}
    rows = {row["name"]: row for row in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}
    assert set(rows) == {"train-bf16", "train-fp16", "train-text", "evaluate", "predict", "ddp"}
    cpu = torch.device("cpu")
    for name, row in rows.items():  # --amp asked fp16 of train-fp16, bf16 of the others: the CPU's rule decides
        asked = decide_precision("fp16" if name == "train-fp16" else "bf16", cpu)
        assert row["precision"] == ("float32" if asked.autocast_dtype is None else asked.effective), row
        assert row["size"] == "tiny" and row["seconds"] > 0, row
        assert row["peak_bytes"] > 0 and row["clips"] > 0
    assert "gloo, CPU; 2 ranks agree" in rows["ddp"]["note"]
    probe = json.loads((out / "probe.json").read_text())
    assert len(probe["graphs_per_clip"]) == 2 and probe["graphs_per_clip"][0] >= 1
    assert probe["recompiles"] == probe["graphs_per_clip"][1]
    table = (out / "table.txt").read_text()
    assert all(name in table for name in rows) and "compile probe" in table and table in result.stdout
    assert json.loads((out / "env.json").read_text())["gpus"] == []
    assert sorted((out / "cli_predict" / "masks").iterdir())  # the CLI predicted the frame folder
