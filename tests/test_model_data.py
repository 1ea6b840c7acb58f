"""Model data pipeline: FOV samples, sampling weights, training crops, stream determinism, stain tools."""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nucls_utils import taxonomy as tx
from nucls_utils.io.dataset import read_dataset
from nucls_utils.io.errors import NuclsFormatError
from nucls_utils.model import data as md

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "data" / "synthetic" / "smoke"


# ------------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(sample_dir):
    records = read_dataset(sample_dir)
    return records, md.load_fov_samples(records, progress=False)


@pytest.fixture(scope="module")
def smoke(request):
    root = SMOKE if (SMOKE / "csv").is_dir() else request.getfixturevalue("smoke_cohort")  # fresh clone: generate
    records = read_dataset(root)
    return records, md.load_fov_samples(records, progress=False)


def _sample(name: str, hw: tuple[int, int], classes: list[str], box_side: int = 12) -> md.FovSample:
    """A synthetic FovSample with square boxes along the diagonal."""
    n = len(classes)
    boxes = np.array([(i * box_side, i * box_side, (i + 1) * box_side, (i + 1) * box_side) for i in range(n)],
                     dtype=np.int32).reshape(-1, 4)
    return md.FovSample(
        name=name, hospital="XX", slide="TCGA-XX-0000-DX1", rgb=np.full(hw + (3,), 200, dtype=np.uint8),
        boxes=boxes, classes=np.asarray(classes, dtype=object), ismask=np.zeros(n, dtype=bool),
        masks=[np.ones((box_side, box_side), dtype=bool) for _ in range(n)])


# ------------------------------------------------------------------------------------------------------------
# classes
# ------------------------------------------------------------------------------------------------------------
def test_model_classes_and_labels():
    main = md.model_classes("main")
    sup = md.model_classes("super")
    assert main == tx.MAIN_CLASSES and len(main) == 8 and main[-1] == tx.AMBIGUOUS
    assert sup == tx.SUPER_CLASSES and len(sup) == 5 and sup[-1] == tx.AMBIGUOUS
    assert md.ignore_label(main) == 8 and md.ignore_label(sup) == 5
    names = ["tumor_nonMitotic", "tumor_mitotic", "macrophage", "lymphocyte", "other_nucleus", tx.AMBIGUOUS]
    assert md.class_labels(names, main).tolist() == [1, 2, 4, 5, 7, 8]
    assert md.class_labels(names, sup).tolist() == [1, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="level"):
        md.model_classes("raw")
    with pytest.raises(ValueError, match=r"FOV f1: nucleus class 'macrophage'"):
        md.class_labels(["macrophage"], ("tumor_nonMitotic", tx.AMBIGUOUS), fov="f1")


# ------------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------------
def test_load_real_sample(real):
    records, samples = real
    assert len(samples) == 17
    n_dropped = 0
    n_poly_checked = 0
    for rec, s in zip(records, samples, strict=True):
        assert s.name == rec.name and s.slide == rec.slide and s.hospital == rec.hospital
        h, w = s.rgb.shape[:2]
        assert s.rgb.dtype == np.uint8 and (h, w) == tuple(rec.image_shape)  # no FOV rectangle: whole image
        assert s.boxes.dtype == np.int32 and s.boxes.shape == (len(s), 4)
        assert len(s.classes) == len(s.ismask) == len(s.masks) == len(s)
        b = s.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) > md.MIN_SIDE_PX).all() and ((b[:, 3] - b[:, 1]) > md.MIN_SIDE_PX).all()
        for box, m, poly in zip(b, s.masks, s.ismask, strict=True):
            assert m.dtype == bool and m.shape == (box[3] - box[1], box[2] - box[0])
            if not poly:
                assert m.all()
        # classes come from the raw class (release CSVs call apoptotic bodies other_nucleus)
        kept = [n for n in rec.nuclei
                if min(n.xmax, w) - max(n.xmin, 0) > md.MIN_SIDE_PX and min(n.ymax, h) - max(n.ymin, 0) > md.MIN_SIDE_PX]
        n_dropped += len(rec.nuclei) - len(kept)
        assert list(s.classes) == [tx.to_main(n.raw_classification) for n in kept]
        assert s.ismask.tolist() == [n.is_polygon for n in kept]
        for n, box, m in zip(kept, b, s.masks, strict=True):
            if n.is_polygon and tuple(box) == n.box:
                assert abs(m.sum() - n.area) <= 0.2 * n.area, (rec.name, n.box, m.sum(), n.area)
                n_poly_checked += 1
    assert sum(len(s) for s in samples) == sum(len(r.nuclei) for r in records) - n_dropped
    assert n_dropped == 1  # one real nucleus has a side <= 8 px
    assert n_poly_checked > 200
    assert sum(s.ismask.sum() for s in samples) == 215  # polygons among the 725 kept nuclei


