"""The Python API: ``Translator.load(...).translate(...)`` on paths, PIL images, arrays and tensors, at
any size, with the mask and content back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aggan_cli import Translator
from aggan_cli.errors import CheckpointError, ConfigError, DataError
from images import (displayed, photo_array, write_checkpoint, write_mode, write_rgb, write_text,
                    write_truncated_jpeg)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {mask: write_checkpoint(root / mask, mask=mask) for mask in ("random", "zero", "one", "split")}


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_three_lines_by_run_name(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "runs" / "smile")
    write_rgb(tmp_path / "photo.jpg", (301, 177))
    monkeypatch.chdir(tmp_path)

    t = Translator.load("smile")  # a run under ./runs, as after `aggan train ./neutral ./smile`
    r = t.translate("photo.jpg")
    r.image.save("smiling.png")

    assert Image.open("smiling.png").size == (301, 177)
    assert r.mask.shape == (177, 301) and r.mask.dtype == np.float32
    assert 0.0 <= r.mask.min() and r.mask.max() <= 1.0
    assert r.content.size == (301, 177) and r.original.size == (301, 177)
    assert t.label() == "neutral → smile" and t.label("b2a") == "smile → neutral"
    assert r.direction == "a2b" and r.source.name == "photo.jpg"


def test_path_pil_array_and_tensor_inputs_agree(ckpts, tmp_path):
    path = write_rgb(tmp_path / "x.png", (45, 31))
    array = photo_array((45, 31))
    t = Translator.load(ckpts["random"])
    expected = t.translate(path)
    tensor01 = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1]
    uint8 = torch.from_numpy(array).permute(2, 0, 1)
    for image in (Image.open(path), array, tensor01, tensor01[None], uint8, tensor01.double().requires_grad_()):
        r = t.translate(image)
        assert np.array_equal(pixels(r.image), pixels(expected.image)), type(image)
        assert np.array_equal(r.mask, expected.mask)
    image, mask, content = expected.tensors()
    assert image.shape == (3, 31, 45) and mask.shape == (1, 31, 45) and content.shape == (3, 31, 45)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(4, 20, 20), "shape (3, H, W)"),
    (torch.rand(3, 20, 20) * 2, "[0, 1]"),
    (np.zeros((20, 20)), "shape (H, W, 3)"),
    ([1, 2, 3], "cannot translate a list"),
])
def test_bad_in_memory_images_are_data_errors(ckpts, bad, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Translator.load(ckpts["random"]).translate(bad)


@pytest.mark.parametrize("size", ["auto", "native", 64])
def test_zero_mask_gives_the_input_and_full_mask_the_content(ckpts, tmp_path, size):
    path = write_rgb(tmp_path / "odd.png", (301, 177))
    r = Translator.load(ckpts["zero"], size=size).translate(path)
    assert (r.mask == 0).all()
    assert np.array_equal(pixels(r.image), pixels(displayed(path)))  # bit for bit, at full resolution
    r = Translator.load(ckpts["one"], size=size).translate(path)
    assert (r.mask == 1).all()
    assert np.array_equal(pixels(r.image), pixels(r.content))
    assert not np.array_equal(pixels(r.image), pixels(displayed(path)))


def test_native_mode_is_the_networks_own_eq1(ckpts, tmp_path):
    """At native size on a multiple-of-4 image nothing is resampled: the output is Eq. 1 of the generator."""
    path = write_rgb(tmp_path / "x.png", (48, 36))
    t = Translator.load(ckpts["random"], size="native")
    r = t.translate(path)
    x = torch.from_numpy(np.array(displayed(path))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.inference_mode():
        out = t.generators["a2b"](x)
    expected = ((out.image[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(pixels(r.image) - expected).max() <= 1
    assert np.abs(r.mask - out.mask[0, 0].numpy()).max() < 1e-6


@pytest.mark.parametrize("size, image, seen", [
    ("auto", (301, 177), (32, 56)),    # short side 177 -> 32, long 54 -> padded to 56
    ("auto", (37, 53), (48, 32)),      # 53 × 37 -> 46 × 32 -> 48 × 32 (H, W)
    ("auto", (20, 12), (56, 32)[::-1]),  # smaller than the training size: scaled up to it
    ("native", (37, 53), (56, 40)),    # full resolution, padded to a multiple of 4
    ("native", (3, 2), (8, 8)),        # tiny: padded to the 8-pixel minimum
    (64, (301, 177), (64, 112)),       # an explicit short side
])
def test_the_network_sees_the_documented_working_size(ckpts, tmp_path, size, image, seen):
    path = write_rgb(tmp_path / "x.png", image)
    t = Translator.load(ckpts["random"], size=size)
    shapes = []
    t.generators["a2b"].register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape[-2:])))
    r = t.translate(path)
    assert shapes == [seen]
    assert r.image.size == image and r.mask.shape == image[::-1]


def test_tiny_and_thin_images_keep_their_size(ckpts, tmp_path):
    for size in ("auto", "native"):
        t = Translator.load(ckpts["split"], size=size)
        for dims in ((1, 1), (3, 2), (5, 200), (200, 5)):
            r = t.translate(write_rgb(tmp_path / f"{dims}.png", dims))
            assert r.image.size == dims and r.content.size == dims and r.mask.shape == dims[::-1]


def test_transparency_is_kept(ckpts, tmp_path):
    path = write_mode(tmp_path / "rgba.png", "RGBA", (37, 53))
    r = Translator.load(ckpts["random"]).translate(path)
    assert r.image.mode == "RGBA"
    assert np.array_equal(np.asarray(r.image.getchannel("A")), np.asarray(Image.open(path).getchannel("A")))


def test_translate_many_reports_bad_files_and_goes_on(ckpts, tmp_path):
    good = [write_rgb(tmp_path / f"g{i}.png", (40 + 7 * i, 30), seed=i) for i in range(3)]
    bad = [write_truncated_jpeg(tmp_path / "cut.jpg"), write_text(tmp_path / "notes.jpg")]
    inputs = [good[0], bad[0], good[1], bad[1], good[2]]
    results = dict(Translator.load(ckpts["random"]).translate_many(inputs, batch_size=2))
    assert sorted(map(str, results)) == sorted(map(str, inputs))
    for path in bad:
        assert isinstance(results[path], DataError) and path.name in str(results[path])
    for path in good:
        assert results[path].image.size == Image.open(path).size


def passes_seen(translator: Translator) -> list[int]:
    """A list that fills with the batch size of every forward pass of either generator."""
    seen: list[int] = []
    for g in translator.generators.values():
        g.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


SIZES = [(301, 177), (37, 53), (300, 177), (64, 64), (602, 354), (38, 53), (37, 53)]


def test_the_cpu_runs_one_image_per_pass_whatever_the_batch_size(ckpts, tmp_path):
    paths = [write_rgb(tmp_path / f"{i}.png", s, seed=i) for i, s in enumerate(SIZES)]
    t = Translator.load(ckpts["split"], device="cpu")
    seen = passes_seen(t)
    single = {p: t.translate(p) for p in paths}
    for batch_size in (1, 3, 8):
        seen.clear()
        batched = dict(t.translate_many(paths, batch_size=batch_size, workers=2))
        # several large photos in one pass multiply the memory, and oneDNN's kernels differ with the
        # batch size: on the CPU each image gets its own pass, so --batch-size changes nothing
        assert seen == [1] * len(paths), (batch_size, seen)
        assert set(batched) == set(paths)
        for p in paths:
            assert np.array_equal(pixels(batched[p].image), pixels(single[p].image)), (batch_size, p.name)
            assert np.array_equal(batched[p].mask, single[p].mask)


def test_batches_of_equal_working_size_share_a_pass_and_give_the_same_images(ckpts, tmp_path, monkeypatch):
    """The GPU's path (images of equal working size batched), run on the CPU: grouping, order and the
    split of each pass back into images must give what one-at-a-time translation gives."""
    paths = [write_rgb(tmp_path / f"{i}.png", s, seed=i) for i, s in enumerate(SIZES)]
    t = Translator.load(ckpts["split"], device="cpu")
    single = {p: t.translate(p) for p in paths}
    monkeypatch.setattr(Translator, "images_per_pass", lambda self, batch_size: batch_size)
    seen = passes_seen(t)
    batched = dict(t.translate_many(paths, batch_size=3, workers=2))
    assert max(seen) == 3 and sum(seen) == len(paths)  # 301×177, 300×177, 602×354 share a working size
    assert set(batched) == set(paths)
    for p in paths:
        # oneDNN may round differently in a batch: at most one 8-bit level, as on a GPU (docs/translate.md)
        assert np.abs(pixels(batched[p].image) - pixels(single[p].image)).max() <= 1, p.name
        assert np.abs(batched[p].mask - single[p].mask).max() < 1e-3, p.name


def test_decoded_images_waiting_for_the_device_are_bounded_by_their_pixels(ckpts, tmp_path, monkeypatch):
    import aggan_cli.imaging as imaging

    paths = [write_rgb(tmp_path / f"{i}.png", (120, 100), seed=i) for i in range(8)]
    monkeypatch.setattr(imaging, "AHEAD_PIXELS", 120 * 100)  # room for one image ahead
    pulled = 0

    def inputs():
        nonlocal pulled
        for path in paths:
            pulled += 1
            yield path

    done = 0
    for _, result in Translator.load(ckpts["random"], device="cpu").translate_many(inputs(), batch_size=4, workers=4):
        done += 1
        assert pulled - done <= 1, (pulled, done)  # without the bound, 8 would be decoded at once
    assert done == len(paths)


def test_a_fifo_among_the_inputs_is_reported_without_being_opened(ckpts, tmp_path):
    """translate_many reads each file's header to bound the pixels decoded ahead; opening a FIFO for that
    waited forever for a writer. Run in a subprocess, so that the hang fails the test instead of hanging it."""
    import os
    import subprocess
    import sys
    import textwrap

    os.mkfifo(tmp_path / "pipe.png")
    photo = write_rgb(tmp_path / "photo.png", (40, 30))
    script = textwrap.dedent(f"""
        from aggan_cli import Translator
        t = Translator.load({str(ckpts["random"])!r}, device="cpu")
        for image, result in t.translate_many([{str(tmp_path / "pipe.png")!r}, {str(photo)!r}], workers=1):
            print(type(result).__name__, result if isinstance(result, Exception) else result.size)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [f"DataError {tmp_path / 'pipe.png'} is not a regular file (a pipe, socket or "
                                        "device), not an image", "Translation (40, 30)"]


