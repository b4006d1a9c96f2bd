"""Progress lines of long jobs, and what every rule's script runs with: its threads, the OpenMP wait
policy and the CPU code paths (``m4i.CPU_PINS``)."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import torch

import m4i
from m4i import workflow
from m4i.models import train as train_mod
from m4i.models.features import extract_features
from m4i.models.train import train_captioner
from m4i.progress import Progress
from m4i.text import build_vocab
from test_models import SMALL_SPEC, _dataset, _lstm_arch

torch.set_num_threads(1)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_line_counts_elapsed_and_eta():
    clock = Clock()
    p = Progress("train m", 4, clock=clock)
    clock.t = 10.0
    assert p.line(1, loss=1.23456) == "train m: epoch 1/4 (25%) loss=1.235 elapsed 10.0s ETA 30.0s"
    clock.t = 40.0
    assert p.line(4) == "train m: epoch 4/4 (100%) elapsed 40.0s"  # no ETA once done


def test_resumed_progress_estimates_from_this_runs_pace_only():
    clock = Clock()
    p = Progress("train m", 10, start=6, clock=clock)
    clock.t = 5.0
    assert p.line(7).endswith("elapsed 5.0s ETA 15.0s")  # 1 epoch in 5 s, 3 left


def test_throttled_chunks_still_log_the_last_one(caplog):
    clock = Clock()
    p = Progress("features", 5, unit="chunk", min_interval_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="m4i.progress"):
        for i in range(1, 6):
            clock.t = i
            p.update(i)
    assert [r.getMessage().split(" elapsed")[0] for r in caplog.records] == [
        "features: chunk 1/5 (20%)", "features: chunk 5/5 (100%)"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    df = _dataset(root)
    vocab = build_vocab([c for caps in df["captions"] for c in caps], 1)
    return root, df, vocab, extract_features(df, root, SMALL_SPEC, seed=0)


def test_training_log_has_one_line_per_epoch_and_says_it_resumed(data, tmp_path, monkeypatch, capfd):
    root, df, vocab, feats = data
    log_file = tmp_path / "logs" / "train.log"
    workflow._setup_logging([str(log_file)])  # what every rule's script does: its log file + stderr
    try:
        def stop(epoch):
            if epoch == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(train_mod, "_after_epoch", stop)
        with pytest.raises(KeyboardInterrupt):
            train_captioner(_lstm_arch(epochs=4), df, root, feats, vocab, 0, tmp_path / "m.pt",
                            tmp_path / "m.resume.pt", name="shapes-lstm-target-s0")
        monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
        train_captioner(_lstm_arch(epochs=4), df, root, feats, vocab, 0, tmp_path / "m.pt", tmp_path / "m.resume.pt",
                        name="shapes-lstm-target-s0")
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    lines = log_file.read_text().splitlines()
    epochs = [ln.split("train shapes-lstm-target-s0: ", 1)[1] for ln in lines if ": epoch " in ln]
    assert [e.split(" (")[0] for e in epochs] == ["epoch 1/4", "epoch 2/4", "epoch 3/4", "epoch 4/4"]
    assert all("loss=" in e and "elapsed" in e for e in epochs)
    assert all("ETA" in e for e in epochs[:-1])
    resumed = [ln for ln in lines if "resumed" in ln]
    assert len(resumed) == 1 and "resumed from epoch 2" in resumed[0] and "m.resume.pt" in resumed[0]
    assert "epoch 3/4" in capfd.readouterr().err  # stderr too: what snakemake's output shows


def test_rule_threads_are_torchs_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # restored afterwards
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        workflow.configure_threads(3)  # torch already imported: set directly
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    # torch imported only after the rule's set-up (jobs that need it late) gets the same count,
    # and the set-up itself does not import torch (most jobs never need it)
    # (1 thread: torch caps an environment count at the machine's cores; its default is all cores)
    code = ("import sys; from m4i import workflow; workflow.configure_threads(1); print('torch' in sys.modules); "
            "import torch; print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "1"]


def test_openmp_threads_sleep_when_idle():
    # m4i sets the OpenMP wait policy before torch loads (importing any m4i module imports m4i
    # first); a user's own setting wins.
    code = "import m4i.io, os, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_interop_threads() > 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert out.stdout.split()[0] == "PASSIVE"
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert mine.stdout.split()[0] == "ACTIVE"


# The rules whose jobs run long on the default study (seconds to minutes), by log folder: each of
# their jobs must show a person watching that it is alive, in its log (and so on stderr).
LONG_JOB_LOGS = ("backbones", "features", "models", "mfe", "captions", "signals/metrics", "signals/mfe",
                 "signals/loglik", "attacks")
PROGRESS_LINE = re.compile(r": \w+ \d+/\d+ \(\d+%\)( \S+)* elapsed \d+\.\ds")


def test_every_long_job_of_the_study_logs_progress(study):
    logs = study / "logs"
    silent = []
    for folder in LONG_JOB_LOGS:
        files = sorted((logs / folder).rglob("*.log"))
        assert files, f"no logs under {folder}: the test study no longer runs that rule?"
        silent += [str(f.relative_to(logs)) for f in files if not PROGRESS_LINE.search(f.read_text())]
    assert silent == []


# --- CPU code paths (m4i.CPU_PINS) -------------------------------------------------------------
_HAS_AVX2 = m4i.CPU_PINS_APPLY
_NO_PINS = {k: v for k, v in os.environ.items() if k not in m4i.CPU_PINS}
# A captioner-like training step in torch alone (no m4i import: nothing pinned unless the
# environment says so): LSTM (oneDNN), linear layers (MKL), Adam (vectorised kernels), plus a
# numpy product (OpenBLAS); prints a hash of the bits.
_STEP = """
import hashlib, numpy as np, torch
torch.set_num_threads(1); torch.manual_seed(0)
lstm, out = torch.nn.LSTM(32, 64, batch_first=True), torch.nn.Linear(64, 50)
opt = torch.optim.Adam([*lstm.parameters(), *out.parameters()], lr=0.01)
for _ in range(3):
    x, y = torch.randn(8, 12, 32), torch.randint(0, 50, (8 * 12,))
    opt.zero_grad(); torch.nn.functional.cross_entropy(out(lstm(x)[0]).reshape(-1, 50), y).backward(); opt.step()
