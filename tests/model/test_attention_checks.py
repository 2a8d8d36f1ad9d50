"""The attention checks: near-empty regions and deletion, on hand-made maps and on a model trained here."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import evaluate, preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.model import attention_checks as checks
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime
from tests.synthetic import synthetic_image


def square_on(background: int, value: int) -> torch.Tensor:
    """One 1×1×8×8 image: a 4×4 square at the top left of a plain background."""
    image = torch.full((1, 1, 8, 8), background, dtype=torch.uint8)
    image[..., :4, :4] = value
    return image


@pytest.mark.parametrize(("background", "value"), [(0, 200), (255, 30)])  # dark or light background
def test_near_empty_cells_are_those_without_the_object(background, value):
    empty = checks.near_empty_cells(square_on(background, value), (2, 2))
    assert empty.tolist() == [[[False, True], [True, True]]]


def test_attention_on_the_background_or_on_the_object_is_told_apart():
    image = square_on(0, 200).expand(2, -1, -1, -1)
    on_background = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    on_object = torch.tensor([[0.7, 0.1], [0.1, 0.1]])
    both = checks.near_empty_figures(image, torch.stack([on_background, on_object]))
    assert both["near_empty_cell_share"] == 0.75
    assert both["near_empty_attention_mass"] == pytest.approx((1.0 + 0.3) / 2)
    assert both["near_empty_peak_share"] == 0.5


def test_near_empty_figures_are_measured_only_where_backgrounds_are_uniform():
    rng = np.random.default_rng(0)
    garments = square_on(0, 200).expand(4, -1, -1, -1)
    texture = torch.from_numpy(rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8))  # a field, a cell, a fabric
    attention = torch.full((4, 2, 2), 0.25)
    assert checks.uniform_background(garments).all() and not checks.uniform_background(texture).any()
    on_garments = checks.near_empty_figures(garments, attention)
    assert on_garments["near_empty_images"] == 4 and on_garments["near_empty_cell_share"] == 0.75
    on_texture = checks.near_empty_figures(texture, attention)
    assert on_texture["near_empty_images"] == 0
    assert all(on_texture[key] is None for key in checks.NEAR_EMPTY_KEYS)  # "empty" means nothing there
    mixed = checks.near_empty_figures(torch.cat([garments[:1], texture]), torch.full((5, 2, 2), 0.25))
    assert mixed["near_empty_images"] == 1 and mixed["near_empty_cell_share"] is None  # 1 of 5: not the data


def test_the_blur_fill_removes_detail_and_keeps_brightness():
    rng = np.random.default_rng(0)
    cracks = torch.full((2, 1, 28, 28), 150, dtype=torch.uint8)
    cracks[:, :, 5:23, 14] = 20  # a thin dark line on a lit surface
    cracks[1] = torch.from_numpy(rng.integers(100, 200, (1, 28, 28), dtype=np.uint8))
    blurred = checks.blurred(cracks)
    assert blurred.dtype == torch.uint8 and blurred.shape == cracks.shape
    assert blurred[0, 0, 5:23, 14].float().mean() > 110  # the line is gone: what the fill deletes is the detail
    assert (blurred.float().mean() - cracks.float().mean()).abs() < 3  # not a new grey patch
    assert blurred[1].float().std() < 0.25 * cracks[1].float().std()


def test_the_blur_is_the_two_dimensional_gaussian_done_in_two_passes():
    from torchvision.transforms.v2 import functional

    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 40, 33), dtype=np.uint8))  # not square: σ from the short side
    sigma = 33 / 8
    reference = functional.gaussian_blur(images, [27, 27], [sigma, sigma])  # torchvision's, one 27×27 kernel
    ours = checks.blurred(images, batch=2)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert (ours.int() - reference.int()).abs().max() <= 1  # the same blur, up to rounding
    assert (functional.gaussian_blur(images, [13, 13], [sigma / 2] * 2).int() - ours.int()).abs().max() > 10


def brightness_of_the_square(images):  # "class 0" is as likely as the top-left square is bright
    p = images[:, 0, :4, :4].float().mean(dim=(1, 2)) / 200
    return torch.stack([p, 1 - p], dim=1)


# A deleted cell's mask is upsampled bilinearly: across the 4 px of a cell of a 2×2 grid on 8 px its
# weight is 1, 1, 7/8, 5/8 (mean 7/8), and it reaches 0, 0, 1/8, 3/8 (mean 1/8) into the next cell.
OWN, NEXT = 7 / 8, 1 / 8


def test_deleting_in_order_replaces_the_cells_first_in_the_order():
    image = square_on(0, 200)
    square_first = torch.tensor([[0, 1, 2, 3]])
    square_last = torch.tensor([[1, 2, 3, 0]])
    fill = torch.tensor([0.0])
    (first,), predicted = checks.deletion_curves(brightness_of_the_square, image, square_first, (2, 2), fill)
    (last,), _ = checks.deletion_curves(brightness_of_the_square, image, square_last, (2, 2), fill)
    square_left = [1, 1 - OWN * OWN, 1 - OWN, NEXT * NEXT, 0]  # the square's share not yet deleted
    np.testing.assert_allclose(first, square_left, atol=0.01)
    np.testing.assert_allclose(last, [1, 1 - NEXT * OWN, 1 - 2 * NEXT * OWN, OWN * OWN, 0], atol=0.01)
    assert predicted.tolist() == [0]
    assert checks.area(first) < checks.area(last)


def test_each_image_keeps_its_own_curve_and_predicted_class():
    """A faint square is "class 1" (absence): deleting it (filling with 0) makes that class surer, the
    curve rises; the bright one's falls. Per-image curves let evaluate tell the two kinds apart."""
    images = torch.cat([square_on(0, 200), square_on(0, 40)])
    curves, predicted = checks.deletion_curves(
        brightness_of_the_square, images, torch.tensor([[0, 1, 2, 3]] * 2), (2, 2), torch.tensor([0.0])
    )
    assert predicted.tolist() == [0, 1]
    square_left = np.array([1, 1 - OWN * OWN, 1 - OWN, NEXT * NEXT, 0])
    np.testing.assert_allclose(curves, [square_left, 1 - 0.2 * square_left], atol=0.01)