def test_load_crops_to_fov_rectangle(smoke):
    records, samples = smoke
    for rec, s in zip(records, samples, strict=True):
        x0, y0, x1, y1 = rec.fov_rect
        assert s.origin == (x0, y0)
        assert s.rgb.shape == (y1 - y0, x1 - x0, 3)
        np.testing.assert_array_equal(s.rgb, rec.read_rgb()[y0:y1, x0:x1])
        h, w = s.rgb.shape[:2]
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2] <= w).all() and (s.boxes[:, 3] <= h).all()
        # an unclipped nucleus keeps its box, shifted by the FOV origin
        inside = [n for n in rec.nuclei if n.xmin >= x0 and n.ymin >= y0 and n.xmax <= x1 and n.ymax <= y1
                  and n.xmax - n.xmin > 8 and n.ymax - n.ymin > 8]
        shifted = {tuple(b) for b in s.boxes.tolist()}
        assert all((n.xmin - x0, n.ymin - y0, n.xmax - x0, n.ymax - y0) in shifted for n in inside)
    # some nuclei straddle the FOV edge: their boxes are clipped, and the masks follow
    assert sum(len(r.nuclei) for r in records) > sum(len(s) for s in samples)


def test_load_normalise_and_bad_input(smoke, tmp_path):
    records, _ = smoke
    inverted = md.load_fov_samples(records[:1], normalise=lambda im: 255 - im, progress=False)[0]
    x0, y0, x1, y1 = records[0].fov_rect
    np.testing.assert_array_equal(inverted.rgb, 255 - records[0].read_rgb()[y0:y1, x0:x1])
    with pytest.raises(NuclsFormatError, match="normaliser"):
        md.load_fov_samples(records[:1], normalise=lambda im: im[:10], progress=False)
    bad = tmp_path / f"{records[0].name}.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(NuclsFormatError, match=rf"{bad.name}.*not a readable image"):
        md.load_fov_samples([dataclasses.replace(records[0], rgb_path=bad)], progress=False)
    with pytest.raises(NuclsFormatError, match="not found"):
        md.load_fov_samples([dataclasses.replace(records[0], rgb_path=tmp_path / "missing.png")], progress=False)


