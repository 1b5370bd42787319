# Copyright (c) yolact_d2 contributors.
"""
Killed processes (issue 12), with real subprocesses: a train_net.py run SIGKILLed while it writes
a checkpoint resumes from the last complete one (same iteration, LR, optimizer state and
weights) and never leaves a half-written file under a checkpoint's name; a two-process gloo
run whose worker is SIGKILLed ends with a clear error in bounded time; an interrupted
evaluation re-run gives the same AP.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import REPO_ROOT

CONFIG = os.path.join(
    REPO_ROOT, "configs", "quick_schedules", "yolact_R_50_FPN_tiny_coco_instant_test.yaml"
)
TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")


def _opts(out, max_iter=6, period=2):
    return [
        "MODEL.YOLACT.INPUT_SIZE", "128",
        "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", str(period),
        "SOLVER.LOG_PERIOD", "1",
        "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0",
        "SEED", "1",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip


# Runs train_net.py with torch.save slowed down for the checkpoint of one iteration: half the
# bytes are written, a marker file appears, and the writer sleeps (the test kills it there).
_SLOW_SAVE = """
import io, os, runpy, sys, time
import torch
marker, iteration = os.environ["SLOW_SAVE_MARKER"], int(os.environ["SLOW_SAVE_ITERATION"])
real_save = torch.save
def slow_save(obj, f, *args, **kwargs):
    if not (isinstance(obj, dict) and obj.get("iteration") == iteration):
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    open(marker, "w").write("writing")
    time.sleep(600)
    f.write(data[len(data) // 2 :])
torch.save = slow_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Builds the trainer exactly as train_net.py --resume does and dumps what it resumed with.
_DUMP_RESUMED = """
import runpy, sys
import torch
dump = sys.argv[1]
sys.argv = [sys.argv[2]] + sys.argv[3:]
train_net = runpy.run_path(sys.argv[0])
args = train_net["get_parser"]().parse_args(sys.argv[1:])
cfg = train_net["setup"](args)
trainer = train_net["YolactTrainer"](cfg)
trainer.resume_or_load(resume=True)
torch.save({"start_iter": trainer.start_iter, "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict()}, dump)
"""


def _wait_until(condition, processes, what, seconds=240, poll=0.2):
    """Polls ``condition()`` while every process runs; fails if one ends or time runs out."""
    deadline = time.time() + seconds
    while not condition():
        assert all(p.poll() is None for p in processes), f"a process ended before {what}"
        assert time.time() < deadline, f"{what} never happened"
        time.sleep(poll)


def _wait_for(path, process, seconds=240):
    _wait_until(lambda: os.path.exists(path), [process], f"{path} appeared", seconds)


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_sigkill_while_writing_a_checkpoint_then_resume(tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "writing"
    env = dict(os.environ, SLOW_SAVE_MARKER=str(marker), SLOW_SAVE_ITERATION="3")
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _SLOW_SAVE, TRAIN_NET, "--config-file", CONFIG, *_opts(out)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
        )  # fmt: skip
        try:
            _wait_for(marker, process)
            process.send_signal(signal.SIGKILL)  # in the middle of writing model_0000003.pth
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    files = sorted(os.listdir(out))
    assert "model_0000001.pth" in files and "model_0000003.pth" not in files, files
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    half_written = [f for f in files if f.endswith(".tmp")]
    assert half_written and all(f.startswith(".model_0000003.pth.") for f in half_written)
    saved = torch.load(out / "model_0000001.pth", weights_only=False)
    assert saved["iteration"] == 1

    # What --resume starts from: exactly the last complete checkpoint.
    dump = tmp_path / "resumed.pth"
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP_RESUMED, str(dump), TRAIN_NET, "--config-file", CONFIG,
         "--resume", *_opts(out)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(dump, weights_only=False)
    assert resumed["start_iter"] == saved["iteration"] + 1 == 2
    _assert_same(resumed["model"], saved["model"], "model")
    _assert_same(resumed["optimizer"], saved["trainer"]["_trainer"]["optimizer"], "optimizer")
    scheduler = saved["trainer"]["hooks"]["LRScheduler"]
    _assert_same({k: resumed["scheduler"][k] for k in scheduler}, scheduler, "scheduler")
    assert scheduler["last_epoch"] == 2
    assert resumed["optimizer"]["state"], "the optimizer state (momentum) was not restored"

    # And the resumed run trains on to the end with the same learning-rate schedule.
    before = [json.loads(line) for line in open(out / "metrics.json")]
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--resume", *_opts(out)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model_final.pth" in os.listdir(out)
    after = [json.loads(line) for line in open(out / "metrics.json")][len(before) :]
    assert [m["iteration"] for m in after if "lr" in m] == [2, 3, 4, 5]
    lr_before = {m["iteration"]: m["lr"] for m in before if "lr" in m}
    for m in after:
        if m["iteration"] in lr_before:
            assert m["lr"] == pytest.approx(lr_before[m["iteration"]], rel=1e-12)


def _children(pid):
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def test_a_dead_gloo_worker_ends_the_run_with_a_clear_error(tmp_path):
    out = tmp_path / "ddp"
    log_path = tmp_path / "ddp.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--num-gpus", "2",
             "--dist-timeout", "30", *_opts(out, max_iter=500, period=1000)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )  # fmt: skip
        try:
            _wait_until(
                lambda: "Starting training from iteration" in log_path.read_text(),
                [process],
                "training started",
                poll=0.5,
            )
            workers = _children(process.pid)
            workers = [w for w in workers if "python" in open(f"/proc/{w}/cmdline").read()]
            assert len(workers) >= 2, workers
            os.kill(workers[-1], signal.SIGKILL)
            start = time.time()
            returncode = process.wait(timeout=120)
            elapsed = time.time() - start
        finally:
            if process.poll() is None:
                process.kill()
    text = log_path.read_text()
    assert returncode != 0 and elapsed < 60, elapsed
    assert "terminated with signal SIGKILL" in text, text[-3000:]
    # No worker outlives the run: the survivor is terminated by the launcher and may take a
    # moment to exit after it (a CI run saw one still exiting right after the launcher ended).
    _wait_until(lambda: not [w for w in workers if _alive(w)], [], "the workers exited", seconds=20)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _eval_command(out):
    opts = _opts(out)
    opts[opts.index("DATASETS.TEST") + 1] = "('tiny_coco_val',)"
    return [sys.executable, TRAIN_NET, "--config-file", CONFIG, "--eval-only", *opts,
            "MODEL.YOLACT.TEST.SCORE_THRESH", "0.0"]  # fmt: skip


def _segm_ap(text):
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.endswith("copypaste: Task: segm"))
    return lines[i + 2].split("copypaste: ")[1]