def test_deleting_draws_no_edge_for_a_detector_of_edges_to_find():
    """A crack detector answers "defective" where neighbouring pixels differ sharply. On a smooth ramp
    replaced cell by cell with a flat fill, it must keep answering "ok": hard-edged cells draw steps
    of up to 128 grey levels, which it takes for cracks (shown below)."""
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8).expand(6, 1, 32, 32).clone()
    fill = torch.tensor([128.0])

    def steepest(images):
        pixels = images.float()
        across, down = pixels.diff(dim=-1).abs(), pixels.diff(dim=-2).abs()
        return torch.maximum(across.amax(dim=(1, 2, 3)), down.amax(dim=(1, 2, 3)))

    def edge_detector(images):  # [P(defective), P(ok)]
        defective = (steepest(images) > 64).float()
        return torch.stack([defective, 1 - defective], dim=1)

    order = checks.random_order(len(ramp), 64, seed=0)
    curves, predicted = checks.deletion_curves(edge_detector, ramp, order, (8, 8), fill)
    assert predicted.tolist() == [1] * 6 and (curves == 1).all()  # "ok" at every step, for every image
    hard, _ = checks.deletion_curves(edge_detector, ramp, order, (8, 8), fill, soft_edges=False)
    assert (hard[:, 1:-1] == 0).mean() > 0.9  # hard-edged cells: "defective" until all is fill


@pytest.fixture
def trained(project):
    """A small soft-attention model trained on the generated bars/columns/squares (16 px, 4×4 map)."""
    validate.run(project)
    preprocess.run(project)
    cfg = load_config(overrides={"train.epochs": 6, "train.batch_size": 16})
    train.run(cfg)
    model, _ = load_model(cfg.paths.model_file)
    return model


def deletion_area(model, images: torch.Tensor, order: torch.Tensor) -> float:
    """Area under the mean deletion curve of `images` with their cells deleted in `order`."""
    runtime = select_runtime("cpu", "fp32")

    def probabilities(batch):
        return predict_batches(model, batch, 256, runtime).logits.softmax(1)

    curves, _ = checks.deletion_curves(probabilities, images, order, (4, 4), torch.tensor([30.0]))
    return checks.area(curves.mean(0))


def test_deleting_in_the_attentions_order_hurts_more_than_at_random_and_a_uniform_map_cannot_tell(trained):
    rng = np.random.default_rng(7)
    images = torch.from_numpy(np.stack([synthetic_image(i % 3, 16, rng) for i in range(600)]))[:, None]
    attention = predict_batches(trained, images, 256, select_runtime("cpu", "fp32")).attention
    assert attention.shape[1:] == (4, 4)
    uniform = torch.full_like(attention, 1 / 16)
    at_random = deletion_area(trained, images, checks.random_order(len(images), 16, seed=0))
    attended = deletion_area(trained, images, checks.map_order(attention))
    assert attended < at_random - 0.15, (attended, at_random)
    assert deletion_area(trained, images, checks.map_order(-attention)) > at_random  # least attended first
    # the same check, with the map replaced by a uniform one, fails: its order is arbitrary
    flat = deletion_area(trained, images, checks.map_order(uniform))
    assert not flat < at_random - 0.15, (flat, at_random)


def test_localisation_scores_the_peak_and_the_mass_against_the_box():
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0]], [[4.0, 4.0, 8.0, 8.0]], [[float("nan")] * 4]])  # 8×8 images, 2×2 grid
    on_top_left = torch.tensor([[0.7, 0.1], [0.1, 0.1]])
    figures = checks.localisation_figures(torch.stack([on_top_left] * 3), boxes, (8, 8))
    assert figures["boxed_images"] == 2  # the third has no box
    assert figures["pointing_game"] == 0.5  # a hit for the top-left box, a miss for the bottom-right one
    assert figures["pointing_game_centre_baseline"] == 0.5  # the centre cell of a 2×2 grid is the bottom right
    assert figures["box_attention_mass"] == pytest.approx((0.7 + 0.1) / 2)
    assert figures["box_area_share"] == 0.25


