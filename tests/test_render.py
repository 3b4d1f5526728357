"""Rendered launch and sbatch scripts: goldens, shellcheck, quoting of hostile values, #SBATCH checks,
and the `wmlp recipes` commands. No torch, no cluster: the scripts run against recording fake tools.

Regenerate the goldens after a deliberate template change (then review the diff):
    WMLP_REGEN_GOLDEN=1 pytest tests/test_render.py tests/test_launch.py
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.render_tools import (
    GOLDEN,
    ROOT,
    RUNTIMES,
    TARGETS,
    FakeTools,
    check_golden,
    run_bash,
    shellcheck,
    write,
)
from tests.infra.render_tools import wmlp as _wmlp
from wavemlp.recipe import dump_recipe, load_recipe, seed_flag_table, shipped_recipes

GOLDEN_RUN_DIR = "/shared/runs/wavemlp"
DATA = ["--set", "data.path=/datasets/imagenet"]
# Where golden scripts say they were written (and their resolved recipe lies): the test's own folder there.
GOLDEN_JOBS = "/shared/jobs"


def wmlp(*args: str, env: dict | None = None):
    """`wmlp`; Slurm jobs get a data set unless the test names one (rendering refuses a job without)."""
    if args[:1] == ("slurm",) and not any(a.startswith("data.path=") for a in args):
        args = (*args, *DATA)
    return _wmlp(*args, env=env)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Rendering to standard output writes the resolved recipe into the current folder: not the checkout."""
    monkeypatch.chdir(tmp_path)


def launch_args(target: str) -> list[str]:
    gpus = ["--gpus", "2"] if target == "cpu" else []
    return ["launch", "--recipe", target, "--nodes", "2", "--node-rank", "1", "--master-addr", "node001",
            "--run-dir", GOLDEN_RUN_DIR, *gpus]


def sbatch_args(target: str, runtime: str) -> list[str]:
    gpus = ["--gpus", "4"] if target == "cpu" else []
    mounts = ["--container-mounts", "/datasets/imagenet:/data/imagenet:ro"] if runtime != "none" else []
    return ["slurm", "render", "--recipe", target, "--nodes", "2", "--runtime", runtime, "--account", "wavemlp",
            *mounts, "--run-dir", GOLDEN_RUN_DIR, *gpus, *DATA]


