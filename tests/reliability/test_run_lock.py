"""One run folder, one run: a second training into a folder in use refuses in one line naming the owner's
pid; the lock of a process that died is taken over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from detector.training.reliability import LOCK_NAME

from .helpers import REPO, Throttle, callback_arg, fit_args, load, run_train_script, script_env

SHORT = ["--trainer.limit_val_batches", 0, "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0]


def _wait_for_lock_owner(proc, lock, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)


def test_a_second_training_into_a_folder_in_use_refuses_in_one_line(tiny_synthetic, tmp_path):
    run, lock = tmp_path / "run", tmp_path / "run" / "ckpt" / LOCK_NAME
    first = subprocess.Popen([sys.executable, "scripts/train.py",
                              *fit_args(tiny_synthetic, run, "--trainer.max_steps", 1000, *SHORT,
                                        "--checkpoint.every_n_train_steps", 1, callback_arg(Throttle, seconds=0.5))],
                             cwd=REPO, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lock_owner(first, lock)
        second = run_train_script(fit_args(tiny_synthetic, run, "--trainer.max_steps", 2, *SHORT))
        assert first.poll() is None  # the second was refused while the first was still training
        first.send_signal(signal.SIGTERM)  # the first ends as a preempted run: its own last.ckpt
        _, first_err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {run / 'ckpt'}: cannot write: in use by another training (pid {first.pid}, lock "
                      f"{lock}); wait for it to end or give this run another folder"], second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert first.returncode == 128 + signal.SIGTERM, first_err[-3000:]
    stopped_at = int(first_err.split("after step ")[1].split(";")[0])
    assert load(run / "ckpt" / "last.ckpt")["global_step"] == stopped_at  # the first run's, never the second's


def test_the_lock_of_a_dead_process_is_taken_over(tiny_synthetic, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "run" / "ckpt" / LOCK_NAME
    lock.parent.mkdir(parents=True)
    lock.write_text(dead.stdout)  # left behind by a run that was killed
    done = run_train_script(fit_args(tiny_synthetic, tmp_path / "run", "--trainer.max_steps", 1, *SHORT))
    assert done.returncode == 0, done.stderr[-3000:]
    assert load(tmp_path / "run" / "ckpt" / "last.ckpt")["global_step"] == 1