def test_a_box_covers_cells_in_proportion():
    overlap = checks.box_overlap(torch.tensor([[[2.0, 0.0, 6.0, 4.0]]]), (2, 2), (8, 8))
    assert overlap.tolist() == [[[0.5, 0.5], [0.0, 0.0]]]


def test_several_boxes_count_as_their_union_once_and_padding_covers_nothing(monkeypatch):
    nan = [float("nan")] * 4
    boxes = torch.tensor([
        [[0.0, 0.0, 4.0, 4.0], [2.0, 0.0, 6.0, 4.0], nan],  # two overlapping boxes in the top half
        [[4.0, 4.0, 8.0, 8.0], nan, nan],
    ])  # fmt: skip
    overlap = checks.box_overlap(boxes, (2, 2), (8, 8))
    assert overlap.tolist() == [[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]  # not 1.5 where they overlap
    on_top_right = torch.tensor([[0.1, 0.7], [0.1, 0.1]])
    figures = checks.localisation_figures(torch.stack([on_top_right] * 2), boxes, (8, 8))
    assert figures["pointing_game"] == 0.5  # the second box of the first image counts
    assert figures["box_area_share"] == pytest.approx((0.375 + 0.25) / 2)
    assert figures["box_attention_mass"] == pytest.approx((0.1 + 0.35 + 0.1) / 2)
    monkeypatch.setattr(checks, "MASK_PIXELS", 64)  # one 8×8 image's mask at a time: the same figures
    assert checks.localisation_figures(torch.stack([on_top_right] * 2), boxes, (8, 8)) == figures


@pytest.mark.parametrize(
    ("auc", "verdict"),
    [
        ({"attention": 0.30, "gradcam": 0.35, "random": 0.50}, "faithful: "),
        ({"attention": 0.40, "gradcam": 0.35, "random": 0.50}, "faithful, less than Grad-CAM"),
        ({"attention": 0.55, "gradcam": 0.35, "random": 0.50}, "not faithful"),
        ({"attention": 0.50, "gradcam": 0.60, "random": 0.50}, "not faithful"),  # a tie with random says nothing
    ],
)
def test_the_verdict_says_whether_deleting_what_the_attention_shows_hurts_most(auc, verdict):
    assert checks.faithfulness(auc).startswith(verdict)


def test_orders_of_the_same_images_score_nothing_and_everything_deleted_once():
    images = torch.cat([square_on(0, 200), square_on(1, 120), square_on(3, 60)])
    fill, scored = torch.tensor([0.0]), []

    def counting(batch):
        scored.append(len(batch))
        return brightness_of_the_square(batch)

    orders = [torch.tensor([[0, 1, 2, 3]] * 3), torch.tensor([[3, 2, 1, 0]] * 3), torch.tensor([[1, 3, 0, 2]] * 3)]
    alone = [checks.deletion_curves(counting, images, order, (2, 2), fill)[0] for order in orders]
    calls_alone, scored = sum(scored), []
    ends: dict = {}
    shared = [checks.deletion_curves(counting, images, order, (2, 2), fill, ends=ends)[0] for order in orders]
    for one, other in zip(alone, shared, strict=True):
        np.testing.assert_array_equal(one, other)
    steps = 5  # 4 cells: 0..4 deleted
    assert calls_alone == 3 * len(images) * (steps + 1)  # + the predicted class, before any deletion
    assert sum(scored) == calls_alone - 2 * 2 * len(images)  # the second and third orders skip both ends


def test_the_logged_estimate_counts_the_passes_the_deletion_curves_make_and_progress_follows_each_step():
    """evaluate says how long the attention checks will take before it starts them (minutes on a
    slow CPU): its count of deletion passes must be the one the curves make, steps shown as they go."""
    images = torch.cat([square_on(0, 200), square_on(1, 120), square_on(3, 60)])
    scored, steps_done = [], []

    def counting(batch):
        scored.append(len(batch))
        return brightness_of_the_square(batch)

    orders = [torch.tensor([[0, 1, 2, 3]] * 3), torch.tensor([[3, 2, 1, 0]] * 3), torch.tensor([[1, 3, 0, 2]] * 3)]
    answered, ends = torch.zeros(3, dtype=torch.long), {}
    for order in orders:  # as evaluate calls them: the answered classes given, the ends shared
        checks.deletion_curves(counting, images, order, (2, 2), torch.tensor([0.0]), classes=answered, ends=ends,
                               progress=lambda: steps_done.append(sum(scored)))  # fmt: skip
    cfg = load_config(overrides={"evaluate.faithfulness_images": 3})
    test = SimpleNamespace(labels=answered, boxes=None)
    estimated = evaluate.attention_checks_seconds(cfg, test, torch.zeros(3, 2, 2), per_image=1.0)
    assert estimated - evaluate.GRADCAM_PASSES * len(images) == sum(scored) == (3 * 3 + 2) * len(images)
    assert len(steps_done) == 3 * len(checks.deletion_steps(4)) and steps_done == sorted(steps_done)
    assert steps_done[0] == len(images) and steps_done[-1] == sum(scored)  # after each step, not before
