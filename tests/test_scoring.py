"""The scorer on hand-made cases whose every number is known, and the built-in tasks' ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggan_cli.errors import ConfigError
from aggan_cli.scoring import TARGETS, TIE_DB, Evaluator, better_save, change_region, psnr, rim_bands, roc_auc, score
from aggan_cli.tasks import TASKS, get_task


def _scene(seed: int = 0, size: int = 32):
    """An input, a twin that brightens a 10×10 square by 40 levels, and that square as the region."""
    rng = np.random.default_rng(seed)
    source = rng.integers(50, 200, size=(size, size, 3), dtype=np.uint8)
    region = np.zeros((size, size), bool)
    region[8:18, 8:18] = True
    twin = source.copy()
    twin[region] += 40
    return source, twin, region


def test_a_perfect_translation_scores_infinity_and_one():
    source, twin, region = _scene()
    result = score([source], [twin.copy()], [region.astype(np.float32)], twins=[twin], regions=[region])
    assert result.foreground_psnr == math.inf and result.background_psnr == math.inf and result.image_psnr == math.inf
    assert result.mask_auc == 1.0 and result.mask_iou == 1.0
    assert result.soft_inside == 0.0 and result.soft_outside == 0.0
    assert result.rim_inside == 1.0 and result.rim_outside == 0.0
    assert result.exact_fraction == 1.0
    assert all(result.passed().values()) and set(result.passed()) == set(TARGETS)


def test_output_equal_to_input_scores_the_identity_baseline():
    source, twin, region = _scene()
    result = score([source], [source.copy()], [np.zeros(region.shape, np.float32)], twins=[twin], regions=[region])
    assert result.background_psnr == math.inf
    assert result.foreground_psnr == pytest.approx(10 * math.log10(255**2 / 40**2))  # every region pixel is 40 off
    assert result.foreground_gain == 0.0
    assert result.mask_auc == 0.5          # a constant mask ranks nothing
    assert result.mask_iou == 0.0
    assert result.rim_inside == 0.0 and result.rim_outside == 0.0
    assert result.exact_fraction == 1.0
    assert result.passed()["foreground_gain"] is False


def test_the_rim_figures_tell_a_mask_that_stops_short_of_the_edge_from_one_that_spills_over_it():
    """The 10×10 region's 2-px bands: 64 pixels inside its edge, 96 outside (a 14×14 ring). A mask two
    pixels short of the edge on every side has nothing in either band; one two pixels over has all of both."""
    source, twin, region = _scene()
    inside, outside = rim_bands(region)
    assert inside.sum() == 100 - 6 * 6 and outside.sum() == 14 * 14 - 100
    assert not (inside & ~region).any() and not (outside & region).any()
    short, over = np.zeros(region.shape, np.float32), np.zeros(region.shape, np.float32)
    short[10:16, 10:16] = 1
    over[6:20, 6:20] = 1
    result = score([source], [twin], [short], twins=[twin], regions=[region])
    assert result.rim_inside == 0.0 and result.rim_outside == 0.0 and result.mask_iou == pytest.approx(36 / 100)
    result = score([source], [twin], [over], twins=[twin], regions=[region])
    assert result.rim_inside == 1.0 and result.rim_outside == 1.0 and result.mask_iou == pytest.approx(100 / 196)


def test_the_image_border_is_not_an_edge_of_the_region():
    region = np.zeros((32, 32), bool)
    region[:10, :10] = True  # a corner square: only its right and lower sides are edges
    inside, outside = rim_bands(region)
    assert inside.sum() == 100 - 8 * 8 and outside.sum() == 12 * 12 - 100


def test_known_background_error_and_soft_masks():
    source, twin, region = _scene()
    output = twin.copy()
    output[~region] += 1                   # every background pixel one level off: MSE 1
    mask = np.where(region, 0.7, 0.3).astype(np.float32)  # right ranking, all soft
    result = score([source], [output], [mask], twins=[twin], regions=[region])
    assert result.background_psnr == pytest.approx(20 * math.log10(255))
    assert result.mask_auc == 1.0 and result.mask_iou == 1.0
    assert result.soft_inside == 1.0 and result.soft_outside == 1.0
    assert math.isnan(result.exact_fraction)  # no pixel has mask < 1/255


def test_the_median_background_is_the_typical_scene_and_the_pooled_one_the_whole_set():
    """Four scenes left alone and one whose background is painted over: the pooled background PSNR drops to
    the painted scene's share, the median stays infinite (three of five untouched), and with two of five
    scenes one level off it is the one-level-off figure."""
    source, twin, region = _scene()
    painted = twin.copy()
    painted[~region] = 255 - painted[~region]
    result = score([source] * 5, [twin] * 4 + [painted], twins=[twin] * 5, regions=[region] * 5)
    alone = score([source], [painted], twins=[twin], regions=[region]).background_psnr
    assert result.background_psnr == pytest.approx(alone + 10 * math.log10(5))
    assert result.background_psnr_median == math.inf
    off = twin.copy()
    off[~region] += 1
    result = score([source] * 3, [off, off, twin], twins=[twin] * 3, regions=[region] * 3)
    assert result.background_psnr_median == pytest.approx(20 * math.log10(255))


def test_the_background_splits_into_the_rim_within_four_pixels_and_the_rest():
    """A 10×10 region's background within 4 px (8-connected) is the 18×18 ring around it; paint one pixel
    two away from the region and one in the far corner: each figure sees only its own."""
    source, twin, region = _scene()
    output = twin.copy()
    output[6, 12] = 255 - output[6, 12]      # two pixels above the region: the rim
    result = score([source], [output], twins=[twin], regions=[region])
    near_count, far_count = 18 * 18 - 100, 32 * 32 - 18 * 18
    error = float(((output[6, 12].astype(float) - source[6, 12]) ** 2).sum())
    assert result.background_psnr_near == pytest.approx(10 * math.log10(255**2 * near_count * 3 / error))
    assert result.background_psnr_far == math.inf
    output = twin.copy()
    output[31, 31] = 255 - output[31, 31]    # the far corner
    result = score([source], [output], twins=[twin], regions=[region])
    error = float(((output[31, 31].astype(float) - source[31, 31]) ** 2).sum())
    assert result.background_psnr_near == math.inf
    assert result.background_psnr_far == pytest.approx(10 * math.log10(255**2 * far_count * 3 / error))
    assert result.background_psnr == pytest.approx(10 * math.log10(255**2 * (32 * 32 - 100) * 3 / error))


def test_missed_objects_are_counted_and_the_found_scenes_background_kept_apart():
    """Three scenes: one whose mask is on the object, one whose mask sits beside it (a blob painted on the
    background, IoU 0) and one whose mask covers a sliver of it (IoU 0.09, under 0.1): two of three missed, and
    the background of the found one alone is the found scenes' figure. A perfect mask misses nothing; a shut
    one misses every object, and with no scene found there is no found figure."""
    source, twin, region = _scene()
    beside = np.zeros(region.shape, np.float32)
    beside[20:30, 20:30] = 1.0
    blob = twin.copy()
    blob[beside > 0] = 255 - blob[beside > 0]
    sliver = np.zeros(region.shape, np.float32)
    sliver[8:17, 8] = 1.0                        # 9 of the region's 100 pixels: IoU 0.09
    off = twin.copy()
    off[~region] += 1                            # the found scene's background, one level off everywhere
    result = score([source] * 3, [off, blob, twin], [region.astype(np.float32), beside, sliver],
                   twins=[twin] * 3, regions=[region] * 3)
    assert result.missed_fraction == pytest.approx(2 / 3)
    assert result.background_psnr_found == pytest.approx(20 * math.log10(255))
    assert result.background_psnr < result.background_psnr_found
    assert score([source], [twin], [region.astype(np.float32)], twins=[twin], regions=[region]).missed_fraction == 0.0
    shut = score([source] * 2, [source] * 2, [np.zeros(region.shape, np.float32)] * 2, twins=[twin] * 2,
                 regions=[region] * 2)
    assert shut.missed_fraction == 1.0 and math.isnan(shut.background_psnr_found)
    empty = np.zeros(region.shape, bool)         # a scene with nothing to change neither finds nor misses
    assert score([source] * 2, [twin, source], [region.astype(np.float32), np.zeros(region.shape, np.float32)],
                 regions=[region, empty]).missed_fraction == 0.0


def test_the_best_save_is_the_higher_image_psnr_and_within_a_tie_the_better_mask():
    """The saves of a real run (recolour on photographs, full width, seed 1): step 500 scored 19.820 dB and
    IoU 0.537 with 7 objects missed, step 1,250 19.804 dB and IoU 0.606 with 2 missed. By image PSNR alone
    step 500 would stay best; within TIE_DB the better mask takes it. Beyond TIE_DB the image decides."""
    nan = float("nan")
    assert better_save((19.804, 0.606), (19.820, 0.537))
    assert not better_save((19.820, 0.537), (19.804, 0.606))
    assert not better_save((19.820 - 2 * TIE_DB, 0.9), (19.820, 0.537))      # a better mask, a worse image
    assert better_save((19.820 + 2 * TIE_DB, 0.1), (19.820, 0.537))          # a better image, a worse mask
    assert better_save((19.82, 0.5), (19.82, 0.5))                            # a full tie: the later save
    assert better_save((19.80, nan), (19.82, 0.5)) is False                   # no mask scored: image alone
    assert better_save((19.83, nan), (19.82, 0.5))
    assert better_save((nan, nan), None) and better_save((1.0, nan), (nan, nan))
    assert not better_save((nan, 0.9), (19.82, 0.5))                          # nothing to score beats only nothing


def test_the_tiebreak_is_the_mask_iou_where_the_quality_is_the_image_psnr():
    source, twin, region = _scene()
    mask = region.astype(np.float32)
    both = score([source], [twin], [mask], twins=[twin], regions=[region])
    assert both.quality() == both.image_psnr and both.tiebreak() == both.mask_iou == 1.0
    masks_only = score([source], [twin], [mask], regions=[region])           # no twins: quality is the IoU itself
    assert masks_only.quality() == 1.0 and math.isnan(masks_only.tiebreak())


def test_a_changed_pixel_under_a_zero_mask_is_caught():
    source, twin, region = _scene()
    output = source.copy()
    output[0, 0] ^= 1
    result = score([source], [output], [np.zeros(region.shape, np.float32)], regions=[region])
    assert result.exact_fraction == pytest.approx(1 - 1 / (32 * 32))


def test_the_region_comes_from_the_twin_when_not_given():
    source, twin, region = _scene()
    assert (change_region(source, twin) == region).all()
    given = score([source], [source], [region.astype(np.float32)], twins=[twin], regions=[region])
    derived = score([source], [source], [region.astype(np.float32)], twins=[twin])
    assert given == derived


def test_statistics_are_pooled_over_images_of_different_sizes():
    a, ta, ra = _scene(0, 32)
    b, tb, rb = _scene(1, 48)
    result = score([a, b], [ta, b], twins=[ta, tb], regions=[ra, rb])
    # one perfect, one unchanged: the pooled foreground error is the unchanged image's over all region pixels
    expected = psnr(np.concatenate([ta[ra], b[rb]]), np.concatenate([ta[ra], tb[rb]]))
    assert result.foreground_psnr == pytest.approx(expected)
    assert math.isnan(result.mask_auc)     # no masks given: no mask figures


def test_roc_auc_matches_a_brute_force_count():
    rng = np.random.default_rng(3)
    scores_ = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores_[labels], scores_[~labels]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(scores_, labels) == pytest.approx(brute)


@pytest.mark.parametrize("name", [n for n in TASKS if not n.endswith("-photo")])
@pytest.mark.parametrize("size", [32, 64, 100])
def test_built_in_tasks_have_exact_ground_truth(name, size):
    task = get_task(name)
    case = task.test_case(7, 3, size)
    source, twin = np.asarray(case.source), np.asarray(case.twin)
    assert source.shape == twin.shape == (size, size, 3) and case.region.shape == (size, size)
    assert 0.01 < case.region.mean() < 0.5, "the change is a part of the picture, not nothing or everything"
    outside = np.abs(source[~case.region].astype(int) - twin[~case.region].astype(int)).max()
    # objects are composited over the same background: identical outside; the faces' region is every pixel
    # that changes by more than 8 levels (their downsampling rings faintly around the mouth)
    assert outside == 0 if name != "faces" else outside <= 8
    changed = (source[case.region] != twin[case.region]).any(axis=-1).mean()
    assert changed > (0.15 if name == "shape" else 0.5)  # a shape's region is the union of both shapes
    again = task.test_case(7, 3, size)
    assert (np.asarray(again.source) == source).all(), "a pure function of (seed, index, size)"
    assert not (np.asarray(task.test_case(8, 3, size).source) == source).all()


@pytest.mark.parametrize("name", ["recolour", "texture", "shape"])
def test_training_domains_are_unpaired_and_differ_as_named(name):
    task = get_task(name)
    a = [np.asarray(task.train_image(0, "a", i, 32)) for i in range(3)]
    b = [np.asarray(task.train_image(0, "b", i, 32)) for i in range(3)]
    test = np.asarray(task.test_case(0, 0, 32).source)
    assert not any((x == y).all() for x in a for y in b)
    assert not any((x == test).all() for x in a)


def test_photo_tasks_need_scikit_image_or_render():
    task = get_task("shape-photo")
    try:
        import skimage  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="scikit-image"):
            task.test_case(0, 0, 32)
    else:
        case = task.test_case(0, 0, 48)
        assert np.asarray(case.source).shape == (48, 48, 3) and case.region.any()


def test_unknown_task_names_the_choices():
    with pytest.raises(ConfigError, match="recolour"):
        get_task("recolor-typo")


def test_evaluator_scores_a_generator_that_changes_nothing(seeded):
    """A generator whose mask is 0 everywhere leaves every pixel as it was: the identity's known numbers."""
    import torch

    from aggan_cli.networks import AttentionGenerator

    g = AttentionGenerator(ngf=4, n_blocks=0)
    with torch.no_grad():
        g.net[-1].weight[0].zero_()
        g.net[-1].bias[0].fill_(-30.0)     # sigmoid(-30) ≈ 1e-13: nothing attended
    evaluator = Evaluator.from_task("recolour", seed=0, size=32, count=4)
    result, translations = evaluator(g, image_size=32)
    assert len(translations) == 4 and g.training, "the generator is handed back in its training mode"
    assert result.background_psnr == math.inf and result.exact_fraction == 1.0
    assert result.foreground_gain == 0.0 and result.mask_iou == 0.0
