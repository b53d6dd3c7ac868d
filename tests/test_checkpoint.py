"""Run folders: round trip, strict keys, damaged files, newer formats, no pickles."""

from __future__ import annotations

import json

import pytest
import torch

from aggan_cli.checkpoint import (
    atomic_write_text,
    flatten_state,
    load_generators,
    load_training_state,
    save_run,
    unflatten_state,
)
from aggan_cli.config import ModelConfig
from aggan_cli.errors import CheckpointError
from aggan_cli.networks import AGGAN

CFG = ModelConfig(ngf=8, n_blocks=1, ndf=8, image_size=32)


def _saved(tmp_path, **kw):
    torch.manual_seed(0)
    model = AGGAN(CFG)
    run = save_run(tmp_path / "run", model_config=CFG, g_ab=model.g_ab, g_ba=model.g_ba, step=7,
                   domains=("neutral", "smile"), **kw)
    return model, run


def test_round_trip_gives_identical_outputs(tmp_path):
    model, run = _saved(tmp_path)
    g_ab, g_ba, ckpt = load_generators(run)
    assert ckpt.domains == ("neutral", "smile") and ckpt.step == 7
    assert ckpt.model_config == CFG  # rebuilt from config.json alone: no flags repeated
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    model.eval()
    with torch.no_grad():
        for a, b in ((model.g_ab, g_ab), (model.g_ba, g_ba)):
            for ta, tb in zip(a(x), b(x)):
                assert torch.equal(ta, tb)
    # the weights file path works as well as the folder
    load_generators(run / "model.safetensors")


def test_training_state_round_trip_without_pickle(tmp_path):
    state = {"step": 7, "opt": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 1e-3, "betas": (0.5, 0.9)}]},
             "rng": torch.get_rng_state(), "pool": [torch.zeros(1, 3, 2, 2)], "none": None, "inf": float("inf")}
    _, run = _saved(tmp_path, training_state=state)
    back = load_training_state(run, expected_step=7)
    assert back["opt"]["state"][0]["exp_avg"].tolist() == [1.0, 1.0]
    assert back["opt"]["param_groups"][0]["betas"] == (0.5, 0.9)
    assert torch.equal(back["rng"], state["rng"]) and back["none"] is None and back["inf"] == float("inf")
    tensors, skeleton = flatten_state(state)
    assert unflatten_state(json.loads(json.dumps(skeleton)), tensors)["step"] == 7


def test_the_same_weights_saved_twice_are_the_same_bytes(tmp_path):
    """safetensors writes header metadata in hash-map order, which changes from call to call; the saved
    files must not, so that a retrained checkpoint can match a published sha256."""
    from safetensors import safe_open

    from aggan_cli.checkpoint import _serialise

    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.float16)}
    metadata = {key: f"value of {key}: \"quoted\", ünïcode, \n" for key in "hgfedcba"}
    first = _serialise(tensors, metadata)
    assert all(_serialise(tensors, dict(reversed(metadata.items()))) == first for _ in range(5))
    assert int.from_bytes(first[:8], "little") % 8 == 0  # the header stays padded as safetensors pads it
    (tmp_path / "w.safetensors").write_bytes(first)
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata
        assert torch.equal(f.get_tensor("b"), tensors["b"]) and torch.equal(f.get_tensor("a"), tensors["a"])
    state = {"step": 7, "pool": [torch.zeros(1, 3, 2, 2)], "betas": (0.5, 0.9)}
    runs = [save_run(tmp_path / f"run{i}", model_config=CFG, g_ab=_saved(tmp_path)[0].g_ab,
                     g_ba=_saved(tmp_path)[0].g_ba, step=7, training_state=state) for i in range(3)]
    for name in ("model.safetensors", "training-state.safetensors"):
        assert len({(run / name).read_bytes() for run in runs}) == 1, name


def test_the_bundled_checkpoint_is_saved_as_a_retrained_one_would_be():
    from importlib.resources import files

    from aggan_cli.checkpoint import canonical_header

    data = (files("aggan_cli") / "bundled" / "demo-smile" / "model.safetensors").read_bytes()
    assert canonical_header(data) == data


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_weights_raise_a_clear_error(tmp_path, damage):
    _, run = _saved(tmp_path)
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"not a tensor file" * 10}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_generators(run)


