"""Property-based misuse of `aggan train`: command-line options, TOML files, and the config.json of a run
being resumed. Whatever is drawn, the answer is exit 0 with a run folder that loads, or exit 1 (one
`error:` line) or 2 (a usage error), never a traceback; and no input file is changed.

The values come from the configuration fields themselves (config.py): each field's bounds give valid
values just inside and invalid ones just outside, its type gives wrong-typed ones, so a new option is
fuzzed without touching this file. Valid draws stay tiny (32 px, ngf 4, one or two steps): a command
that does run finishes in a few seconds on a 2-core machine, and the example counts are small.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggan_cli.checkpoint import load_generators
from aggan_cli.config import all_fields

from test_cli_misuse import check as clear_answer
from test_cli_misuse import invoke
from test_train import train_tiny

FUZZ = settings(max_examples=15, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BASE = {"image_size": 32, "ngf": 4, "n_blocks": 1, "ndf": 4, "workers": 0, "steps": 1}  # tiny, unless drawn
COSTLY = {"image_size", "ngf", "ndf", "n_blocks", "batch_size", "steps", "epochs", "load_size", "workers", "pool_size",
          "save_every", "sample_every", "log_every", "d_layers", "d_batch"}  # valid draws of these stay at their smallest
SKIPPED = {"domain_a", "domain_b", "runs_dir", "demo", "compile"}  # set by the test, or minutes of work when valid


def valid_values(field) -> list:
    """Values just inside the field's rules (typed, as in a TOML file)."""
    o = field.option
    if field.kind is bool:
        return [True, False]
    if field.kind is str:
        return list(o.choices) if o.choices else {"device": ["cpu"], "name": ["custom", "ünï code", "with space"]}.get(
            field.name, ["x"])
    low = o.low if o.low is not None else (o.above + (1 if field.kind is int else 1e-4) if o.above is not None else 0)
    step = o.multiple or 1
    low = math.ceil(low / step) * step
    values = [low] if field.name in COSTLY else [low, low + step]
    if field.name == "image_size":
        values = [32]  # the smallest size the PatchGAN of depth 3 takes
    return [field.kind(v) for v in values]


def invalid_values(field) -> list:
    """Values just outside the field's rules, and of the wrong type."""
    o = field.option
    wrong_type = {bool: ["yes", 1], int: ["3", 2.5, True], float: ["1e-3", True], str: [5, ["cpu"]]}[field.kind]
    out = list(wrong_type)
    if o.low is not None:
        out.append(o.low - (o.multiple or 1))
    if o.high is not None:
        out.append(o.high + (o.multiple or 1))
    if o.above is not None:
        out.append(o.above)
    if o.below is not None:
        out.append(o.below)
    if o.multiple:
        out.append((o.low or 0) + 1)
    if field.kind is float:
        out += [float("nan"), float("inf")]
    if field.kind is str and o.choices:
        out.append("no-such-" + field.name)
    if field.name == "name":
        out += ["a/b", "..", "x" * 300, " padded "]
    return out


FIELDS = {f.name: f for f in all_fields() if f.name not in SKIPPED}


def flag_args(field, value) -> list[str]:
    """``value`` as the command line says it."""
    if field.kind is bool and isinstance(value, bool):
        return [field.flag] if value else [f"--no-{field.flag[2:]}"]  # every switch has both forms
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else str(value)
    return [field.flag, text]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string, for what is drawn here
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


@st.composite
def changes(draw, *, bad_share: float = 0.5):
    """A few fields with values: valid ones, and up to two drawn from the invalid values."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4, unique=True))
    out = {}
    for i, name in enumerate(names):
        field = FIELDS[name]
        bad = i < 2 and draw(st.booleans())
        out[name] = draw(st.sampled_from(invalid_values(field) if bad else valid_values(field)))
    return out


# ---------------------------------------------------------------------------------------------
# the world: inputs that must never change


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Two domain folders, and a finished one-step run on them to resume."""
    root = tmp_path_factory.mktemp("fuzz")
    run = train_tiny(root, steps=1)
    return {"root": root, "a": root / "neutral", "b": root / "smile", "run": run}


def base_args(values: dict) -> list[str]:
    return [arg for name, value in values.items() for arg in flag_args(FIELDS[name], value)]


def hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def check(result, run_dir: Path, *, steps: int | None) -> None:
    """Exit 0 with a run folder that loads (at the step asked for), or one clear line."""
    clear_answer(result)
    if result.exit_code == 0:
        config = json.loads((run_dir / "config.json").read_text())
        if steps is not None:
            assert config["step"] == steps, config["step"]
        load_generators(run_dir)  # whole, consistent and loadable by translate


def train(*args, cwd: Path):
    return invoke(["train", *map(str, args)], cwd)


def fresh(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["root"]))


def run_name(values: dict) -> str:
    return values.get("name") if isinstance(values.get("name"), str) and values.get("name") else "smile"