# ------------------------------------------------------------------------------------------------------------
# sampling weights
# ------------------------------------------------------------------------------------------------------------
def test_fov_sampling_weights_hand_example():
    f1 = _sample("f1", (100, 100), ["tumor_nonMitotic"] * 3 + ["lymphocyte"])
    f2 = _sample("f2", (50, 100), ["lymphocyte", tx.AMBIGUOUS, tx.AMBIGUOUS])
    f3 = _sample("f3", (100, 100), [tx.AMBIGUOUS])
    # totals: tumor 3, lymphocyte 2 -> V = (1/3, 1/2) -> W = (0.4, 0.6); W_ambiguous = 0
    # U1 = (3 * 0.4 + 0.6) / 10000 = 1.8e-4 ; U2 = 0.6 / 5000 = 1.2e-4 ; U3 = 0  ->  W_f = (0.6, 0.4, 0)
    w = md.fov_sampling_weights([f1, f2, f3])
    np.testing.assert_allclose(w, [0.6, 0.4, 0.0], atol=1e-12)
    assert w.sum() == pytest.approx(1.0)
    # super level: tumor_any and sTIL, same counts -> same weights
    np.testing.assert_allclose(md.fov_sampling_weights([f1, f2, f3], level="super"), [0.6, 0.4, 0.0], atol=1e-12)
    # the reference code's ~0 ambiguous weight: f3 gets a tiny positive weight
    w_code = md.fov_sampling_weights([f1, f2, f3], ambiguous_weight=1e-5)
    assert 0 < w_code[2] < 1e-4 and w_code.sum() == pytest.approx(1.0)
    # second example: one mitosis replaces f3's ambiguous nucleus. Totals tumor 3, lymphocyte 2, mitotic 1
    # -> V = (1/3, 1/2, 1) -> W = (2, 3, 6) / 11; U1 = (3*2 + 3) / 11 / 1e4, U2 = 3 / 11 / 5e3, U3 = 6 / 11 / 1e4
    # -> W_f = (9, 6, 6) / 21: one mitosis weighs as much as a twice-denser lymphocyte
    f3m = _sample("f3m", (100, 100), ["tumor_mitotic"])
    np.testing.assert_allclose(md.fov_sampling_weights([f1, f2, f3m]), np.array([9, 6, 6]) / 21, atol=1e-12)
    with pytest.raises(ValueError, match="non-ambiguous"):
        md.fov_sampling_weights([f3])


def test_classification_loss_weights_hand_example():
    f1 = _sample("f1", (100, 100), ["tumor_nonMitotic"] * 3 + ["lymphocyte"])
    f2 = _sample("f2", (50, 100), ["lymphocyte", tx.AMBIGUOUS, tx.AMBIGUOUS])
    p = np.array([0.5, 0.5])
    # expected nuclei per px of a crop: tumor 0.5 * 3 / 1e4 = 1.5e-4; lymphocyte 0.5/1e4 + 0.5/5e3 = 1.5e-4
    # -> shares (0.5, 0.5): equal classes need no reweighting, whatever the power
    for power in (0.0, 0.5, 1.0):
        w = md.classification_loss_weights([f1, f2], p, power=power)
        assert w.shape == (len(md.model_classes("main")) + 1,)
        np.testing.assert_allclose(w, np.ones_like(w), atol=1e-12)
    # only f1 drawn: shares tumor 0.75, lymphocyte 0.25. power 1: w = 1 / share scaled so sum(share * w) = 1
    # -> w_tumor = 1/0.75 / 2, w_lymph = 1/0.25 / 2, i.e. (2/3, 2): each class carries half of the weight
    w = md.classification_loss_weights([f1, f2], np.array([1.0, 0.0]), power=1.0)
    tumor, lymph = md.model_classes("main").index("tumor_nonMitotic") + 1, \
        md.model_classes("main").index("lymphocyte") + 1
    assert w[tumor] == pytest.approx(2 / 3) and w[lymph] == pytest.approx(2.0)
    assert 0.75 * w[tumor] + 0.25 * w[lymph] == pytest.approx(1.0)
    others = [i for i in range(len(w)) if i not in (tumor, lymph)]
    np.testing.assert_array_equal(w[others], 1.0)  # background, AMBIGUOUS and absent classes
    # power 0.5: w ~ share ** -0.5 -> ratio sqrt(3), same normalisation
    w5 = md.classification_loss_weights([f1, f2], np.array([1.0, 0.0]), power=0.5)
    assert w5[lymph] / w5[tumor] == pytest.approx(np.sqrt(3)) and 0.75 * w5[tumor] + 0.25 * w5[lymph] == pytest.approx(1)
    # super level: tumor_any / sTIL
    ws = md.classification_loss_weights([f1, f2], np.array([1.0, 0.0]), level="super")
    sup = md.model_classes("super")
    assert ws[sup.index("tumor_any") + 1] == pytest.approx(2 / 3) and ws[sup.index("sTIL") + 1] == pytest.approx(2)
    with pytest.raises(ValueError, match="shape"):
        md.classification_loss_weights([f1, f2], np.array([1.0]))
    with pytest.raises(ValueError, match="power"):
        md.classification_loss_weights([f1, f2], p, power=-1)
    with pytest.raises(ValueError, match="non-ambiguous"):
        md.classification_loss_weights([f2], np.array([1.0]) * 0)