def test_newer_format_is_refused_with_upgrade_hint(tmp_path):
    _, run = _saved(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["format_version"] = 99
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format 99.*upgrade"):
        load_generators(run)


def test_missing_config_and_bad_json(tmp_path):
    _, run = _saved(tmp_path)
    (run / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_generators(run)
    (run / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_generators(run)


def test_architecture_mismatch_and_extra_keys_are_refused(tmp_path):
    _, run = _saved(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["ngf"] = 16
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape"):
        load_generators(run)


def test_pickle_files_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_generators(evil)
    assert not marker.exists()


def test_interrupted_save_is_detected(tmp_path):
    _, run = _saved(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["step"] = 3  # config.json from an older save next to newer weights
    atomic_write_text(run / "config.json", json.dumps(config))
    with pytest.raises(CheckpointError, match="interrupted"):
        load_generators(run)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from aggan_cli.checkpoint import atomic_write

    target = tmp_path / "f.txt"
    target.write_text("old")

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------
# hostile or damaged checkpoints cost nothing and get one line


def _edit_config(run, **model):
    config = json.loads((run / "config.json").read_text())
    config["model"].update(model)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("model, message", [
    ({"n_blocks": 100_000_000}, "n_blocks must be a whole number from 0 to 32"),  # beyond ModelConfig's bounds
    ({"ngf": 1_000_000_000}, "ngf must be a whole number from 1 to 256"),
    ({"ngf": 10 ** 30}, "ngf must be a whole number from 1 to 256"),
    ({"ngf": 256, "n_blocks": 32}, "do not belong together"),  # within the bounds, but not this weight file's
])
def test_a_config_asking_for_a_huge_network_is_refused_before_building_it(tmp_path, model, message):
    import resource
    import time

    _, run = _saved(tmp_path)
    _edit_config(run, **model)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.process_time()
    with pytest.raises(CheckpointError, match=message) as caught:
        load_generators(run)
    assert "config.json" in str(caught.value)
    # nothing was built: no memory (the peak did not grow by 100 MB) and no time to speak of
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000
    assert time.process_time() - start < 30


@pytest.mark.parametrize("content, message", [
    ('{"format_version": 1, "step": 1%s}' % ("0" * 5000), "cannot read"),
    ('{"format_version": 1, "model": %s1%s}' % ("[" * 100_000, "]" * 100_000), "nested too deeply"),
])
def test_a_hostile_config_json_is_one_line(tmp_path, content, message):
    _, run = _saved(tmp_path)
    (run / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_generators(run)
    assert "config.json" in str(caught.value) and "\n" not in str(caught.value)


def test_weights_holding_nan_or_infinity_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _, run = _saved(tmp_path)
    weights = run / "model.safetensors"
    for bad in (float("nan"), float("inf")):
        tensors = load_file(weights)
        tensors["g_ba.net.1.weight"][0, 0, 0, 0] = bad
        save_file(tensors, weights, metadata={"format_version": "1", "step": "7"})
        with pytest.raises(CheckpointError, match=r"g_ba\.net\.1\.weight holds NaN or infinite values"):
            load_generators(run)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_weights_that_are_a_folder_or_a_fifo_are_named_as_such_and_never_opened(tmp_path, kind):
    import os

    _, run = _saved(tmp_path)
    weights = run / "model.safetensors"
    weights.unlink()
    if kind == "folder":
        weights.mkdir()
    else:
        os.mkfifo(weights)  # opening it for reading would wait for a writer forever
    expected = "is a folder, not a file" if kind == "folder" else "is not a regular file"
    for target in (run, weights):
        if kind == "folder" and target == weights:
            continue  # a folder named model.safetensors is taken for a run folder: no config.json in it
        with pytest.raises(CheckpointError, match=expected) as caught:
            load_generators(target)
        assert "does not exist" not in str(caught.value)