a = np.random.default_rng(0).standard_normal((200, 200))
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in lstm.parameters()))
print(h.hexdigest(), hashlib.sha256((a @ a).tobytes()).hexdigest(), torch.backends.cpu.get_cpu_capability())
"""


def _run(code, env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.split()


@pytest.mark.skipif(not _HAS_AVX2, reason="the pins apply to x86-64 CPUs with AVX2 and FMA")
def test_importing_m4i_pins_the_cpu_code_paths_and_a_users_choice_wins():
    code = ("import os, m4i, torch; "
            "print(*[os.environ.get(k) for k in m4i.CPU_PINS], torch.backends.cpu.get_cpu_capability())")
    assert _run(code, _NO_PINS) == [*m4i.CPU_PINS.values(), "AVX2"]
    assert _run(code, {**_NO_PINS, "ATEN_CPU_CAPABILITY": "default"})[::4] == ["default", "DEFAULT"]


@pytest.mark.skipif(not _HAS_AVX2 or "avx512f" in m4i.cpu_flags(),
                    reason="on an AVX2 CPU without AVX-512 these pins select what the libraries pick by themselves")
def test_torch_onednn_and_openblas_pins_change_no_bit_on_an_avx2_machine():
    # They only stop an AVX-512 machine from taking other paths (not checked here: no such CPU).
    # MKL's pin is left out: its reproducibility mode is a path of its own (on an AMD EPYC it
    # changed the ViT-GPT-2 captions; measured).
    pins = {k: v for k, v in m4i.CPU_PINS.items() if k != "MKL_CBWR"}
    assert _run(_STEP, {**_NO_PINS, **pins}) == _run(_STEP, _NO_PINS)
