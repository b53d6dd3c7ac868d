"""Real multi-process training: ``torchrun --standalone --nproc-per-node 2 -m aggan_cli train`` with gloo
on the CPU. Every rank ends with the same weights (generators and discriminators), rank 0 alone
writes the one run folder, ``--resume`` continues under DDP, and a rank that fails stops the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from aggan_cli.dist import state_digest

from images import write_rgb

TINY = ["--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--workers", "0", "--quiet", "--device", "cpu",
        "--log-every", "2", "--save-every", "2", "--sample-every", "100"]


def torchrun(cwd: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AGGAN_DEBUG_DIGEST": "1"}
    env.pop("AGGAN_DEVICE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "aggan_cli", "train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def make_domains(root: Path) -> tuple[Path, Path]:
    a, b = root / "neutral", root / "smile"
    for i in range(5):
        write_rgb(a / f"a{i}.png", (40, 36), seed=i)
        write_rgb(b / f"b{i}.jpg", (36, 44), seed=10 + i)
    return a, b


def digests(run: Path) -> list[dict]:
    return [json.loads((run / f"digest-rank{r}.json").read_text()) for r in (0, 1)]


def assert_replicas_equal(run: Path, step: int) -> None:
    rank0, rank1 = digests(run)
    assert rank0["step"] == rank1["step"] == step
    assert rank0["generators"] == rank1["generators"]
    assert rank0["discriminators"] == rank1["discriminators"]
    # and what rank 0 saved is what every rank holds
    assert state_digest(load_file(run / "model.safetensors")) == rank0["generators"]


@pytest.mark.slow
def test_two_processes_train_identical_replicas_into_one_run_folder_and_resume(tmp_path):
    a, b = make_domains(tmp_path)
    first = torchrun(tmp_path, str(a), str(b), "--steps", "4", "--batch-size", "1", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = tmp_path / "runs"
    assert [p.name for p in runs.iterdir()] == ["smile"]  # one run folder, named after DOMAIN_B
    run = runs / "smile"
    assert first.stdout.strip().splitlines() == [str(Path("runs") / "smile")]  # only rank 0 prints its result
    assert first.stderr.count("aggan train") == 1  # and only rank 0 talks
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 4
    assert_replicas_equal(run, 4)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # rank 0 alone wrote the metrics

    second = torchrun(tmp_path, "--name", "smile", "--resume", "--steps", "6", "--quiet", "--device", "cpu")
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["step"] == 6
    assert_replicas_equal(run, 6)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


@pytest.mark.slow
def test_a_failing_rank_stops_the_whole_job_with_its_message(tmp_path):
    """Rank 0 cannot create the run folder (a file is in the way) while rank 1 is ready to train: the
    job ends (torchrun stops the other rank), non-zero, with rank 0's one-line reason."""
    a, b = make_domains(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "smile").write_text("not a folder")
    result = torchrun(tmp_path, str(a), str(b), "--steps", "4", *TINY)
    assert result.returncode != 0
    assert result.stderr.count("cannot create the run folder") == 1
    assert "[rank1]: Traceback" not in result.stderr
