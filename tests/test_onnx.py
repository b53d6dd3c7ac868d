"""``aggan export`` to ONNX and the onnxruntime backend: the same pictures as PyTorch, and no torch.

Parity (issue 12): for the bundled demo-smile and for tiny trained checkpoints with instance and with
batch norm, at 32×32, 48×80, the training size and an odd size (the padding path), onnxruntime and
PyTorch give masks within 1e-4 and images within one grey level; wherever the mask is 0, both give
the input's pixels exactly. Exports take seconds each (torch.export), so each is made once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from aggan_cli import OnnxTranslator, Translator
from aggan_cli.cli import app
from aggan_cli.errors import CheckpointError, ConfigError, DeviceError
from aggan_cli.export import export_onnx
from aggan_cli.weights import REGISTRY, sha256_of
from hub_server import run_files
from images import photo_array, write_checkpoint, write_mode, write_rgb
from test_hub import hub  # noqa: F401 - the fixture: a local Hub server that HF_ENDPOINT points at
from test_reliability import assert_one_line_error
from test_train import make_domains

runner = CliRunner()
DEMO_SHA = REGISTRY["demo-smile"].sha256
MASK_LIMIT = 1e-4


def aggan(*args, **kw):
    result = runner.invoke(app, [str(a) for a in args], **kw)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


# ---------------------------------------------------------------------------------------------
# checkpoints and their exports, made once


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """An AGGAN_HOME in which ``aggan export demo-smile`` ran, with the command's result: the
    module-scoped fixture sets the environment itself (the autouse isolation is per test)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGGAN_HOME", str(home))
        mp.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        result = aggan("export", "demo-smile")
    assert result.exit_code == 0, result.output
    return home, result


@pytest.fixture(scope="module")
def demo_export(demo_home) -> Path:
    return demo_home[0] / "onnx" / f"demo-smile-{DEMO_SHA[:12]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny runs trained for three steps at 40 px, one per norm, one with the resize decoder and one
    with the learned guide mix, each exported (a2b) into RUN/onnx."""
    root = tmp_path_factory.mktemp("trained")
    a, b = make_domains(root)
    runs = {}
    for name, norm, upsample, *mix in (("instance", "instance", "transposed"), ("batch", "batch", "transposed"),
                                       ("resize", "instance", "resize"), ("guide-mix", "instance", "resize", "--guide-mix")):
        result = aggan("train", a, b, "--name", name, "--runs-dir", root / "runs", "--steps", "3", "--size", "40",
                       "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--norm", norm, "--upsample", upsample,
                       *mix, "--workers", "0", "--quiet")
        assert result.exit_code == 0, result.output
        run = root / "runs" / name
        export_onnx(run, direction="a2b")
        runs[name] = run
    return runs


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A checkpoint whose mask is exactly 0 on part of every image (images.write_checkpoint), its a2b
    generator exported by ``aggan export RUN --direction a2b --out DEPLOY``: (run, deploy, result)."""
    root = tmp_path_factory.mktemp("split")
    run = write_checkpoint(root / "run", mask="split")
    result = aggan("export", run, "--direction", "a2b", "--out", root / "deploy")
    assert result.exit_code == 0, result.output
    return run, root / "deploy", result


def backends(ckpt, export, **kw):
    return (Translator.load(ckpt, device="cpu", **kw), OnnxTranslator.load(export, device="cpu", **kw))