def rendered(args: list[str]) -> str:
    result = wmlp(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def golden_variants() -> list[tuple[Path, list[str]]]:
    variants = [(GOLDEN / "launch" / f"{t}.sh", launch_args(t)) for t in TARGETS]
    variants += [(GOLDEN / "sbatch" / f"{r}-{t}.sbatch", sbatch_args(t, r)) for t in TARGETS for r in RUNTIMES]
    return variants


def _render_to_stdout(args: list[str], tmp_path: Path) -> str:
    """The script as written with -o (and its resolved recipe beside it), this test's folder named as
    GOLDEN_JOBS, so that goldens carry nothing of this machine."""
    out = tmp_path / ("script.sh" if args[0] == "launch" else "job.sbatch")
    result = wmlp(*args, "-o", str(out))
    assert result.exit_code == 0, result.output
    return out.read_text().replace(str(tmp_path), GOLDEN_JOBS)


# ------------------------------------------------------------------------------------------ goldens


@pytest.mark.parametrize("path,args", golden_variants(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_rendered_scripts_match_goldens(path: Path, args: list[str], tmp_path: Path) -> None:
    check_golden(path, _render_to_stdout(args, tmp_path))


def test_goldens_are_deterministic_and_machine_free(tmp_path: Path) -> None:
    for path, args in golden_variants()[:6] + golden_variants()[-4:]:
        first, second = _render_to_stdout(args, tmp_path), _render_to_stdout(args, tmp_path)
        assert first == second
        for local in (str(ROOT), str(Path.home()) + "/", str(tmp_path)):
            assert local not in first, f"{path.name} carries {local!r} from this machine"
        host = os.uname().nodename
        assert len(host) < 4 or not re.search(rf"\b{re.escape(host)}\b", first), f"{path.name} names this host"


def test_every_golden_is_shellcheck_clean_and_parses() -> None:
    files = sorted(GOLDEN.rglob("*.sh")) + sorted(GOLDEN.rglob("*.sbatch")) + sorted(GOLDEN.rglob("*.txt"))
    assert len(files) == len(TARGETS) * (1 + len(RUNTIMES)) + 1
    shellcheck(*files)
    for path in files:
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_sbatch_directives_follow_recipe_and_flags() -> None:
    text = rendered(["slurm", "render", "--recipe", "bi-v150", "--nodes", "3", "--time", "2-00:00:00",
                     "--partition", "ix", "--qos", "high", "--constraint", "a|b"])
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=wmlp-bi-v150",
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gres=gpu:16",  # chips, not boards
        "#SBATCH --cpus-per-task=128",
        "#SBATCH --time=2-00:00:00",
        "#SBATCH --partition=ix",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a|b",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --requeue",
        "#SBATCH --export=PATH,HOME,USER,LOGNAME,LANG,LC_ALL,TZ,TMPDIR,WMLP_PYTHON",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=%x-%j.out",
        "#SBATCH --error=%x-%j.err",
    ]
    # Default run folder: one per job, stable across requeues.
    assert 'run_dir=runs/bi-v150-"$SLURM_JOB_ID"' in text
    a100 = rendered(["slurm", "render", "--recipe", "a100", "--gpus", "4", "--set", "cluster.requeue=false"])
    assert "#SBATCH --gpus-per-node=4" in a100 and "#SBATCH --no-requeue" in a100 and "--gres" not in a100
    assert "scontrol requeue" not in a100
    cpu = rendered(["slurm", "render", "--recipe", "cpu"])
    assert "gpu" not in "\n".join(line for line in cpu.splitlines() if line.startswith("#SBATCH"))
    # Memory and whole nodes only when asked for; other sbatch options passed on as given.
    asked = rendered(["slurm", "render", "--recipe", "cpu", "--mem", "64G", "--exclusive",
                      "--sbatch-arg=--reservation=maint", "--sbatch-arg", "--comment=wavemlp"])
    assert "#SBATCH --mem=64G\n#SBATCH --exclusive\n" in asked
    assert asked.count("#SBATCH --reservation=maint\n#SBATCH --comment=wavemlp\n") == 1
    assert "--mem" not in cpu and "--exclusive" not in cpu


def test_vendor_device_handling_per_runtime() -> None:
    docker_ix = rendered(["slurm", "render", "--recipe", "bi-v150", "--runtime", "docker"])
    assert '--runtime=iluvatar --env=IX_VISIBLE_DEVICES="$granted"' in docker_ix
    bare = rendered(["slurm", "render", "--recipe", "bi-v100", "--runtime", "docker", "--set", "image.runtime="])
    assert "for dev in /dev/iluvatar* /dev/itrctl; do" in bare and '--env=CUDA_VISIBLE_DEVICES="$granted"' in bare
    assert "--privileged" not in bare and "--runtime=" not in bare
    assert "/dev/iluvatar*" in rendered(["slurm", "render", "--recipe", "bi-v150", "--runtime", "apptainer"])
    assert "exec --cleanenv --nv" in rendered(["slurm", "render", "--recipe", "h100", "--runtime", "apptainer"])
    docker_nv = rendered(["slurm", "render", "--recipe", "a100", "--runtime", "docker"])
    assert "--runtime=nvidia --env=NVIDIA_VISIBLE_DEVICES" in docker_nv
    pyxis = rendered(["slurm", "render", "--recipe", "bi-v150", "--runtime", "pyxis"])
    names = "NCCL_ALGO,NCCL_SHM_DISABLE,OMP_NUM_THREADS,PYTHONUNBUFFERED,SLURM_JOB_ID,SLURM_RESTART_COUNT"
    assert f"container_env={names}" in pyxis


# --------------------------------------------------------------------------------------- recipes


def test_target_recipes() -> None:
    for name in TARGETS:
        loaded = load_recipe(name)
        assert [p.stem for p in loaded.chain] == ["imagenet", name]
        assert loaded.recipe.image.name == "wavemlp-kit" and loaded.recipe.image.tag == name
    v150 = load_recipe("bi-v150").recipe
    assert v150.hardware.devices_per_node == 16 and "chips" in v150.description
    assert v150.env["NCCL_SHM_DISABLE"] == "1" and v150.env["NCCL_ALGO"] == "Ring"
    assert (v150.image.base, v150.image.runtime, v150.hardware.sdk) == ("corex:4.2.0", "iluvatar", "4.2.0")
    v100 = load_recipe("bi-v100").recipe
    assert (v100.train.batch_size, v100.train.precision, v100.image.base, v100.hardware.sdk) == (
        128, "fp16", "corex:2.2.0", "2.2.0")
    assert v100.image.dockerfile == v150.image.dockerfile == "corex"
    for name in ("a100", "h100"):
        r = load_recipe(name).recipe
        assert (r.train.precision, r.image.runtime, r.hardware.vendor) == ("bf16", "nvidia", "nvidia")
        assert r.image.base.startswith("nvcr.io/nvidia/pytorch:")
    cpu = load_recipe("cpu").recipe
    assert (cpu.hardware.device, cpu.train.precision, cpu.hardware.dist_backend) == ("cpu", "fp32", "gloo")
    assert cpu.cluster.gpu_request == "none"


def test_recipes_list_show_check_flags(tmp_path: Path) -> None:
    listing = wmlp("recipes", "list").stdout.splitlines()
    names = [line.split()[0] for line in listing]
    assert names == list(shipped_recipes()) and set(TARGETS) <= set(names)
    assert all(len(line.split(None, 1)) == 2 for line in listing)  # every recipe has a description

    assert wmlp("recipes", "show", "bi-v150").stdout == (ROOT / "recipes" / "bi-v150.yaml").read_text()
    resolved = wmlp("recipes", "show", "bi-v150", "--resolved").stdout
    assert resolved.startswith("# bi-v150 resolved: bi-v150.yaml <- imagenet.yaml\n")
    assert yaml.safe_load(resolved) == load_recipe("bi-v150").recipe.to_dict()
    assert dump_recipe(load_recipe("bi-v150").recipe) in resolved

    good = write(tmp_path / "good.yaml", "extends: cpu\ntrain:\n  epochs: 2\n")
    ok = wmlp("recipes", "check", str(good))
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: ")
    bad = write(tmp_path / "bad.yaml", "extends: cpu\ntrain:\n  epochz: 2\n")
    err = wmlp("recipes", "check", str(bad))
    assert err.exit_code == 2 and err.stdout == ""
    assert err.stderr.count("\n") == 1 and "train.epochz: unknown key (did you mean 'epochs'?)" in err.stderr

    flags = wmlp("recipes", "flags").stdout.splitlines()
    assert flags[:2] == ["| seed flag | recipe key | default |", "|---|---|---|"]
    assert len(flags) == 2 + len(seed_flag_table())
    assert "| `--drop-path` | `model.drop_path_rate` | `0.1` |" in flags


# ----------------------------------------------------------------------------------- launch basics


def test_launch_defaults_work_as_typed(tmp_path: Path) -> None:
    result = wmlp("launch", "--nodes", "1", "--gpus", "8", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--nproc_per_node=8" in result.stdout and "recipe imagenet." in result.stdout
    assert f"--recipe {Path.cwd()}/runs/imagenet/launch-node0.recipe.yaml" in result.stdout
    # One node: torchrun's standalone rendezvous on a free port, unless a port is given.
    assert "--standalone" in result.stdout and "--rdzv_endpoint" not in result.stdout
    port = wmlp("launch", "--nodes", "1", "--master-port", "29600", "--dry-run")
    assert port.exit_code == 0 and "--rdzv_endpoint=127.0.0.1:29600" in port.stdout
    assert "--standalone" not in port.stdout
    two = wmlp("launch", "--nodes", "2", "--gpus", "8", "--dry-run")
    assert two.exit_code == 2 and "--master-addr: required with --nodes 2" in two.stderr
    assert wmlp("launch", "--nodes", "2", "--node-rank", "2", "--master-addr", "h", "--dry-run").exit_code == 2
    assert wmlp("launch", "--dry-run", "-o", str(tmp_path / "x")).exit_code == 2


def test_launch_appends_logs_and_propagates_the_exit_status(tmp_path: Path) -> None:
    fake = FakeTools(tmp_path)
    env = fake.env(WMLP_PYTHON=str(fake.bin / "python3"), FAKE_EXIT_PYTHON="7")
    script = tmp_path / "launch.sh"
    assert wmlp("launch", "--recipe", "cpu", "--run-dir", "run", "-o", str(script)).exit_code == 0
    for _ in range(2):
        assert run_bash(script, env, tmp_path).returncode == 7
    log = (tmp_path / "run" / "logs" / "node0.log").read_text()
    assert log.count("===== wmlp launch: node 0 of 1") == 2  # the first launch's log was kept

    # wmlp launch itself (writes the script into the run folder) exits with the launcher's status.
    result = wmlp("launch", "--recipe", "cpu", "--run-dir", str(tmp_path / "run2"), env=env)
    assert result.exit_code == 7
    assert (tmp_path / "run2" / "launch-node0.sh").is_file()


# -------------------------------------------------------------------------------- #SBATCH checks


@pytest.mark.parametrize(
    "flag,key,value",
    [
        ("--partition", "partition", "gpu --uid=0"),
        ("--account", "account", "a;b"),
        ("--qos", "qos", "$(touch PWNED)"),
        ("--constraint", "constraint", "a b"),
        ("--time", "cluster.time", "1:00:00 --uid=0"),
        ("--mem", "cluster.mem", "0 --exclusive"),
        (None, "cluster.signal", "USR1@1"),
        ("--sbatch-arg", "sbatch_args", "--reservation=x --uid=0"),
    ],
)
def test_unsafe_sbatch_values_are_refused_with_one_line(flag, key, value, tmp_path: Path) -> None:
    if key.startswith("cluster."):
        attempts = [(["--set", f"{key}={value}"], key)]
    else:  # a site's value
        site = write(tmp_path / "site.yaml", yaml.safe_dump({key: [value] if key == "sbatch_args" else value}))
        attempts = [(["--site", str(site)], f"{site}: {key}")]
    if flag:
        attempts += [([flag, value], flag), ([flag, value + "\n#SBATCH --uid=0"], flag)]
    for extra, named in attempts:
        result = wmlp("slurm", "render", "--recipe", "cpu", *extra)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"wmlp: error: {named}: "), result.stderr


def test_unsafe_recipe_and_site_values_in_a_file_are_refused(tmp_path: Path) -> None:
    bad_mem = {"extends": "cpu", "cluster": {"mem": "0\n#SBATCH --exclusive"}}
    recipe = write(tmp_path / "mem.yaml", yaml.safe_dump(bad_mem))
    result = wmlp("slurm", "render", "--recipe", str(recipe))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "cluster.mem" in result.stderr
    site = write(tmp_path / "site.yaml", yaml.safe_dump({"partition": "gpu\n#SBATCH --uid=0"}))
    result = wmlp("slurm", "render", "--recipe", "cpu", "--site", str(site))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and f"{site}: partition" in result.stderr


def test_site_values_are_refused_in_recipes_with_where_they_went(tmp_path: Path) -> None:
    recipe = write(tmp_path / "old.yaml", yaml.safe_dump({"extends": "cpu", "cluster": {"partition": "gpu"}}))
    result = wmlp("slurm", "render", "--recipe", str(recipe))
    assert result.exit_code == 2
    assert "cluster.partition: a site setting: put it in a site file as 'partition'" in result.stderr


def test_sbatch_options_the_script_owns_are_refused() -> None:
    for arg, owner in [("--nodes=4", "--nodes"), ("--output=x", "the script"), ("--export=ALL", "export list")]:
        result = wmlp("slurm", "render", "--recipe", "cpu", "--sbatch-arg", arg)
        assert result.exit_code == 2 and owner in result.stderr and "--sbatch-arg" in result.stderr


def test_a_job_without_data_or_with_a_signal_at_its_start_is_refused() -> None:
    no_data = _wmlp("slurm", "render", "--recipe", "bi-v150")
    assert no_data.exit_code == 2 and no_data.stderr.startswith("wmlp: error: data.path: a training job needs")
    early = wmlp("slurm", "render", "--recipe", "cpu", "--time", "00:04:00", "--set", "cluster.signal_grace=300")
    assert early.exit_code == 2
    assert early.stderr.startswith("wmlp: error: cluster.signal_grace: 300 s is not shorter than the time limit")
    day = wmlp("slurm", "render", "--recipe", "cpu", "--time", "1-00", "--set", "cluster.signal_grace=300")
    assert day.exit_code == 0


@pytest.mark.parametrize(
    "env_name,why", [("BASH_ENV", "code or syntax"), ("PS4", "code or syntax"), ("MASTER_ADDR", "torchrun and Slurm"),
                     ("SLURM_JOB_ID", "torchrun and Slurm"), ("PATH", "the loader"), ("HOME", "the loader"),
                     ("LD_PRELOAD", "the loader")]
)
def test_env_names_the_shell_or_launcher_own_are_refused(env_name: str, why: str) -> None:
    for command in (["launch", "--dry-run"], ["slurm", "render"]):
        result = wmlp(*command, "--recipe", "cpu", "--set", f"env.{env_name}=x")
        assert result.exit_code == 2 and f"env.{env_name}: " in result.stderr and why in result.stderr


def test_mounts_that_would_split_are_refused() -> None:
    for value in ["/a:/b\n/c", ":/x"]:
        result = wmlp("slurm", "render", "--recipe", "cpu", "--runtime", "pyxis", "--container-mounts", value)
        assert result.exit_code == 2 and "--container-mounts" in result.stderr
    ok = wmlp("slurm", "render", "--recipe", "cpu", "--runtime", "pyxis", "--container-mounts", "/a:/b,/c:/d:ro")
    # The flags' mounts first, then the job's own: data set and resolved recipe, read-only, at their paths.
    assert "mounts+=(/a:/b /c:/d:ro /datasets/imagenet:/datasets/imagenet:ro " in ok.stdout


def test_container_flags_need_a_container_runtime() -> None:
    for flag, value in [("--container-mounts", "/a:/b"), ("--container-image", "img")]:
        result = wmlp("slurm", "render", "--recipe", "cpu", "--runtime", "none", flag, value)
        assert result.exit_code == 2 and f"{flag}: needs a container runtime" in result.stderr


def test_submit_prints_the_job_id_or_one_line_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTools(tmp_path)
    monkeypatch.chdir(tmp_path)
    ok = wmlp("slurm", "submit", "--recipe", "cpu", "-o", "job.sbatch", env=fake.env(FAKE_SBATCH_OUT="812;wmlp\n"))
    assert ok.exit_code == 0 and ok.stdout == "812\n"
    (call,) = fake.calls("sbatch")
    assert call["argv"] == ["--parsable", "job.sbatch"]
    assert (tmp_path / "job.sbatch").read_text().startswith("#!/usr/bin/env bash\n#SBATCH --job-name=wmlp-cpu\n")
    failed = wmlp("slurm", "submit", "--recipe", "cpu", env=fake.env(FAKE_EXIT_SBATCH="1"))
    assert failed.exit_code == 2 and failed.stderr.endswith("wmlp: error: sbatch failed (exit 1): no output\n")
    missing = wmlp("slurm", "submit", "--recipe", "cpu", env={"PATH": str(tmp_path / "nowhere")})
    assert missing.exit_code == 2 and "sbatch is not on PATH" in missing.stderr


# ------------------------------------------------------------------------------ rendezvous lookup


@pytest.mark.parametrize("mode", ["fail", "empty"])
def test_no_rendezvous_host_fails_the_job_clearly(mode: str, tmp_path: Path) -> None:
    fake = FakeTools(tmp_path)
    script = tmp_path / "job.sbatch"
    assert wmlp("slurm", "render", "--recipe", "cpu", "--nodes", "2", "-o", str(script)).exit_code == 0
    env = fake.env(SLURM_JOB_ID="17", SLURM_JOB_NODELIST="n[1-2]", FAKE_SCONTROL=mode)
    result = run_bash(script, env, tmp_path)
    assert result.returncode == 1
    assert "could not expand SLURM_JOB_NODELIST=n[1-2]: no rendezvous host" in result.stderr
    assert fake.calls("srun") == [] and fake.calls("python3") == []


# ------------------------------------------------------------------------------------- quoting


HOSTILE = "$(touch PWNED) `touch PWNED` ;touch PWNED; 'sq' \"dq\" \\ $HOME %j&|<>\n\tnext line é"


def hostile(tag: str) -> str:
    return f"{tag} {HOSTILE}"


def mountable(text: str) -> str:
    """Mount specs cannot hold control characters (they are refused): the rest of the hostile text stays."""
    return text.replace("\n", " ").replace("\t", " ")


def hostile_recipe(folder: Path) -> Path:
    """A recipe whose every free string field is hostile (choice fields cannot be; #SBATCH fields are
    tested above; paths a container mounts cannot hold control characters), in a folder whose own name is
    hostile."""
    data = {
        "extends": "a100",
        "description": hostile("description"),
        "model": {"name": hostile("model"), "initial_checkpoint": mountable(hostile("ckpt"))},
        "data": {"path": mountable(hostile("data")), "train_split": hostile("train"), "val_split": hostile("val")},
        "augment": {"auto_augment": hostile("aa")},
        "optim": {"opt": hostile("opt")},
        "train": {"output": hostile("out"), "experiment": hostile("exp"), "resume": hostile("resume")},
        "hardware": {"device_name": hostile("device"), "sdk": hostile("sdk")},
        "image": {"base": hostile("base"), "name": hostile("name"), "tag": hostile("tag"),
                  "runtime": hostile("runtime")},
        "env": {"HOSTILE_A": hostile("env-a"), "HOSTILE_B": "'", "HOSTILE_C": "\n", "EMPTY": ""},
    }
    path = folder / "recipe $(touch PWNED) 'q' \"d\" `b`" / "hostile.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return Path(os.path.realpath(path))


def hostile_site(folder: Path) -> Path:
    data = {"mounts": [mountable(hostile("/site")) + ":/site"], "image_prefix": mountable(hostile("prefix")) + "/",
            "env": {"SITE_A": hostile("site-a")}, "network": {"socket_ifname": hostile("if")}}
    return write(folder / "site $(touch PWNED).yaml", yaml.safe_dump(data, allow_unicode=True))


# A folder for scripts (and the resolved recipes beside them) whose name is hostile but mountable.
HOSTILE_JOBS = "jobs $(touch PWNED) 'q' \"d\" `b` ;x &y"


HOSTILE_SETS = [f"data.path={mountable(hostile('set'))}", "env.HOSTILE_D=$(touch PWNED)", "train.experiment=x;y"]


def _train_tail(argv: list[str]) -> list[str]:
    return argv[argv.index("wavemlp.cli") + 1:]


def _assert_no_pwned(root: Path) -> None:
    assert not [p for p in root.rglob("PWNED")], "a value was executed"


def test_hostile_values_reach_the_launch_command_byte_for_byte(tmp_path: Path) -> None:
    fake = FakeTools(tmp_path)
    recipe = hostile_recipe(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    run_dir = hostile("run")
    extra = [hostile("extra"), "--set", "x=$(touch PWNED)"]
    script = work / "launch.sh"
    # With a port: on one node, no port means torchrun's standalone rendezvous, which takes no address.
    result = wmlp("launch", "--recipe", str(recipe), "--master-addr", hostile("addr"), "--master-port", "29500",
                  "--run-dir", run_dir,
                  *[a for s in HOSTILE_SETS for a in ("--set", s)], "-o", str(script), "--", *extra)
    assert result.exit_code == 0, result.output
    shellcheck(script)
    proc = run_bash(script, fake.env(WMLP_PYTHON=str(fake.bin / "python3")), work)
    assert proc.returncode == 0, proc.stderr
    _assert_no_pwned(tmp_path)

    (call,) = fake.calls("python3")
    argv = call["argv"]
    assert argv[:3] == ["-m", "torch.distributed.run", "--nnodes=1"]
    assert f"--rdzv_endpoint={hostile('addr')}:29500" in argv
    # Recipe, --set values included, resolved into one file beside the script: the trainers read that.
    resolved = work / "launch.recipe.yaml"
    assert _train_tail(argv) == ["train", "--recipe", str(resolved), "--run-dir", run_dir, "--resume", "auto", *extra]
    assert yaml.safe_load(resolved.read_text())["train"]["experiment"] == "x;y"
    loaded = load_recipe(str(recipe), HOSTILE_SETS).recipe
    for name, value in loaded.env.items():
        assert call["env"][name] == value
    assert (work / run_dir / "logs" / "node0.log").is_file()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hostile_values_reach_the_sbatch_commands_byte_for_byte(runtime: str, tmp_path: Path) -> None:
    fake = FakeTools(tmp_path)
    recipe = hostile_recipe(tmp_path)
    site = hostile_site(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    image = hostile("image") if runtime != "none" else None
    mount = mountable(hostile("/m")) + ":/m"
    flags = ["--container-mounts", mount, "--container-image", image] if image else []
    # The run folder is mounted into containers: ',' and ':' cannot be in it there (checked at run time).
    run_dir = hostile("run") if runtime == "none" else None
    script = tmp_path / HOSTILE_JOBS / "job.sbatch"
    result = wmlp("slurm", "render", "--recipe", str(recipe), "--site", str(site), "--nodes", "2", "--gpus", "3",
                  "--runtime", runtime, "--constraint", "a|b", *(["--run-dir", run_dir] if run_dir else []),
                  *[a for s in HOSTILE_SETS for a in ("--set", s)], *flags, "-o", str(script))
    assert result.exit_code == 0, result.output
    text = script.read_text()
    assert "#SBATCH --constraint=a|b\n" in text
    shellcheck(script)

    env = fake.env(SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="n[1-2]", SLURM_JOB_NUM_NODES="2",
                   SLURM_STEP_GPUS="0,1,2", WMLP_PYTHON=str(fake.bin / "python3"), TMPDIR=str(tmp_path))
    proc = run_bash(script, env, work)
    assert proc.returncode == 0, proc.stderr
    _assert_no_pwned(tmp_path)

    # Every value, the --set ones included, reaches the trainer through the resolved recipe beside the script.
    resolved_path = script.with_name("job.recipe.yaml")
    resolved = yaml.safe_load(resolved_path.read_text())
    loaded = load_recipe(str(recipe), HOSTILE_SETS).recipe
    assert resolved["data"]["path"] == os.path.abspath(loaded.data.path)
    site_env = {"SITE_A": hostile("site-a"), "NCCL_SOCKET_IFNAME": hostile("if"), "GLOO_SOCKET_IFNAME": hostile("if")}
    job_env = {**loaded.env, **site_env}
    assert resolved["env"] == job_env and resolved["train"]["experiment"] == "x;y"
    expected_run = run_dir or f"{loaded.train.output}/{loaded.train.experiment}-4242"
    run_abs = os.path.realpath(work / expected_run)
    assert Path(run_abs, "logs", "4242.sbatch").read_text() == text  # the job keeps its script
    assert Path(run_abs, "logs", "4242.recipe.yaml").read_text() == resolved_path.read_text()  # and its recipe
    train_tail = ["train", "--recipe", str(resolved_path), "--run-dir", run_abs, "--resume", "auto"]
    (srun,) = fake.calls("srun")
    pct = run_abs.replace("%", "%%")
    assert f"--output={pct}/logs/4242-restart0-node%n.log" in srun["argv"]

    tool = {"none": "python3", "pyxis": "python3", "apptainer": "apptainer", "docker": "docker"}[runtime]
    (call,) = [c for c in fake.calls(tool) if tool != "docker" or c["argv"][0] == "run"]
    argv = call["argv"]
    assert _train_tail(argv) == train_tail
    assert "--nproc_per_node=3" in argv and "--nnodes=2" in argv
    (endpoint,) = [a for a in argv if a.startswith("--rdzv_endpoint=")]
    assert re.fullmatch(r"--rdzv_endpoint=n1:(29[5-9]\d\d|3[01]\d\d\d)", endpoint)
    assert not list(tmp_path.glob("wmlp-rendezvous-port-*"))  # the port's claim ends with the job
    for name, value in job_env.items():
        assert call["env"][name] == value
    # The default run folder lies in the submit folder, which is mounted already.
    job_mounts = [f"{p}:{p}:ro" for p in (resolved["data"]["path"], str(resolved_path),
                                          resolved["model"]["initial_checkpoint"])]
    mounts = [f"{work}:{work}", mount, mountable(hostile("/site")) + ":/site", *job_mounts]
    names = [*sorted(job_env), "PYTHONUNBUFFERED", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"]
    if runtime == "pyxis":
        assert f"--container-image={image}" in srun["argv"]
        assert f"--container-mounts={','.join(mounts)}" in srun["argv"]
        assert f"--container-env={','.join(sorted(names))}" in srun["argv"]
    elif runtime == "apptainer":
        assert argv[:3] == ["exec", "--cleanenv", "--nv"] and image in argv
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"] == mounts
        for name, value in job_env.items():
            assert call["env"][f"APPTAINERENV_{name}"] == value
    elif runtime == "docker":
        assert argv[:2] == ["run", "--rm"] and f"--runtime={loaded.image.runtime}" in argv
        assert "--env=NVIDIA_VISIBLE_DEVICES=0,1,2" in argv  # from this node's Slurm GPU list
        assert "--name=wmlp-4242-0-" + call["env"].get("SLURMD_NODENAME", os.uname().nodename.split(".")[0]) in argv
        assert argv[argv.index("--entrypoint=python3") + 1] == image
        assert [a for a in argv if a.startswith("--volume=")] == [f"--volume={m}" for m in mounts]
        assert {f"--env={name}" for name in names} <= set(argv)
        # The container goes when the step ends, whatever ended it.
        assert [c["argv"][:2] for c in fake.calls("docker")][-1] == ["rm", "-f"]


def test_containers_get_every_path_the_job_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data set, resolved recipe, initial checkpoint and released weights' folder, each at its own path;
    relative paths made absolute at render time; a bare-metal job mounts nothing."""
    monkeypatch.setenv("WAVEMLP_PRETRAINED_DIR", "/shared/weights")
    (tmp_path / "ckpt.pth").write_bytes(b"")
    args = ["slurm", "render", "--recipe", "cpu", "--set", "data.path=digits", "--set", "model.pretrained=true",
            "--set", "model.initial_checkpoint=ckpt.pth"]
    result = wmlp(*args, "--runtime", "docker", "-o", str(tmp_path / "jobs" / "j.sbatch"))
    assert result.exit_code == 0, result.output
    assert f"data.path: {tmp_path}/digits does not exist on this host" in result.stderr  # a warning, not an error
    text = (tmp_path / "jobs" / "j.sbatch").read_text()
    recipe = tmp_path / "jobs" / "j.recipe.yaml"
    paths = [f"{tmp_path}/digits", str(recipe), f"{tmp_path}/ckpt.pth", "/shared/weights"]
    assert "mounts+=(" + " ".join(f"{p}:{p}:ro" for p in paths) + ")\n" in text
    resolved = yaml.safe_load(recipe.read_text())
    assert resolved["data"]["path"] == f"{tmp_path}/digits"
    assert resolved["model"]["initial_checkpoint"] == f"{tmp_path}/ckpt.pth"
    assert resolved["env"]["WAVEMLP_PRETRAINED_DIR"] == "/shared/weights"
    bare = wmlp(*args, "--runtime", "none", "-o", str(tmp_path / "jobs" / "b.sbatch"))
    assert bare.exit_code == 0 and "mounts" not in (tmp_path / "jobs" / "b.sbatch").read_text()
    colon = wmlp("slurm", "render", "--recipe", "cpu", "--runtime", "pyxis", "--set", "data.path=/a:b")
    assert colon.exit_code == 2 and colon.stderr.startswith("wmlp: error: data.path: /a:b holds ',' ':'")
