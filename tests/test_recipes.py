"""Recipe loading: extends chains, overrides, and one-line errors naming file, key path and problem."""

import pytest
import yaml

from tests.conftest import wmlp_train
from wavemlp.recipe import RecipeError, dump_recipe, load_recipe, parse_recipe, seed_flag_table, shipped_recipes
from wavemlp.recipe.loader import validate


def _write(path, text):
    path.write_text(text)
    return path


def _error(ref, overrides=()):
    with pytest.raises(RecipeError) as err:
        load_recipe(ref, overrides)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_seed_recipe_reproduces_the_authors_run():
    r = load_recipe("imagenet").recipe
    assert (r.model.name, r.model.drop_path_rate, r.model.drop_rate, r.model.img_size) == (
        "WaveMLP_T_dw",
        0.1,
        0.0,
        224,
    )
    assert (r.train.epochs, r.sched.cooldown_epochs, r.sched.warmup_epochs) == (300, 10, 5)  # 310 scheduled
    assert (r.sched.sched, r.sched.warmup_lr, r.sched.min_lr) == ("cosine", 1e-6, 1e-5)
    assert (r.optim.opt, r.optim.lr, r.optim.opt_eps, r.optim.weight_decay) == ("adamw", 1e-3, 1e-8, 0.05)
    assert (r.train.batch_size, r.train.precision, r.train.seed) == (128, "fp16", 42)
    assert (r.train.model_ema, r.train.model_ema_decay) == (True, 0.99996)
    a = r.augment
    assert (a.mixup, a.cutmix, a.mixup_switch_prob, a.mixup_mode, a.smoothing) == (0.8, 1.0, 0.5, "batch", 0.1)
    assert (a.auto_augment, a.color_jitter, a.reprob, a.remode) == ("rand-m9-mstd0.5-inc1", 0.4, 0.25, "pixel")
    assert (a.repeated_aug, a.hflip, a.scale, a.train_interpolation) == (True, 0.5, [0.08, 1.0], "random")
    assert a.ratio == pytest.approx([3 / 4, 4 / 3])
    assert (r.data.crop_pct, r.data.interpolation) == (0.9, "bicubic")


def test_every_shipped_recipe_loads():
    names = shipped_recipes()
    assert {"imagenet", "cpu-demo"} <= set(names)
    for name in names:
        load_recipe(name)


def test_extends_and_overrides_merge(tmp_path):
    _write(tmp_path / "base.yaml", "train:\n  epochs: 7\n  batch_size: 16\nenv:\n  A: '1'\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\ntrain:\n  batch_size: 8\nenv:\n  B: two\n")
    loaded = load_recipe(str(child), ["train.epochs=1", "optim.lr=5e-4", "augment.scale=[0.5, 1.0]"])
    r = loaded.recipe
    assert (r.train.epochs, r.train.batch_size, r.optim.lr, r.augment.scale) == (1, 8, 5e-4, [0.5, 1.0])
    assert r.env == {"A": "1", "B": "two"}
    assert [p.name for p in loaded.chain] == ["base.yaml", "child.yaml"]


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    r = load_recipe("cpu-demo", ["train.epochs=2"]).recipe
    path = _write(tmp_path / "resolved.yaml", dump_recipe(r))
    assert load_recipe(str(path)).recipe == r


def test_saved_recipe_text_goes_through_the_same_loader():
    r = load_recipe("cpu-demo", ["train.epochs=2"]).recipe
    assert parse_recipe(dump_recipe(r), "ck.pth (saved recipe)") == r
    assert parse_recipe("extends: cpu-demo\ntrain:\n  epochs: 2\n", "text") == r
    for text, expected in (
        ("train:\n  epochz: 3\n", "ck.pth (saved recipe): train.epochz: unknown key"),
        ("model:\n  img_size: 100\n", "ck.pth (saved recipe): model.img_size: 100 is not divisible by 32"),
        ("train: [1\n", "ck.pth (saved recipe):2: "),
        ("- a\n", "ck.pth (saved recipe): a recipe is a mapping"),
    ):
        with pytest.raises(RecipeError) as err:
            parse_recipe(text, "ck.pth (saved recipe)")
        assert str(err.value).startswith(expected) and "\n" not in str(err.value), str(err.value)


def test_unknown_key_suggests_the_closest(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "train:\n  epochz: 3\n")
    msg = _error(str(bad))
    assert str(bad) in msg and "train.epochz" in msg and "did you mean 'epochs'" in msg
    assert "did you mean 'augment'" in _error("cpu-demo", ["augmnt.mixup=0"])


