"""Recipe files -> a validated ``Recipe``: ``extends`` chains, ``--set`` overrides, one-line errors.

Every error names the file, the key path and the problem, e.g.
``recipes/x.yaml: train.epochz: unknown key (did you mean 'epochs'?)``.

Runs inside images: Python 3.8 syntax.
"""

import copy
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from ..errors import KitError
from ..resources import resource_dir
from .schema import SITE_KEYS, Recipe

SUFFIXES = (".yaml", ".yml")


class RecipeError(KitError):
    pass


def shipped_recipes() -> Dict[str, Path]:
    """The recipes that ship with the kit, by name (file stem)."""
    folder = resource_dir("recipes")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_recipe(ref: str, relative_to: Optional[Path] = None) -> Path:
    """A recipe by path (absolute, or relative to the extending file / cwd) or by shipped name."""
    candidates = []
    path = Path(ref).expanduser()
    if relative_to is not None and not path.is_absolute():
        candidates.append(relative_to / path)
    candidates.append(path)
    if not path.suffix:
        candidates += [c.with_suffix(s) for c in list(candidates) for s in SUFFIXES]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    shipped = shipped_recipes()
    if ref in shipped:
        return shipped[ref]
    close = difflib.get_close_matches(ref, list(shipped), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecipeError(
        "recipe '{}' not found as a file or a shipped recipe{}; shipped: {}".format(ref, hint, ", ".join(shipped))
    )


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key {!r}".format(key), key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(f"{source}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def _read_yaml(path: Path, empty_ok: bool = False) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (UTF-8)") from None
    if not empty_ok and not text.strip("\ufeff \t\r\n"):
        # An empty recipe would be every default: the seed's ImageNet run, whatever the file was meant to be.
        raise RecipeError(f"{path}: empty file (a recipe sets keys or extends another recipe)")
    return _parse_yaml(text, str(path))


def deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "env":
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = dict(out[key], **value)  # env: child adds to and overrides the parent's variables
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_chain(path: Path, _seen: Tuple[Path, ...] = ()) -> Tuple[Dict[str, Any], List[Path]]:
    """The merged raw mapping of a recipe and its ``extends`` ancestors (parents first)."""
    if path in _seen:
        raise RecipeError("{}: extends loop ({})".format(path, " -> ".join(str(p) for p in _seen + (path,))))
    data, parents = _merge_parents(_read_yaml(path), str(path), path.parent, _seen + (path,))
    return data, parents + [path]


def _merge_parents(
    data: Dict[str, Any], source: str, folder: Optional[Path], seen: Tuple[Path, ...]
) -> Tuple[Dict[str, Any], List[Path]]:
    """One file's mapping merged over the chain its ``extends`` names, and the files of that chain."""
    parent_ref = data.pop("extends", None)
    validate_partial(data, source)  # so an error names the file that holds the bad key
    if parent_ref is None:
        return data, []
    if not isinstance(parent_ref, str) or not parent_ref:
        raise RecipeError(f"{source}: extends: expected a recipe name or path, got {parent_ref!r}")
    try:
        parent_path = find_recipe(parent_ref, relative_to=folder)
    except RecipeError:
        where = f"relative to {folder} or as a shipped recipe" if folder is not None else "as a file or shipped recipe"
        raise RecipeError(f"{source}: extends: '{parent_ref}' not found ({where})") from None
    parent, chain = read_chain(parent_path, seen)
    return deep_merge(parent, data), chain


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``train.epochs=1`` -> (['train', 'epochs'], 1); the value is read as YAML (1, 0.5, true, [a, b])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {text}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # a plain string that YAML cannot read (e.g. 'a: b: c') is taken as it is
    return key.split("."), value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {text}: '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


# --- validation -----------------------------------------------------------------------------------


def _type_name(tp) -> str:
    origin = typing.get_origin(tp) if hasattr(typing, "get_origin") else getattr(tp, "__origin__", None)
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _args(tp):
    return getattr(tp, "__args__", ()) or ()


def _origin(tp):
    return getattr(tp, "__origin__", None)


def _check_value(value: Any, tp, where: str) -> Any:
    """The value converted to the field's type, or a RecipeError saying what was expected."""
    if _origin(tp) is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in _args(tp) if a is not type(None)][0]
        return _check_value(value, inner, where)
    if _origin(tp) in (list, List):
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        item = _args(tp)[0]
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if _origin(tp) in (dict, Dict):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k.replace("_", "").isalnum() or k[0].isdigit():
                raise RecipeError(f"{where}: '{k}' is not a valid environment variable name")
            if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
                raise RecipeError(f"{where}.{k}: expected a string or number, got {v!r}")
            out[k] = str(v)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads '1e-3' (no dot) as a string: accept numeric strings of that form.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise RecipeError(f"{where}: unsupported field type {tp}")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise RecipeError("{}: expected a mapping of keys, got {!r}".format(where or "recipe", data))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            if path in SITE_KEYS:
                raise RecipeError(
                    f"{path}: a site setting: put it in a site file as '{SITE_KEYS[path]}' (wmlp sites), "
                    "or pass the flag to wmlp slurm"
                )
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{path}: unknown key{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, path)
            continue
        value = _check_value(value, tp, path)
        meta = fields[key].metadata
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise RecipeError("{}: {!r} is not one of {}".format(path, value, ", ".join(repr(c) for c in choices)))
        rng = meta.get("range")
        if rng is not None and value is not None:
            lo, hi = rng
            if not lo <= value <= hi:
                raise RecipeError(f"{path}: {value!r} is out of range [{lo}, {hi}]")
        kwargs[key] = value
    return cls(**kwargs)