def gray(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# parity


SIZES = {"32x32": ((32, 32), "auto"), "48x80": ((80, 48), "auto"), "training size": (None, "auto"),
         "odd, resized": ((37, 29), "auto"), "odd, native": ((37, 29), "native")}


@pytest.mark.parametrize("which", ["demo-smile", "instance", "batch", "resize", "guide-mix"])
def test_onnxruntime_gives_the_pictures_pytorch_gives(which, demo_export, trained, request):
    # a trained run is named by its folder: the backend finds RUN/onnx and checks it is from these weights
    ckpt, export = ("demo-smile", demo_export) if which == "demo-smile" else (trained[which], trained[which])
    for name, (size, mode) in SIZES.items():
        torch_t, onnx_t = backends(ckpt, export, size=mode)
        size = size or (torch_t.image_size, torch_t.image_size)
        photo = photo_array(size, seed=7)
        want, got = torch_t.translate(photo), onnx_t.translate(photo)
        assert got.image.size == want.image.size == size, name
        assert np.abs(got.mask - want.mask).max() <= MASK_LIMIT, name
        assert np.abs(gray(got.image) - gray(want.image)).max() <= 1, name
        assert np.abs(gray(got.content) - gray(want.content)).max() <= 1, name
        kept = want.mask == 0
        assert np.array_equal(gray(got.image)[kept], photo[kept]) and np.array_equal(gray(want.image)[kept], photo[kept])


def test_where_the_mask_is_zero_both_backends_return_the_input_bit_for_bit(split):
    run, deploy, _ = split
    torch_t, onnx_t = backends(run, deploy)
    for size in ((32, 32), (80, 48), (37, 29)):
        photo = photo_array(size, seed=2)
        want, got = torch_t.translate(photo), onnx_t.translate(photo)
        kept = want.mask == 0
        assert 0.1 < kept.mean() < 0.9  # a real mix of kept and edited pixels (a sixth to two thirds)
        assert np.array_equal(gray(want.image)[kept], photo[kept])
        assert np.array_equal(gray(got.image)[kept], photo[kept])
        assert np.abs(gray(got.image) - gray(want.image)).max() <= 1


class RecordedSession:
    """An onnxruntime session that notes the batch size of every run."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feed, *options):
        self.batches.append(feed["image"].shape[0])
        return self.session.run(names, feed, *options)


def test_the_cpu_runs_one_image_per_pass_on_onnxruntime_too(demo_export, tmp_path, monkeypatch):
    sizes = [(301, 177), (37, 53), (64, 64), (602, 354), (38, 53)]  # 301×177 and 602×354: both 82×48 at 48 px
    paths = [write_rgb(tmp_path / f"{i}.png", size, seed=i) for i, size in enumerate(sizes)]
    t = OnnxTranslator.load(demo_export, device="cpu")
    single = {p: t.translate(p) for p in paths}
    t._sessions["a2b"] = recorded = RecordedSession(t._sessions["a2b"])
    batched = dict(t.translate_many(paths, batch_size=4, workers=2))
    assert recorded.batches == [1] * len(paths)  # as on PyTorch: --batch-size changes nothing on the CPU
    for p in paths:
        assert np.array_equal(gray(batched[p].image), gray(single[p].image)), p.name
    # where batching is allowed (a GPU), images of equal working size share a run and still come out right
    monkeypatch.setattr(OnnxTranslator, "images_per_pass", lambda self, batch_size: batch_size)
    recorded.batches.clear()
    batched = dict(t.translate_many(paths, batch_size=4, workers=2))
    assert sorted(recorded.batches) == [1, 1, 1, 2]
    for p in paths:
        assert np.abs(gray(batched[p].image) - gray(single[p].image)).max() <= 1, p.name
        assert np.abs(batched[p].mask - single[p].mask).max() <= MASK_LIMIT, p.name


def test_both_directions_and_alpha_match(demo_export, tmp_path):
    torch_t, onnx_t = backends("demo-smile", demo_export)
    path = write_mode(tmp_path / "clear.png", "RGBA", (45, 29))
    for direction in ("a2b", "b2a"):
        want, got = torch_t.translate(path, direction=direction), onnx_t.translate(path, direction=direction)
        assert got.image.mode == want.image.mode == "RGBA"
        assert np.array_equal(np.asarray(got.image)[..., 3], np.asarray(want.image)[..., 3])
        assert np.abs(gray(got.image) - gray(want.image)).max() <= 1
        assert got.direction == direction and onnx_t.label(direction) == torch_t.label(direction)


def test_translate_and_export_masks_write_the_same_files_with_either_backend(demo_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AGGAN_HOME", str(demo_home[0]))
    src = tmp_path / "in"
    write_rgb(src / "a.jpg", (61, 47))
    write_mode(src / "deep" / "b.png", "RGBA", (33, 40))
    runs = {"translated": ["translate"], "masks": ["export-masks", "--content", "--threshold", "0.5"],
            "npy": ["export-masks", "--format", "npy", "--no-overlay"]}
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        for folder, (command, *options) in runs.items():
            result = aggan(command, src, "--out", out / folder, "--backend", backend, "--device", "cpu", "--quiet",
                           *options)
            assert result.exit_code == 0, result.output
        outputs[backend] = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs["torch"].keys() == outputs["onnxruntime"].keys()
    assert {"translated/deep/b.png", "masks/a_content.png", "npy/a_mask.npy"} <= outputs["torch"].keys()
    for name, path in outputs["torch"].items():
        other = outputs["onnxruntime"][name]
        if name.endswith(".npy"):
            assert np.abs(np.load(path) - np.load(other)).max() <= MASK_LIMIT
        else:
            a, b = Image.open(path), Image.open(other)
            assert (a.mode, a.size) == (b.mode, b.size), name
            assert np.abs(gray(a) - gray(b)).max() <= 1, name


# ---------------------------------------------------------------------------------------------
# the exported files


def test_export_writes_self_describing_files_with_dynamic_height_and_width(demo_home, demo_export):
    home, result = demo_home
    files = [demo_export / "g_ab.onnx", demo_export / "g_ba.onnx"]
    assert [Path(line) for line in result.stdout.splitlines()] == files  # stdout: the written paths only
    assert "--backend onnxruntime" in result.stderr
    for path, direction in zip(files, ("a2b", "b2a")):
        model = onnx.load(path)
        assert model.opset_import[0].version == 18
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["aggan.direction"] == direction
        assert (meta["aggan.domain_a"], meta["aggan.domain_b"]) == ("neutral", "smile")
        assert meta["aggan.image_size"] == "48" and meta["aggan.normalisation"] == "pixel / 127.5 - 1"
        assert meta["aggan.checkpoint_sha256"] == DEMO_SHA and meta["aggan.version"]
        assert json.loads(meta["aggan.model"])["ngf"] == 16
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*model.graph.input, *model.graph.output]}
        assert dims == {"image": ["batch", 3, "4*h", "4*w"], "mask": ["batch", 1, "4*h", "4*w"],
                        "content": ["batch", 3, "4*h", "4*w"]}


def test_a_hub_checkpoint_exports_into_the_cache_and_translates_by_name(hub, tmp_path, monkeypatch):
    run = write_checkpoint(tmp_path / "run")
    hub.add_commit("org/tiny", run_files(run), ref="main")
    result = aggan("export", "org/tiny", "--direction", "a2b")
    assert result.exit_code == 0, result.output
    folder = Path(os.environ["AGGAN_HOME"]) / "onnx" / f"org--tiny-{sha256_of(run / 'model.safetensors')[:12]}"
    assert [Path(line) for line in result.stdout.splitlines()] == [folder / "g_ab.onnx"]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the backend finds it without the network
    photo = write_rgb(tmp_path / "p.png", (40, 32))
    result = aggan("translate", photo, "--ckpt", "org/tiny", "--backend", "onnxruntime", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert str(folder / "g_ab.onnx") in result.stderr and (tmp_path / "out" / "p.png").is_file()


def test_batch_of_images_at_any_multiple_of_4(demo_export):
    import onnxruntime as ort

    session = ort.InferenceSession(str(demo_export / "g_ab.onnx"), providers=["CPUExecutionProvider"])
    for batch, height, width in ((1, 8, 8), (3, 20, 36), (2, 52, 12)):
        mask, content = session.run(None, {"image": np.zeros((batch, 3, height, width), np.float32)})
        assert mask.shape == (batch, 1, height, width) and content.shape == (batch, 3, height, width)


def test_export_of_one_direction_into_a_chosen_folder(split):
    run, deploy, result = split
    assert sorted(p.name for p in deploy.iterdir()) == ["g_ab.onnx"] and not (run / "onnx").exists()
    assert f"--ckpt {deploy}" in result.stderr  # the hint names the folder to pass
    translator = OnnxTranslator.load(deploy)
    assert translator.label() == "neutral → smile"
    with pytest.raises(CheckpointError, match="--direction b2a"):
        translator.translate(photo_array((32, 32)), direction="b2a")
    with pytest.raises(CheckpointError, match="translates a2b"):  # a single file knows its direction
        OnnxTranslator.load(deploy / "g_ab.onnx", direction="b2a")


# ---------------------------------------------------------------------------------------------
# clear errors


def test_a_checkpoint_that_cannot_be_exported_gets_one_line(split, tmp_path):
    run = tmp_path / "newer"
    shutil.copytree(split[0], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    assert_one_line_error(aggan("export", run), "format 99", "upgrade")
    assert not (run / "onnx").exists()


def test_translating_with_onnxruntime_before_export_says_how_to_export(tmp_path):
    run = write_checkpoint(tmp_path / "run")
    photo = write_rgb(tmp_path / "p.png", (32, 32))
    result = aggan("translate", photo, "--ckpt", run, "--backend", "onnxruntime", "--out", tmp_path / "out")
    assert_one_line_error(result, "no ONNX export", f"aggan export {run}")
    assert_one_line_error(aggan("translate", photo, "--backend", "onnxruntime", "--out", tmp_path / "out"),
                          "aggan export demo-smile")  # the default --ckpt, not exported in this AGGAN_HOME


def test_an_empty_ckpt_is_an_error_on_onnxruntime_too_not_the_current_folder(demo_export, tmp_path, monkeypatch):
    shutil.copy(demo_export / "g_ab.onnx", tmp_path)  # an export in the current folder must not be picked up
    monkeypatch.chdir(tmp_path)
    photo = write_rgb(tmp_path / "p.png", (32, 32))
    result = aggan("translate", photo, "--ckpt", "", "--backend", "onnxruntime", "--out", tmp_path / "out")
    assert_one_line_error(result, "checkpoint name is empty")
    assert not (tmp_path / "out").exists()


def test_an_export_from_an_earlier_save_is_refused_unless_named_directly(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["instance"], run)
    write_checkpoint(run, seed=1)  # training went on: new weights, old export
    result = aggan("translate", write_rgb(tmp_path / "p.png", (32, 32)), "--ckpt", run, "--backend", "onnxruntime",
                   "--out", tmp_path / "out")
    assert_one_line_error(result, "earlier save", f"aggan export {run}")
    old = OnnxTranslator.load(run / "onnx")  # the folder itself: used as it is
    assert old.checkpoint.checkpoint_sha256 == sha256_of(trained["instance"] / "model.safetensors")


def test_the_mask_guide_asked_for_is_built_into_the_export_and_checked_when_translating(trained, tmp_path):
    """``aggan export --mask-guide N`` builds that radius into the graph and records it (aggan.mask_guide);
    the onnxruntime backend then gives the torch path's masks for the same radius, says the radius, and
    refuses a --mask-guide the export does not carry. An export from before the record carries the trained
    radius."""
    run = trained["instance"]
    result = aggan("export", run, "--direction", "a2b", "--out", tmp_path / "wide", "--mask-guide", "8")
    assert result.exit_code == 0, result.output
    assert "mask guide a2b 8 px" in result.stderr
    model = onnx.load(tmp_path / "wide" / "g_ab.onnx")
    assert {p.key: p.value for p in model.metadata_props}["aggan.mask_guide"] == "8"
    photo = write_rgb(tmp_path / "p.png", (40, 52))
    wide, narrow = OnnxTranslator.load(tmp_path / "wide"), Translator.load(run, mask_guide=0)
    assert wide.mask_guide() == 8
    got, want = wide.translate(photo).mask, Translator.load(run, mask_guide=8).translate(photo).mask
    assert np.abs(got - want).max() <= MASK_LIMIT
    assert np.abs(got - narrow.translate(photo).mask).max() > 1e-3  # the radius is in the graph
    result = aggan("translate", photo, "--ckpt", tmp_path / "wide", "--backend", "onnxruntime", "--mask-guide", "8",
                   "--out", tmp_path / "out")
    assert result.exit_code == 0 and "mask guide 8 px" in result.stderr, result.output
    result = aggan("translate", photo, "--ckpt", tmp_path / "wide", "--backend", "onnxruntime", "--mask-guide",
                   "trained", "--out", tmp_path / "refused")
    assert_one_line_error(result, "exported with mask guide 8 px, not 3", "aggan export CKPT --mask-guide trained")
    assert not (tmp_path / "refused").exists()
    del model.metadata_props[[p.key for p in model.metadata_props].index("aggan.mask_guide")]
    onnx.save(model, tmp_path / "g_ab.onnx")  # as exported before the radius was recorded
    assert OnnxTranslator.load(tmp_path / "g_ab.onnx").mask_guide() == 3


@pytest.mark.parametrize("key, value, fragment", [
    ("aggan.image_size", "400000", "aggan.image_size 400000"),  # --size auto would run the network at that
    ("aggan.model", "[" * 100_000 + "]" * 100_000, "damaged aggan metadata"),  # json.loads: RecursionError
    ("aggan.mask_guide", "99", "aggan.mask_guide 99"),
    ("aggan.mask_guide", "wide", "damaged aggan metadata"),
], ids=["huge training size", "deeply nested model", "huge mask guide", "mask guide not a number"])
def test_an_export_with_hostile_metadata_is_refused_in_one_line(demo_export, tmp_path, key, value, fragment):
    model = onnx.load(demo_export / "g_ab.onnx")
    next(p for p in model.metadata_props if p.key == key).value = value
    onnx.save(model, tmp_path / "g_ab.onnx")
    photo = write_rgb(tmp_path / "p.png", (32, 32))
    result = aggan("translate", photo, "--ckpt", tmp_path / "g_ab.onnx", "--backend", "onnxruntime", "--out",
                   tmp_path / "out")
    assert_one_line_error(result, str(tmp_path / "g_ab.onnx"), fragment, "export it again")
    assert not (tmp_path / "out").exists()


def test_onnxruntime_backend_refuses_reduced_precision_and_other_devices(demo_export):
    with pytest.raises(ConfigError, match="fp32"):
        OnnxTranslator.load(demo_export, precision="bf16")
    with pytest.raises(DeviceError, match="mps"):
        OnnxTranslator.load(demo_export, device="mps")


# ---------------------------------------------------------------------------------------------
# without torch

BLOCKER = """
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked in this test")

sys.meta_path.insert(0, Blocked())
"""


def run_without_torch(code: str, cwd: Path, env: dict | None = None,
                      blocked: tuple[str, ...] = ("torch",)) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing any of ``blocked`` raises."""
    script = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_the_onnxruntime_path_never_imports_torch(demo_home, demo_export, tmp_path):
    """The Python API and both commands, in a fresh interpreter where ``import torch`` raises."""
    write_rgb(tmp_path / "photo.jpg", (70, 52))
    write_mode(tmp_path / "clear.png", "RGBA", (33, 40))
    code = f"""
        from aggan_cli import OnnxTranslator
        r = OnnxTranslator.load({str(demo_export)!r}).translate("photo.jpg")
        r.image.save("api.png"); r.mask_image().save("api_mask.png")

        from aggan_cli.cli import main
        for argv in (["translate", "photo.jpg", "clear.png", "--out", "t"],
                     ["export-masks", "photo.jpg", "--out", "m", "--content"]):
            sys.argv = ["aggan", *argv, "--backend", "onnxruntime"]  # --ckpt demo-smile: found in AGGAN_HOME
            try:
                main()
            except SystemExit as exit:
                assert exit.code == 0, exit.code
        assert "torch" not in sys.modules
    """
    done = run_without_torch(code, tmp_path, {"AGGAN_HOME": str(demo_home[0])})
    assert done.returncode == 0, done.stderr
    for name in ("api.png", "api_mask.png", "t/photo.png", "t/clear.png", "m/photo_mask.png", "m/photo_overlay.png",
                 "m/photo_content.png"):
        assert (tmp_path / name).is_file(), name
    assert Image.open(tmp_path / "t/clear.png").mode == "RGBA"
    want = Translator.load("demo-smile", device="cpu").translate(tmp_path / "photo.jpg")
    assert np.abs(gray(Image.open(tmp_path / "t/photo.png")) - gray(want.image)).max() <= 1


def aggan_without_torch(cwd: Path, home: Path, *argv: str) -> subprocess.CompletedProcess:
    """``aggan ARGV --backend onnxruntime`` in a fresh interpreter where ``import torch`` raises."""
    code = f"""
        from aggan_cli.cli import main
        sys.argv = ["aggan", *{list(argv)!r}, "--backend", "onnxruntime"]
        try:
            main()
        except SystemExit as exit:
            assert "torch" not in sys.modules
            sys.exit(exit.code)
    """
    return run_without_torch(code, cwd, {"AGGAN_HOME": str(home)})


def test_the_output_rules_hold_on_onnxruntime_without_torch(demo_home, tmp_path):
    """h1's rules on the onnxruntime backend: never over an input, --suffix, --print0, earlier outputs
    left out, the ICC profile carried, a NaN TIFF named and skipped; all without importing torch."""
    from test_translate import _profile

    profile = _profile()
    write_rgb(tmp_path / "photos" / "face.png", (60, 45), icc_profile=profile)
    values = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    values[5, 7] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "photos" / "scan.tif")
    before = sorted(p.name for p in (tmp_path / "photos").iterdir())

    refused = aggan_without_torch(tmp_path, demo_home[0], "translate", "photos", "--out", "photos")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 1 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "would be written over the input photos/face.png" in errors[0] and "--suffix" in errors[0]
    assert refused.stdout == "" and sorted(p.name for p in (tmp_path / "photos").iterdir()) == before

    for run in (1, 2):  # the second run finds the first one's output among its inputs, and leaves it out
        done = aggan_without_torch(tmp_path, demo_home[0], "translate", "photos", "--out", "photos",
                                   "--suffix", "_smile", "--print0")
        assert done.returncode == 1, done.stderr  # the NaN TIFF failed, the photo did not
        assert done.stdout == "photos/face_smile.png\0", (run, done.stdout)
        assert "skipped: photos/scan.tif has 1 NaN or infinite pixel(s)" in done.stderr
        assert ("left out 1 earlier output(s)" in done.stderr) == (run == 2), done.stderr
    with Image.open(tmp_path / "photos" / "face_smile.png") as out:
        assert out.info.get("icc_profile") == profile and out.info.get("Software") == "aggan translate"
        assert out.size == (60, 45)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted([*before, "face_smile.png"])