def test_an_interrupted_evaluation_rerun_gives_the_same_ap(tmp_path):
    out = tmp_path / "eval"
    log_path = tmp_path / "eval.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            _eval_command(out), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        try:
            _wait_until(  # part-way through
                lambda: "Inference done 11/" in log_path.read_text(), [process], "inference"
            )
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    rerun = subprocess.run(_eval_command(out), capture_output=True, text=True, cwd=REPO_ROOT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    fresh = subprocess.run(
        _eval_command(tmp_path / "fresh"), capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert _segm_ap(rerun.stdout + rerun.stderr) == _segm_ap(fresh.stdout + fresh.stderr)


# A sitecustomize (so that Detectron2's spawned workers run it too) making every training
# process write its final parameters to OUTPUT_DIR/rank<R>.pth.
_DUMP_FINAL = """
import torch
from detectron2.utils import comm
from yolact_d2.engine import YolactTrainer
train = YolactTrainer.train
def train_and_dump(self):
    result = train(self)
    model = self.model.module if hasattr(self.model, "module") else self.model
    torch.save(model.state_dict(), f"{self.cfg.OUTPUT_DIR}/rank{comm.get_rank()}.pth")
    return result
YolactTrainer.train = train_and_dump
"""


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machines(tmp_path, max_iter):
    url = f"tcp://127.0.0.1:{_free_port()}"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_DUMP_FINAL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), REPO_ROOT]))
    processes = []
    for rank in (0, 1):
        out = tmp_path / f"machine{rank}"
        log = open(tmp_path / f"machine{rank}.log", "w")
        processes.append(
            subprocess.Popen(
                [sys.executable, TRAIN_NET, "--config-file", CONFIG,
                 "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank),
                 "--dist-url", url, "--dist-timeout", "30",
                 *_opts(out, max_iter=max_iter, period=1000)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
            )  # fmt: skip
        )
    return processes


def test_two_machines_train_to_identical_parameters(tmp_path):
    processes = _machines(tmp_path, max_iter=3)
    try:
        codes = [p.wait(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"machine{r}.log").read_text()[-3000:] for r in (0, 1)]
    assert codes == [0, 0], logs
    rank0 = torch.load(tmp_path / "machine0" / "rank0.pth")
    rank1 = torch.load(tmp_path / "machine1" / "rank1.pth")
    assert rank0.keys() == rank1.keys()
    # Every parameter is identical (DDP averages the gradients). BatchNorm's running statistics
    # are per process by design (plain BN on each machine's own images; DDP copies rank 0's
    # at the start of each forward, and rank 0 is the one that saves).
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    parameters = [k for k in rank0 if not k.endswith(buffers)]
    assert len(parameters) > 50
    for key in parameters:
        assert torch.equal(rank0[key], rank1[key]), key
    initial = torch.load(tmp_path / "machine0" / "model_final.pth", weights_only=False)["model"]
    assert torch.equal(initial["head.cls_score.weight"], rank0["head.cls_score.weight"])


def test_one_of_two_machines_killed_mid_run(tmp_path):
    processes = _machines(tmp_path, max_iter=500)
    try:
        log0 = tmp_path / "machine0.log"
        _wait_until(lambda: "iter: 2 " in log0.read_text(), processes, "iteration 2", poll=0.5)
        for child in _children(processes[1].pid):
            os.kill(child, signal.SIGKILL)  # machine 1's training process
        processes[1].kill()
        start = time.time()
        code = processes[0].wait(timeout=120)
        elapsed = time.time() - start
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    text = (tmp_path / "machine0.log").read_text()
    assert code != 0 and elapsed < 90, (elapsed, text[-3000:])
    # gloo reports the lost peer ("Connection closed by peer" or a timeout, depending on where the
    # survivor was); both messages point at the remote worker
    assert "Check the logs of the remote worker" in text, text[-3000:]


@pytest.mark.parametrize("kill_at", [2, 5])
def test_sigkill_at_other_points_then_resume(tmp_path, kill_at):
    """Killed between steps (after iteration ``kill_at`` was logged), not during a save."""
    out = tmp_path / "run"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, TRAIN_NET, "--config-file", CONFIG, *_opts(out, max_iter=40)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )  # fmt: skip
        try:

            def logged():
                metrics = out / "metrics.json"
                lines = metrics.read_text().splitlines() if metrics.exists() else []
                return any(json.loads(line).get("iteration") == kill_at for line in lines)

            _wait_until(logged, [process], f"iteration {kill_at}", poll=0.05)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    last = (out / "last_checkpoint").read_text()
    saved = torch.load(out / last, weights_only=False)  # complete and loadable
    assert all(not f.startswith("model_") or f.endswith(".pth") for f in os.listdir(out))
    dump = tmp_path / "resumed.pth"
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP_RESUMED, str(dump), TRAIN_NET, "--config-file", CONFIG,
         "--resume", *_opts(out, max_iter=40)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(dump, weights_only=False)
    assert resumed["start_iter"] == saved["iteration"] + 1 >= kill_at - 1
    _assert_same(resumed["model"], saved["model"], "model")