def _cross_checks(recipe: Recipe) -> None:
    """Constraints between fields, reported like single-field ones."""
    if recipe.model.img_size % 32:
        raise RecipeError(f"model.img_size: {recipe.model.img_size} is not divisible by 32")
    for key in ("scale", "ratio"):
        pair = getattr(recipe.augment, key)
        if len(pair) != 2 or pair[0] > pair[1] or pair[0] <= 0:
            raise RecipeError(f"augment.{key}: expected [low, high] with 0 < low <= high, got {pair}")
    for key in ("mean", "std"):
        if len(getattr(recipe.data, key)) != 3:
            raise RecipeError(f"data.{key}: expected 3 values (RGB)")
    import signal as _signal

    for name in recipe.train.requeue_signals:
        if not hasattr(_signal, name) or not name.startswith("SIG"):
            raise RecipeError(f"train.requeue_signals: {name!r} is not a signal name (e.g. SIGTERM, SIGUSR1)")


def validate_partial(data: Dict[str, Any], source: str) -> None:
    """Keys, types and ranges of one file of a chain (cross-field checks wait for the merge)."""
    try:
        _build(Recipe, data, "")
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None


def validate(data: Dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        recipe = _build(Recipe, data, "")
        _cross_checks(recipe)
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    return recipe


class LoadedRecipe(typing.NamedTuple):
    recipe: Recipe
    name: str
    chain: List[Path]  # the files read, parents first
    overrides: List[str]


def load_recipe(ref, overrides: Sequence[str] = (), overlay: Optional[Dict[str, Any]] = None) -> LoadedRecipe:
    """Read, merge, override and validate a recipe given by path or shipped name.

    ``overlay`` (a site's contribution, e.g. its env) goes over the file chain and under ``--set``:
    what the user types last wins."""
    path = find_recipe(str(ref))
    data, chain = read_chain(path)
    data.pop("extends", None)
    if overlay:
        data = deep_merge(data, overlay)
    data = apply_overrides(data, overrides)
    source = str(path) if not overrides else "{} (with --set {})".format(path, " ".join(overrides))
    return LoadedRecipe(validate(data, source), path.stem, chain, list(overrides))


def parse_recipe(text: str, source: str = "recipe") -> Recipe:
    """A recipe from YAML text (a run folder's or a checkpoint's saved recipe), read and validated as a
    file is; ``source`` names where the text came from in every error."""
    data, _ = _merge_parents(_parse_yaml(text, source), source, None, ())
    return validate(data, source)


def dump_recipe(recipe: Recipe) -> str:
    """YAML that loads back into an equal recipe: what a run folder keeps to be repeated."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None, width=100)