def test_wrong_type_and_range(tmp_path):
    msg = _error(str(_write(tmp_path / "t.yaml", "train:\n  batch_size: many\n")))
    assert "train.batch_size" in msg and "expected an integer" in msg and "t.yaml" in msg
    msg = _error(str(_write(tmp_path / "r.yaml", "augment:\n  mixup_prob: 1.5\n")))
    assert "augment.mixup_prob" in msg and "out of range [0.0, 1.0]" in msg
    assert "expected true/false" in _error("cpu-demo", ["model.channels_last=yes please"])
    assert "not one of" in _error("cpu-demo", ["train.precision=fp8"])
    assert "not divisible by 32" in _error("cpu-demo", ["model.img_size=100"])


def test_missing_extends_target_and_loops(tmp_path):
    child = _write(tmp_path / "c.yaml", "extends: nowhere.yaml\n")
    msg = _error(str(child))
    assert "c.yaml" in msg and "extends" in msg and "nowhere.yaml" in msg
    _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    assert "extends loop" in _error(str(tmp_path / "a.yaml"))


def test_error_in_a_parent_names_the_parent(tmp_path):
    _write(tmp_path / "base.yaml", "optim:\n  lrr: 1\n")
    msg = _error(str(_write(tmp_path / "child.yaml", "extends: base.yaml\n")))
    assert "base.yaml: optim.lrr: unknown key" in msg


def test_yaml_syntax_and_shape_errors(tmp_path):
    assert "y.yaml:3" in _error(str(_write(tmp_path / "y.yaml", "train:\n  epochs: [1\n")))
    assert "mapping" in _error(str(_write(tmp_path / "l.yaml", "- a\n- b\n")))
    assert "did you mean 'cpu-demo'" in _error("cpu-dem")
    assert "section.key=value" in _error("cpu-demo", ["epochs"])


def test_hostile_env_names_rejected_values_kept_as_strings():
    r = validate({"env": {"NCCL_ALGO": "Ring", "X": "$(touch PWNED)", "N": 3}})
    assert r.env == {"NCCL_ALGO": "Ring", "X": "$(touch PWNED)", "N": "3"}
    with pytest.raises(RecipeError, match="not a valid environment variable name"):
        validate({"env": {"A;rm -rf /": "1"}})


def test_seed_flag_table_covers_the_seeds_command_line():
    flags = {row[0] for row in seed_flag_table()}
    seed = {
        "--model",
        "--epochs",
        "--batch-size",
        "--opt",
        "--opt-eps",
        "--weight-decay",
        "--lr",
        "--sched",
        "--warmup-epochs",
        "--warmup-lr",
        "--min-lr",
        "--cooldown-epochs",
        "--mixup",
        "--cutmix",
        "--aa",
        "--color-jitter",
        "--reprob",
        "--remode",
        "--repeated-aug",
        "--model-ema",
        "--model-ema-decay",
        "--amp",
        "--drop-path",
        "--drop",
        "--smoothing",
        "--train-interpolation",
        "--mixup-switch-prob",
        "--mixup-mode",
        "--hflip",
        "--scale",
        "--ratio",
        "--seed",
        "--crop-pct",
        "--interpolation",
    }
    assert seed <= flags
    assert yaml.safe_load("x: 1.0e-3")["x"] == 1e-3


def test_readme_flag_table_matches_the_schema():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for flag, key, default in seed_flag_table():
        assert f"| `{flag}` | `{key}` | `{default}` |" in readme, (flag, key)


@pytest.mark.parametrize(
    "text,error",
    [
        ("extends: cpu\noptim:\n  opt: adamz\n", "optim.opt: 'adamz' is not an optimizer timm knows (did you mean"),
        ("extends: cpu\nmodel:\n  name: WaveMLP_X\n", "model.name: unknown model 'WaveMLP_X'"),
        ("extends: cpu\nenv:\n  RANK: '1'\n", "env.RANK: torchrun and Slurm set this variable"),
        ("", "empty file (a recipe sets keys or extends another recipe)"),
        ("extends: cpu\ntrain:\n  epochs: 1\n  epochs: 2\n", ":4: duplicate key 'epochs'"),
        ("extends: cpu\nsched:\n  sched: cosinus\n", "sched.sched: 'cosinus' is not one of"),
    ],
    ids=["optimizer", "model", "env", "empty", "duplicate", "scheduler"],
)
def test_recipes_check_refuses_what_training_would_reject_later(text, error, tmp_path):
    """Names are checked against timm's and the kit's registries, not only the schema."""
    from tests.infra.render_tools import wmlp

    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = wmlp("recipes", "check", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and error in result.stderr, result.stderr


def test_an_unknown_optimizer_stops_training_with_one_line(wmlp_exe, mini_data, tmp_path):
    out = wmlp_train(wmlp_exe, mini_data, tmp_path / "run", "optim.opt=adamz", check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("wmlp: error: optim.opt: 'adamz' is not an optimizer")
    assert "Traceback" not in out.stderr