def test_running_out_of_memory_on_onnxruntime_is_one_line_with_the_sizes(demo_home, tmp_path):
    """A real allocation failure inside onnxruntime (the process may use 600 MB more than it needs to
    start; the demo network at full resolution on a 2,000 × 2,000 photo needs more): one line with the
    sizes and what to lower, as on PyTorch, and none of onnxruntime's own log lines."""
    photo = write_rgb(tmp_path / "big.png", (2000, 2000))
    code = f"""
        import resource
        import PIL.Image, PIL.PngImagePlugin, rich.progress, onnxruntime, numpy
        import aggan_cli.cli, aggan_cli.data, aggan_cli.imaging, aggan_cli.onnx_backend, aggan_cli.translate_cli
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 600_000_000, resource.RLIM_INFINITY))
        sys.argv = ["aggan", "translate", {str(photo)!r}, "--size", "native", "--backend", "onnxruntime",
                    "--device", "cpu", "--out", "out"]
        aggan_cli.cli.main()
    """
    done = run_without_torch(code, tmp_path, {"AGGAN_HOME": str(demo_home[0]), "OMP_NUM_THREADS": "1"})
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "out of memory on cpu translating 1 image(s) of up to 2000×2000 px" in errors[0]
    assert "--size" in errors[0] and "--batch-size" not in errors[0]  # the CPU already runs one at a time
    assert "onnxruntime:" not in done.stderr and "ExecuteKernel" not in done.stderr, done.stderr[-3000:]
    assert done.stdout == "" and not (tmp_path / "out").exists()