def test_running_out_of_memory_says_how_big_the_request_was_and_what_to_lower(ckpts, tmp_path):
    """A real allocation failure: the process may use 600 MB more than it needs to start, and the
    network at full resolution on a 4,000 × 4,000 photo needs several GB."""
    import os
    import subprocess
    import sys
    import textwrap

    ckpt = write_checkpoint(tmp_path / "ckpt", ngf=16)
    photo = write_rgb(tmp_path / "big.png", (4000, 4000))
    script = textwrap.dedent(f"""
        import resource, sys
        import PIL.Image, PIL.PngImagePlugin, rich.progress, safetensors.torch, torch
        import aggan_cli.cli, aggan_cli.checkpoint, aggan_cli.inference, aggan_cli.networks, aggan_cli.translate_cli
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 600_000_000, resource.RLIM_INFINITY))
        sys.argv = ["aggan", "translate", {str(photo)!r}, "--ckpt", {str(ckpt)!r}, "--size", "native",
                    "--device", "cpu", "--out", {str(tmp_path / "out")!r}]
        aggan_cli.cli.main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "out of memory on cpu translating 1 image(s) of up to 4000×4000 px" in errors[0]
    assert "--size" in errors[0] and "--batch-size" not in errors[0]  # the CPU already runs one at a time
    assert proc.stdout == "" and not (tmp_path / "out").exists(), errors[0]


def test_the_two_directions_are_the_two_generators(ckpts, tmp_path):
    path = write_rgb(tmp_path / "x.png", (50, 40))
    t = Translator.load(ckpts["random"])
    a2b, b2a = t.translate(path), t.translate(path, direction="b2a")
    assert a2b.direction == "a2b" and b2a.direction == "b2a"
    assert not np.array_equal(pixels(a2b.image), pixels(b2a.image))
    assert np.array_equal(pixels(Translator.load(ckpts["random"], direction="b2a").translate(path).image),
                          pixels(b2a.image))


def test_mask_image_overlay_and_threshold(ckpts, tmp_path):
    r = Translator.load(ckpts["split"]).translate(write_rgb(tmp_path / "x.png", (90, 70)))
    grey = np.asarray(r.mask_image())
    assert grey.dtype == np.uint8 and grey.shape == (70, 90)
    assert np.array_equal(grey, np.rint(r.mask * 255).astype(np.uint8))
    binary = np.asarray(r.mask_image(threshold=0.5))
    assert set(np.unique(binary)) <= {0, 255} and np.array_equal(binary == 255, r.mask > 0.5)
    overlay = r.overlay()
    assert overlay.mode == "RGB" and overlay.size == (90, 70)
    hot, cold = np.asarray(overlay)[r.mask > 0.99], np.asarray(overlay)[r.mask == 0]
    assert hot.size and cold.size
    assert np.ptp(cold, axis=-1).max() == 0  # unattended: the dimmed photo in grey
    assert np.ptp(hot.astype(int), axis=-1).mean() > 50  # attended: a clearly coloured heat map
    with pytest.raises(ConfigError, match="between 0 and 1"):
        r.mask_image(threshold=1.5)


def test_errors_name_the_problem(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        Translator.load(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="direction"):
        Translator.load(ckpts["random"], direction="sideways")
    with pytest.raises(ConfigError, match="multiple of 4"):
        Translator.load(ckpts["random"], size=30)
    with pytest.raises(ConfigError, match="'auto', 'native'"):
        Translator.load(ckpts["random"], size="huge")
    with pytest.raises(DataError, match="no such file"):
        Translator.load(ckpts["random"]).translate(tmp_path / "missing.jpg")


def test_a_translation_carries_the_input_colour_profile_for_any_format(ckpts, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = write_rgb(tmp_path / "phone.jpg", (40, 30), icc_profile=profile)
    r = Translator.load(ckpts["random"]).translate(photo)
    assert r.colour == {"icc_profile": profile} and r.image.info["icc_profile"] == profile
    for suffix in (".png", ".tif"):  # PIL writes the profile from image.info itself
        r.image.save(tmp_path / f"out{suffix}")
        assert Image.open(tmp_path / f"out{suffix}").info.get("icc_profile") == profile, suffix
    for suffix in (".jpg", ".webp"):  # these writers need it passed: the documented one-liner
        r.image.save(tmp_path / f"out{suffix}", icc_profile=r.image.info.get("icc_profile"))
        assert Image.open(tmp_path / f"out{suffix}").info.get("icc_profile") == profile, suffix
    with Image.open(photo) as opened:  # an opened PIL image gives its profile too
        assert Translator.load(ckpts["random"]).translate(opened).colour == {"icc_profile": profile}


def test_a_checkpoint_claiming_a_huge_training_size_is_refused_at_load(tmp_path):
    import json

    run = write_checkpoint(tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["model"]["image_size"] = 400_000  # --size auto would run the network at a 400,000-px short side
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="image_size.* 400000|400000.*4096"):
        Translator.load(run)
    with pytest.raises(ConfigError, match="image_size must be from 8 to 4096"):
        Translator(torch.nn.Identity(), torch.nn.Identity(), image_size=400_000)