def test_fov_sampling_weights_real(real):
    _, samples = real
    w = md.fov_sampling_weights(samples)
    assert w.shape == (17,) and (w > 0).all() and w.sum() == pytest.approx(1.0)
    # the three FOVs with the sample's (rare) mitotic figures are all above the median weight
    mitotic = [i for i, s in enumerate(samples) if "tumor_mitotic" in set(s.classes)]
    assert len(mitotic) == 3 and (w[mitotic] > np.median(w)).all()


# ------------------------------------------------------------------------------------------------------------
# training crops
# ------------------------------------------------------------------------------------------------------------
def _check_target(image, target, crop, n_classes, ignore):
    assert image.shape == (3, crop, crop) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    boxes, labels, masks, ismask = target["boxes"], target["labels"], target["masks"], target["ismask"]
    n = len(labels)
    assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
    assert labels.dtype == torch.int64 and masks.shape == (n, crop, crop) and masks.dtype == torch.uint8
    assert ismask.shape == (n,) and ismask.dtype == torch.bool
    if n == 0:
        return
    assert ((boxes[:, 2] - boxes[:, 0]) > md.MIN_SIDE_PX).all() and ((boxes[:, 3] - boxes[:, 1]) > md.MIN_SIDE_PX).all()
    assert (boxes >= 0).all() and (boxes <= crop).all()
    assert ((labels >= 1) & (labels <= n_classes)).all()
    m_np = masks.numpy().astype(bool)
    totals = m_np.reshape(n, -1).sum(axis=1)
    for b, m, total, poly in zip(boxes.long().tolist(), m_np, totals, ismask.tolist(), strict=True):
        x0, y0, x1, y1 = b
        inside = m[y0:y1, x0:x1]
        assert total == inside.sum() > 0  # mask lies inside its box
        if not poly:
            assert inside.all()


def test_crop_targets_consistent(real):
    _, samples = real
    classes = md.model_classes("main")
    rng = np.random.default_rng(7)
    n_amb = n_total = 0
    for s in samples:
        for _ in range(2):
            image, target = md.sample_training_crop(s, rng, crop=300, classes=classes)
            _check_target(image, target, 300, len(classes), md.ignore_label(classes))
            n_total += len(target["labels"])
            n_amb += int((target["labels"] == 8).sum())
    assert n_total > 500 and n_amb > 0
    # AMBIGUOUS nuclei get the ignore label, and super-class crops stay in 1..5
    amb_fov = next(s for s in samples if tx.AMBIGUOUS in set(s.classes))
    _, t = md.sample_training_crop(amb_fov, np.random.default_rng(0), crop=600, augment=False)
    assert (t["labels"] == 8).sum() == (amb_fov.classes == tx.AMBIGUOUS).sum()
    _, ts = md.sample_training_crop(amb_fov, np.random.default_rng(0), crop=600, classes=md.model_classes("super"))
    assert ((ts["labels"] >= 1) & (ts["labels"] <= 5)).all()
    assert (ts["labels"] == 5).sum() == (amb_fov.classes == tx.AMBIGUOUS).sum()


def test_crop_geometry_matches_fov(real):
    """Without augmentation the crop is the FOV window (flipped when the flip draw says so), masks included."""
    _, samples = real
    s = max(samples, key=len)
    h, w = s.rgb.shape[:2]
    for seed in range(6):
        image, target = md.sample_training_crop(s, np.random.default_rng(seed), crop=200, augment=False)
        rng = np.random.default_rng(seed)
        x0, y0 = int(rng.integers(0, w - 200 + 1)), int(rng.integers(0, h - 200 + 1))
        flip = rng.random() < 0.5
        window = s.rgb[y0:y0 + 200, x0:x0 + 200]
        full = np.zeros((h, w), dtype=np.uint8)
        for b, m in zip(s.boxes, s.masks, strict=True):
            full[b[1]:b[3], b[0]:b[2]] |= m
        union = full[y0:y0 + 200, x0:x0 + 200]
        if flip:
            window, union = window[:, ::-1], union[:, ::-1]
        np.testing.assert_array_equal((image.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), window)
        got = target["masks"].amax(dim=0).numpy() if len(target["labels"]) else np.zeros((200, 200), np.uint8)
        # every kept mask pixel is a FOV mask pixel; dropped boxes (side <= 8 after clipping) explain the rest
        assert not (got.astype(bool) & ~union.astype(bool)).any()
        assert got.sum() >= 0.9 * union.sum()


