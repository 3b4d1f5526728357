"""The training engine on real data, real processes and real files (CPU)."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from wavemlp.engine.checkpoint import CheckpointManager, load_state
from wavemlp.engine.records import read_jsonl
from wavemlp.engine.signals import exit_file

from .conftest import wmlp_train

SHA = re.compile(r"rank (\d+) weights sha256 ([0-9a-f]{64})")


def _final_state(run_dir):
    return load_state(CheckpointManager(run_dir).last_files()[0])


@pytest.mark.parametrize("model", ["WaveMLP_T_dw", "WaveMLP_S"])
def test_one_training_step_per_norm_family(wmlp_exe, mini_data, tmp_path, model):
    run = tmp_path / "run"
    wmlp_train(wmlp_exe, mini_data, run, f"model.name={model}", "train.epochs=1", "train.max_steps_per_epoch=1")
    steps = read_jsonl(run / "steps.jsonl")
    assert len(steps) == 1 and steps[0]["loss"] > 0
    metrics = read_jsonl(run / "metrics.jsonl")
    assert metrics[0]["epoch"] == 0 and 0.0 <= metrics[0]["top1"] <= 100.0
    state = _final_state(run)
    assert state["arch"] == model and (state["epoch"], state["step"]) == (1, 0)
    for name in ("recipe.yaml", "command.txt", "env.json", "metrics.csv", "train.log"):
        assert (run / name).is_file(), name
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["devices"]["vendor"] == "cpu" and env["pip_freeze"]


def test_ddp_two_processes_keep_identical_weights(mini_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "-m",
        "wavemlp.cli",
        "train",
        "--recipe",
        "cpu-demo",
        "--data",
        str(mini_data),
        "--run-dir",
        str(run),
        "--set",
        "train.epochs=1",
        "--set",
        "train.max_steps_per_epoch=3",
        "--set",
        "train.batch_size=4",
        "--set",
        "data.workers=0",
        "--set",
        "train.progress=false",
        "--set",
        "model.drop_path_rate=0.1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    sums = dict(SHA.findall(out.stdout + out.stderr))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"]
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    assert len(read_jsonl(run / "steps.jsonl")) == 3  # rank 0 alone writes


def _wait_for_steps(path, n, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_jsonl(path)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError("trainer exited early: " + proc.stdout.read() + proc.stderr.read())
        time.sleep(0.05)
    raise AssertionError(f"no {n} steps in {path} within {timeout}s")


RESUME_SETS = [
    "train.deterministic=true",
    "model.drop_path_rate=0.2",
    "augment.mixup=0.8",
    "augment.cutmix=1.0",
    "augment.auto_augment=rand-m9-mstd0.5-inc1",
    "augment.reprob=0.25",
    "train.max_steps_per_epoch=8",
]


@pytest.mark.parametrize("pipeline", ["timm", "fast"])  # fast: random erasing draws in the trainer
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted_run(wmlp_exe, mini_data, tmp_path, pipeline):
    sets = [*RESUME_SETS, f"data.pipeline={pipeline}"]
    ref = tmp_path / "ref"
    wmlp_train(wmlp_exe, mini_data, ref, *sets)

    run = tmp_path / "interrupted"
    cmd = [wmlp_exe, "train", "--recipe", "cpu-demo", "--data", str(mini_data), "--run-dir", str(run)]
    for s in [
        "train.epochs=2",
        "train.batch_size=8",
        "data.workers=0",
        "train.progress=false",
        "sched.warmup_epochs=1",
        *sets,
    ]:
        cmd += ["--set", s]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    _wait_for_steps(run / "steps.jsonl", 10, proc)  # epoch 1 (steps 8..15) is under way
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, out + err
    saved = CheckpointManager(run).last_files()[0]
    state = load_state(saved)
    assert state["epoch"] == 1 and 0 < state["step"] < 8, saved.name  # really mid-epoch

    wmlp_train(wmlp_exe, mini_data, run, *sets, resume="auto")
    a, b = _final_state(ref), _final_state(run)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 16)
    for key in ("state_dict", "state_dict_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    steps = [r["global_step"] for r in read_jsonl(run / "steps.jsonl")]
    assert steps == list(range(1, 17))  # no step duplicated or missing across the restart
    ref_losses = [r["loss"] for r in read_jsonl(ref / "steps.jsonl")]
    assert [r["loss"] for r in read_jsonl(run / "steps.jsonl")] == ref_losses


def test_truncated_newest_checkpoint_falls_back_to_previous(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "run"
    wmlp_train(
        wmlp_exe, mini_data, run, "train.epochs=1", "train.max_steps_per_epoch=6", "train.checkpoint_every_steps=2"
    )
    files = CheckpointManager(run).last_files()
    assert [f.name for f in files] == ["last-e0001-s0000000.pth", "last-e0000-s0000004.pth", "last-e0000-s0000002.pth"]
    files[0].write_bytes(files[0].read_bytes()[:4096])  # a crash while the newest was being copied elsewhere
    out = wmlp_train(
        wmlp_exe,
        mini_data,
        run,
        "train.epochs=1",
        "train.max_steps_per_epoch=6",
        "train.checkpoint_every_steps=2",
        resume="auto",
    )
    log = out.stdout + out.stderr
    assert "last-e0001-s0000000.pth" in log and "falling back" in log
    assert "resumed from" in log and "epoch 0 step 4" in log
    assert [r["global_step"] for r in read_jsonl(run / "steps.jsonl")] == list(range(1, 7))


def test_corrupt_images_are_skipped_and_counted(wmlp_exe, mini_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(mini_data, data)
    victims = sorted((data / "train").rglob("*.JPEG"))[:3]
    victims[0].write_bytes(b"not a jpeg at all")
    victims[1].write_bytes(victims[1].read_bytes()[:200])  # truncated
    victims[2].write_bytes(b"")
    run = tmp_path / "run"
    out = wmlp_train(wmlp_exe, data, run, "train.epochs=1", "augment.mixup=0.8")
    assert out.returncode == 0
    metrics = read_jsonl(run / "metrics.jsonl")
    assert metrics[0]["skipped_images"] == 3
    assert sum(r["skipped"] for r in read_jsonl(run / "steps.jsonl")) == 3
    failing = wmlp_train(wmlp_exe, data, tmp_path / "run2", "train.epochs=1", "data.on_bad_image=fail", check=False)
    assert failing.returncode == 2 and "Traceback" not in failing.stderr
    assert any(v.name in failing.stderr for v in victims)


def test_nonfinite_loss_stops_with_clear_message_and_keeps_checkpoint(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "run"
    out = wmlp_train(
        wmlp_exe,
        mini_data,
        run,
        "train.epochs=1",
        "train.max_steps_per_epoch=8",
        "optim.opt=sgd",
        "optim.lr=100",
        "optim.momentum=0.9",
        "sched.warmup_epochs=0",
        "augment.smoothing=0",
        "train.checkpoint_every_steps=1",
        "train.model_ema=false",
        check=False,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    losses = [r["loss"] for r in read_jsonl(run / "steps.jsonl")]
    assert losses and all(map(math.isfinite, losses))  # the bad step itself is not recorded as a step
    assert f"at epoch 0 step {len(losses) + 1}" in out.stderr
    last = CheckpointManager(run).last_files()[0]
    assert f"last good checkpoint is {last}" in out.stderr and "non-finite loss" in out.stderr
    assert torch.isfinite(torch.stack([t.float().sum() for t in load_state(last)["state_dict"].values()])).all()
    assert exit_file(run, 0).read_text() == "3\n"  # for launch scripts: torchrun would report 1


def test_resume_with_another_optimizer_is_refused(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "run"
    wmlp_train(wmlp_exe, mini_data, run, "train.epochs=1", "train.max_steps_per_epoch=1")
    out = wmlp_train(wmlp_exe, mini_data, run, "train.epochs=2", "optim.opt=sgd", resume="auto", check=False)
    assert out.returncode == 2 and "optim.opt" in out.stderr and "Traceback" not in out.stderr


def test_fresh_start_refuses_a_run_folder_with_checkpoints(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "run"
    wmlp_train(wmlp_exe, mini_data, run, "train.epochs=1", "train.max_steps_per_epoch=1")
    out = wmlp_train(wmlp_exe, mini_data, run, "train.epochs=1", check=False)
    assert out.returncode == 2 and "--resume auto" in out.stderr and out.stderr.count("\n") == 1
    assert exit_file(run, 0).read_text() == "2\n"  # for launch scripts: torchrun would report 1


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("extends: cpu-demo\ntrain:\n  epochz: 1\n", "train.epochz: unknown key (did you mean 'epochs'?)"),
        ("extends: cpu-demo\ntrain:\n  batch_size: big\n", "train.batch_size: expected an integer"),
        ("extends: cpu-demo\naugment:\n  reprob: 2\n", "augment.reprob: 2.0 is out of range"),
        ("extends: no-such-recipe\n", "extends: 'no-such-recipe' not found"),
    ],
)
def test_bad_recipes_give_one_line_errors(wmlp_exe, tmp_path, yaml_text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    out = subprocess.run([wmlp_exe, "train", "--recipe", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and expected in out.stderr and str(bad) in out.stderr


def test_eval_of_a_demo_checkpoint_matches_the_training_run(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "run"
    wmlp_train(wmlp_exe, mini_data, run, "train.epochs=2")
    best = run / "checkpoints" / "best.pth"
    state = load_state(best)
    epoch = read_jsonl(run / "metrics.jsonl")[state["epoch"] - 1]
    for flag, key in (("--use-ema", "ema_top1"), (None, "top1")):
        # The kit's checkpoints record their architecture: --model only where they would not.
        cmd = [
            wmlp_exe,
            "eval",
            *([] if flag else ["--model", "WaveMLP_T_dw"]),
            "--checkpoint",
            str(best),
            "--data",
            str(mini_data),
            "--workers",
            "0",
            "--json",
            str(tmp_path / "e.json"),
        ] + ([flag] if flag else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        got = json.loads((tmp_path / "e.json").read_text())
        assert got["count"] == 40
        assert got["top1"] == pytest.approx(epoch[key], abs=1e-9), (flag, got, epoch)
    # A file that does not name its architecture (the authors' releases are bare weights) needs --model.
    bare = tmp_path / "bare.pth"
    torch.save(state["state_dict"], bare)
    out = subprocess.run([wmlp_exe, "eval", "--checkpoint", str(bare), "--data", str(mini_data)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"wmlp: error: --model: {bare} does not record its architecture"), out.stderr


def test_fused_optimizer_falls_back_with_a_warning_where_torch_has_no_kernel():
    import wavemlp
    from wavemlp.engine.components import build_optimizer
    from wavemlp.recipe import load_recipe

    model = wavemlp.create_model("WaveMLP_T_dw", num_classes=10)
    warned = []
    adamw = build_optimizer(model, load_recipe("h100").recipe, warn=warned.append)
    assert adamw.defaults.get("fused") is True and warned == []  # this torch has fused AdamW on the CPU
    lamb = build_optimizer(model, load_recipe("h100", ["optim.opt=lamb"]).recipe, warn=warned.append)
    assert type(lamb).__name__ == "Lamb" and "fused" not in lamb.defaults
    assert len(warned) == 1 and warned[0].startswith("optim.fused: no fused lamb kernel here")


def test_a_checkpoints_broken_saved_recipe_is_a_one_line_error_naming_the_file(mini_data, tmp_path):
    import wavemlp
    from wavemlp.engine.evaluate import evaluate_checkpoint
    from wavemlp.errors import KitError

    ckpt = tmp_path / "ck.pth"
    model = wavemlp.create_model("WaveMLP_T_dw", num_classes=10)
    torch.save({"state_dict": model.state_dict(), "recipe": "model:\n  img_size: 100\n"}, str(ckpt))
    with pytest.raises(KitError) as err:
        evaluate_checkpoint("WaveMLP_T_dw", str(ckpt), str(mini_data), workers=0)
    assert str(err.value).startswith(f"{ckpt} (its saved recipe): model.img_size: 100 is not divisible by 32")
    assert "\n" not in str(err.value)