def expected_steps(values: dict) -> int | None:
    if "epochs" in values:
        return None  # epochs × steps per epoch: the count is checked by the run loading
    return values.get("steps", BASE["steps"]) if isinstance(values.get("steps", 1), int) else None


# ---------------------------------------------------------------------------------------------


@given(drawn=changes())
@example(drawn={"ngf": 100_000})
@example(drawn={"name": "x" * 300})
@example(drawn={"steps": 1, "epochs": 1})
@FUZZ
def test_train_options(world, drawn):
    here = fresh(world)
    inputs = hashes(world["a"], world["b"])
    values = {**BASE, **drawn}
    if "epochs" in drawn:
        values.pop("steps")
    result = train(world["a"], world["b"], "--runs-dir", here / "runs", *base_args(values), "--quiet", cwd=here)
    check(result, here / "runs" / run_name(values), steps=expected_steps(values))
    assert hashes(world["a"], world["b"]) == inputs


@given(drawn=changes(), tables=st.booleans(), kebab=st.booleans(), unknown=st.sampled_from([False, False, False, True]))
@example(drawn={"demo": "no"}, tables=False, kebab=False, unknown=False)
@example(drawn={"flip": "no", "pool_size": True}, tables=True, kebab=True, unknown=False)
@FUZZ
def test_toml_files(world, drawn, tables, kebab, unknown):
    here = fresh(world)
    values = {**BASE, **drawn}
    if "epochs" in drawn:
        values.pop("steps")
    sections: dict[str, list[str]] = {"": [], "model": [], "train": []}
    for name, value in values.items():
        key = name.replace("_", "-") if kebab else name
        sections[FIELDS[name].section if tables else ""].append(f"{key} = {toml_value(value)}")
    if unknown:
        sections[""].insert(0, "warmup = 3")
    text = "\n".join(sections[""]) + "".join(f"\n[{t}]\n" + "\n".join(sections[t]) for t in ("model", "train")
                                              if sections[t])
    config = here / "train.toml"
    config.write_text(text + "\n", encoding="utf-8")
    inputs = hashes(world["a"], world["b"], here)
    result = train(world["a"], world["b"], "--runs-dir", here / "runs", "--config", config, "--quiet", cwd=here)
    check(result, here / "runs" / run_name(values), steps=expected_steps(values))
    if unknown:
        assert result.exit_code == 1 and "warmup" in result.output
    assert {k: v for k, v in hashes(world["a"], world["b"], here).items() if k in inputs} == inputs


JSON_VALUES = [None, True, 0, -1, 1, 2, 3.5, float("nan"), "x", "", [], {}, [1], {"a": 1}, 10 ** 30, "ünï"]


@st.composite
def config_edits(draw):
    """Up to three edits of a saved config.json: a known or unknown key of a section set to any JSON value,
    or a whole section replaced, removed or set to a wrong shape."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "unknown", "section"]))
        if kind == "field":
            name = draw(st.sampled_from(sorted(FIELDS)))
            field = FIELDS[name]
            value = draw(st.sampled_from(JSON_VALUES + valid_values(field) + invalid_values(field)))
            edits.append((field.section, name, value))
        elif kind == "unknown":
            section, value = draw(st.sampled_from(["model", "train"])), draw(st.sampled_from(JSON_VALUES))
            edits.append((section, "from_the_future", value))
        else:
            section, value = draw(st.sampled_from(["model", "train"])), draw(st.sampled_from(["missing", [], "x", 5]))
            edits.append((section, None, value))
    return edits


@given(edits=config_edits())
@example(edits=[("train", "from_the_future", 1)])
@example(edits=[("train", None, [])])
@example(edits=[("model", None, "missing")])
@example(edits=[("domains", None, [])])
@example(edits=[("train", "lambda_pixel", 2.0), ("train", "demo", False)])  # valid: an old config.json's demo
@FUZZ
def test_resume_config_json(world, edits):
    here = fresh(world)
    run = here / "runs" / "smile"
    shutil.copytree(world["run"], run)
    config_path = run / "config.json"
    config = json.loads(config_path.read_text())
    for section, key, value in edits:
        if key is None:
            if value == "missing":
                config.pop(section, None)
            else:
                config[section] = value
        elif isinstance(config.get(section), dict):
            config[section][key] = value
    config_path.write_text(json.dumps(config))
    inputs = hashes(world["a"], world["b"], run)
    result = train("--name", "smile", "--resume", "--runs-dir", here / "runs", "--steps", "2", "--quiet", cwd=here)
    check(result, run, steps=None)
    assert hashes(world["a"], world["b"]) == {k: v for k, v in inputs.items() if "/runs/" not in k}
    if result.exit_code != 0:
        assert hashes(run) == {k: v for k, v in inputs.items() if k.startswith(str(run))}  # nothing written