def test_crop_padding_empty_and_unknown_class(real):
    _, samples = real
    s = samples[0]
    h, w = s.rgb.shape[:2]
    image, target = md.sample_training_crop(s, np.random.default_rng(0), crop=512, augment=False)
    _check_target(image, target, 512, 8, 8)
    assert len(target["labels"]) == len(s)  # the whole FOV fits: nothing is clipped away
    img = image.numpy()
    # padding is white; after a flip the image sits at the right
    pad_cols = img[:, :, w:] if (img[:, :, :w] < 1).any(axis=(0, 1)).all() else img[:, :, :512 - w]
    assert (img[:, h:, :] == 1.0).all() and (pad_cols == 1.0).all()
    empty = _sample("empty", (320, 330), [])
    image, target = md.sample_training_crop(empty, np.random.default_rng(0), crop=300)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 300, 300) and target["ismask"].shape == (0,)
    odd = _sample("oddfov", (320, 330), ["tumor_nonMitotic", "not_a_class"])
    with pytest.raises(ValueError, match="oddfov.*not_a_class"):
        md.sample_training_crop(odd, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------------------
# training stream
# ------------------------------------------------------------------------------------------------------------
def _same_batches(a, b):
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(ia, ib, strict=True))
        for x, y in zip(ta, tb, strict=True):
            assert x.keys() == y.keys()
            for k in x:
                assert torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k]


def test_stream_determinism_and_resume(real):
    _, samples = real
    samples = samples[:6]
    w = md.fov_sampling_weights(samples)
    make = lambda seed: md.TrainingStream(samples, w, batch_size=2, crop=160, seed=seed)  # noqa: E731
    a = [next(s) for s in [make(3)] for _ in range(3)]
    s2 = make(3)
    b = [next(s2) for _ in range(3)]
    _same_batches(a, b)
    c = next(make(4))
    assert not all(torch.equal(x, y) for x, y in zip(a[0][0], c[0], strict=True))
    # resume: save after 2 batches, the restored stream continues identically (also through pickle)
    s3 = make(11)
    next(s3), next(s3)
    state = pickle.loads(pickle.dumps(s3.state_dict()))
    cont = [next(s3) for _ in range(2)]
    s4 = make(999)
    s4.load_state_dict(state)
    assert s4.batches_drawn == 2
    _same_batches(cont, [next(s4) for _ in range(2)])


def test_stream_follows_weights(smoke):
    _, samples = smoke
    w = np.zeros(len(samples))
    w[[1, 4]] = [0.25, 0.75]
    stream = md.TrainingStream(samples, w, batch_size=4, crop=64, seed=0, augment=False)
    drawn = [t["fov_index"] for _ in range(25) for t in next(stream)[1]]
    assert set(drawn) == {1, 4}
    assert 0.6 < drawn.count(4) / len(drawn) < 0.9
    with pytest.raises(ValueError, match="weights"):
        md.TrainingStream(samples, w[:-1], batch_size=2)


# ------------------------------------------------------------------------------------------------------------
# stain tools
# ------------------------------------------------------------------------------------------------------------
def test_stain_augment(real):
    _, samples = real
    im = samples[0].rgb[:300, :300]
    out = md.stain_augment(im, np.random.default_rng(1))
    assert out.shape == im.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - im).mean() > 3.0  # colours change
    np.testing.assert_array_equal(out, md.stain_augment(im, np.random.default_rng(1)))
    assert not np.array_equal(out, md.stain_augment(im, np.random.default_rng(2)))
    # the legacy global numpy state (what HistomicsTK draws from) is neither used nor changed
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    md.stain_augment(im, np.random.default_rng(5))
    np.testing.assert_array_equal(state, np.random.get_state()[1])  # noqa: NPY002
    # a blank (padded) crop does not crash; identity factors leave a real crop (almost) unchanged
    blank = np.full((300, 300, 3), 255, np.uint8)
    assert md.stain_augment(blank, np.random.default_rng(0)).shape == blank.shape
    same = md._perturb(im, [1, 1, 1], [0, 0, 0])
    assert np.abs(same.astype(int) - im).max() <= 1