def test_the_blocker_does_block_torch(tmp_path):
    """The test above proves something only if the blocker works."""
    done = run_without_torch("import torch.nn", tmp_path)
    assert done.returncode != 0 and "torch is blocked in this test" in done.stderr


def test_the_docs_example_translates_with_onnxruntime_numpy_and_pillow_alone(demo_export, tmp_path):
    """docs/deploy.md's example, run as it is written, with torch and aggan blocked."""
    text = (Path(__file__).parents[1] / "docs" / "deploy.md").read_text(encoding="utf-8")
    example = text.split("## Without aggan: onnxruntime, numpy and Pillow", 1)[1].split("```python\n", 1)[1]
    example = example.split("```", 1)[0]
    shutil.copy(demo_export / "g_ab.onnx", tmp_path)
    write_rgb(tmp_path / "photo.jpg", (203, 151), seed=4)
    done = run_without_torch(example, tmp_path, blocked=("torch", "aggan_cli"))
    assert done.returncode == 0, done.stderr
    got = Image.open(tmp_path / "translated.png")
    want = OnnxTranslator.load(demo_export).translate(tmp_path / "photo.jpg").image
    assert got.size == want.size == (203, 151)
    assert np.abs(gray(got) - gray(want)).max() <= 2  # the example resizes its input in 8 bits, aggan in float