def test_stain_augment_matches_histomicstk(real):
    from histomicstk.preprocessing.augmentation import rgb_perturb_stain_concentration

    _, samples = real
    im = samples[2].rgb[:300, :300]
    saved = np.random.get_state()  # noqa: NPY002
    try:
        for seed in (0, 1):
            np.random.seed(seed)  # noqa: NPY002
            ref = rgb_perturb_stain_concentration(im, sigma1=0.5, sigma2=0.5)
            draws = np.random.RandomState(seed)
            alphas, betas = [], []
            for _ in range(3):  # HistomicsTK's draw order: alpha then beta, per channel
                alphas.append(draws.uniform(0.5, 1.5))
                betas.append(draws.uniform(-0.5, 0.5))
            mine = md._perturb(im, alphas, betas, estimate_stride=1)
            diff = np.abs(mine.astype(int) - ref)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
            # the default (stride-2 stain estimate) stays close
            fast = md._perturb(im, alphas, betas, estimate_stride=2)
            assert np.abs(fast.astype(float) - ref).mean() < 1.0
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def test_macenko_normalise_brings_stainings_together(real):
    _, samples = real
    a = samples[3].rgb
    od = md._od(a)
    w = md._macenko_w(od, 0.01)
    conc = od.reshape(-1, 3) @ np.linalg.pinv(w).T
    w2 = w.copy()  # another lab's H&E: both stain vectors rotated
    w2[:, 0] += [0.15, -0.10, 0.10]
    w2[:, 1] += [-0.10, 0.05, 0.15]
    w2 /= np.linalg.norm(w2, axis=0)
    b = md._od_to_uint8((conc @ w2.T).reshape(a.shape))
    before = np.abs(a.astype(float) - b).mean()
    na, nb = md.macenko_normalise(a), md.macenko_normalise(b)
    after = np.abs(na.astype(float) - nb).mean()
    assert na.shape == a.shape and na.dtype == np.uint8
    assert before > 8.0 and after < 0.2 * before, (before, after)  # measured: 10.8 -> 0.49
    # a mostly-background image comes back unchanged, with a warning
    blank = np.full((200, 200, 3), 250, np.uint8)
    blank[:4, :4] = (120, 60, 150)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = md.macenko_normalise(blank)
    np.testing.assert_array_equal(out, blank)
    assert any("too little stained tissue" in str(c.message) for c in caught)


# ------------------------------------------------------------------------------------------------------------
# evaluation truth
# ------------------------------------------------------------------------------------------------------------
def test_truth_arrays(real):
    _, samples = real
    s = samples[0]
    t = md.truth_arrays(s)
    assert t["boxes"].dtype == np.float64 and t["boxes"].shape == (len(s), 4)
    np.testing.assert_array_equal(t["boxes"], s.boxes)
    assert t["classes"] == list(s.classes) and t["ismask"].dtype == bool
    assert len(t["masks"]) == len(s) and all(m.shape == n.shape for m, n in zip(t["masks"], s.masks, strict=True))
    try:
        from nucls_utils.evaluation import ImageTruth  # noqa: F401
    except ImportError:
        pytest.skip("nucls_utils.evaluation.ImageTruth does not exist yet; truth_arrays tested only")
    truth = md.eval_truth(s)
    np.testing.assert_array_equal(np.asarray(truth.boxes), t["boxes"])
    assert list(truth.classes) == t["classes"]
    np.testing.assert_array_equal(truth.ismask, s.ismask)
    assert all(np.array_equal(a, b) for a, b in zip(truth.masks, s.masks, strict=True))