# ---------------------------------------------------------------------------------------------
# aggan bench --backend onnxruntime, --only startup (that they run and report; no timing is asserted)

BENCH_TINY = ["bench", "--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--device", "cpu",
              "--repeats", "1", "--warmup", "0", "--json"]


def test_bench_times_the_exported_network_on_onnxruntime():
    from test_bench import conv_flops_per_image

    from aggan_cli.config import ModelConfig
    from aggan_cli.networks import AttentionGenerator

    result = aggan(*BENCH_TINY, "--backend", "onnxruntime", "--threads", "1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "onnxruntime" and data["threads"] == 1 and data["train"] is None
    inference = data["inference"]
    expected = conv_flops_per_image(AttentionGenerator(ngf=4, n_blocks=1, upsample=ModelConfig().upsample), 32)
    assert inference["flops_per_image"] == expected
    assert 0 < inference["seconds"]["min"] <= inference["seconds"]["max"]
    assert_one_line_error(aggan(*BENCH_TINY, "--backend", "onnxruntime", "--only", "train"), "inference only")


def test_bench_startup_times_a_real_translate_process_to_its_file():
    result = aggan(*BENCH_TINY, "--only", "startup", "--backend", "onnxruntime", "--photo-size", "64")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["startup"]["median"] > 0 and data["photo_size"] == 64
    assert data["inference"] is None and data["train"] is None


def test_bench_startup_refuses_a_photo_size_beyond_the_bound_before_making_the_photo():
    # --photo-size 20000 allocated a 20,000 × 15,000 photo (3.6 GB as floats) and then ran translates that
    # refuse to decode it; now one line before anything is made
    result = aggan(*BENCH_TINY, "--only", "startup", "--photo-size", "20000")
    assert_one_line_error(result, "--photo-size", "10000")
