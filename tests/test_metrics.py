"""Verification metrics on synthetic scores whose answers are known by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge import metrics as m

GENUINE = np.array([0.2, 0.4, 0.6, 0.8])
IMPOSTOR = np.array([0.1, 0.3, 0.5, 0.7])


def test_perfectly_separable_scores():
    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(-0.2, 0.4, same.size))
    result = m.ten_fold_accuracy(scores, same, folds=np.repeat(np.arange(10), 60))
    assert result.mean == 1.0 and result.std == 0.0
    assert np.all((result.thresholds > 0.4) & (result.thresholds < 0.6))
    far, tar, _ = m.roc_curve(scores[same], scores[~same])
    assert m.auc(far, tar) == 1.0
    assert m.eer(far, tar) == 0.0
    points = m.tar_at_far(scores[same], scores[~same], fars=(1e-2, 0.1))
    assert all(p.tar == 1.0 and p.far <= far for far, p in points.items())


def test_best_threshold_interleaved_scores():
    scores = np.r_[GENUINE, IMPOSTOR]
    same = np.r_[np.ones(4, bool), np.zeros(4, bool)]
    # Cuts at 0.15, 0.35, 0.55, 0.75 all get 5/8 right; ties go to the lowest.
    threshold, accuracy = m.best_threshold(scores, same)
    assert threshold == pytest.approx(0.15) and accuracy == 5 / 8


def test_best_threshold_extremes():
    # All genuine: accept everything, just below the lowest score.
    threshold, accuracy = m.best_threshold([0.3, 0.5], [True, True])
    assert accuracy == 1.0 and threshold < 0.3
    threshold, accuracy = m.best_threshold([0.3, 0.5], [False, False])
    assert accuracy == 1.0 and threshold > 0.5


def test_folds_with_known_thresholds():
    # fold 0: same 0.9 / diff 0.1; fold 1: same 0.8 / diff 0.3; fold 2: same 0.5 / diff 0.45.
    scores = np.array([0.9, 0.8, 0.5, 0.1, 0.3, 0.45])
    same = np.array([True, True, True, False, False, False])
    folds = np.array([0, 1, 2, 0, 1, 2])  # interleaved on purpose: labels, not blocks
    result = m.ten_fold_accuracy(scores, same, folds)
    np.testing.assert_allclose(result.thresholds, [0.475, 0.475, 0.55])
    np.testing.assert_allclose(result.accuracies, [1.0, 1.0, 0.5])
    assert result.mean == pytest.approx(2.5 / 3)
    assert result.std == pytest.approx(np.sqrt(1 / 18))  # population std, ddof=0


def test_int_folds_are_consecutive_blocks():
    rng = np.random.default_rng(1)
    scores, same = rng.normal(size=600), rng.random(600) < 0.5
    by_int = m.ten_fold_accuracy(scores, same, 10)
    by_array = m.ten_fold_accuracy(scores, same, np.repeat(np.arange(10), 60))
    np.testing.assert_array_equal(by_int.accuracies, by_array.accuracies)


def test_roc_auc_eer_of_interleaved_scores():
    far, tar, thresholds = m.roc_curve(GENUINE, IMPOSTOR)
    assert thresholds[0] == np.inf and far[0] == 0.0 and tar[0] == 0.0
    assert far[-1] == 1.0 and tar[-1] == 1.0
    assert m.auc(far, tar) == pytest.approx(10 / 16)  # P(genuine > impostor)
    assert m.eer(far, tar) == pytest.approx(0.5)


def test_auc_counts_ties_half():
    far, tar, _ = m.roc_curve([0.5, 0.5], [0.5, 0.5])
    assert m.auc(far, tar) == pytest.approx(0.5)


def test_eer_interpolates_between_points():
    # (far, tar): (0,0) -> (0, 0.6) -> (1, 1). FRR = FAR on the last segment at far = 0.4/1.4.
    assert m.eer([0.0, 0.0, 1.0], [0.0, 0.6, 1.0]) == pytest.approx(0.4 / 1.4)


def test_drop_intermediate_keeps_the_curve():
    rng = np.random.default_rng(2)
    genuine = np.round(rng.normal(0.5, 0.2, 200), 2)  # rounding makes ties
    impostor = np.round(rng.normal(0.0, 0.2, 5000), 2).astype(np.float32)
    full = m.roc_curve(genuine, impostor, drop_intermediate=False)
    kept = m.roc_curve(genuine, impostor)
    assert kept[0].size < full[0].size
    assert m.auc(*kept[:2]) == pytest.approx(m.auc(*full[:2]), abs=1e-12)
    assert m.eer(*kept[:2]) == pytest.approx(m.eer(*full[:2]), abs=1e-12)
    full_points = set(zip(full[0], full[1]))
    assert all(point in full_points for point in zip(kept[0], kept[1]))


@pytest.mark.parametrize(("far", "threshold_above", "tar", "reached"), [
    (1.0, None, 1.0, 1.0), (0.5, 0.3, 0.75, 0.5), (0.25, 0.5, 0.5, 0.25), (0.1, 0.7, 0.25, 0.0),
])
def test_tar_at_far_hand_computed(far, threshold_above, tar, reached):
    point = m.tar_at_far(GENUINE, IMPOSTOR, fars=(far,))[far]
    assert point.tar == tar and point.far == reached
    if threshold_above is None:
        assert point.threshold == 0.1  # accept every impostor: the lowest score
    else:
        assert point.threshold == np.nextafter(threshold_above, np.inf)
    assert m.threshold_at_far(IMPOSTOR, far) == point.threshold


def test_ties_never_push_far_over_target():
    point = m.tar_at_far([0.5, 0.5], [0.5, 0.1], fars=(0.4, 0.5))
    assert point[0.4].far == 0.0 and point[0.4].tar == 0.0
    assert point[0.5].far == 0.5 and point[0.5].tar == 1.0


def test_far_count_rounding():
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 impostors may be accepted.
    impostor = np.arange(100, dtype=np.float64)
    assert m.tar_at_far([1000.0], impostor, fars=(0.29,))[0.29].far == 0.29


def test_float32_thresholds_are_exact():
    just_above = np.nextafter(np.float32(0.3), np.float32(1))
    impostor = np.array([0.1, 0.2, 0.3, just_above, 0.4], dtype=np.float32)
    threshold = m.threshold_at_far(impostor, 0.4)
    # numpy compares float32 arrays with a Python float in float32 (NEP 50): the threshold
    # must be a float32 value itself, or 0.3 + 1e-17 would round back onto 0.3.
    assert np.float32(threshold) == threshold
    assert np.count_nonzero(impostor >= threshold) == 2
    assert np.count_nonzero(impostor.astype(np.float64) >= threshold) == 2
    assert m.tar_at_far([float(just_above)], impostor, fars=(0.4,))[0.4].far == 0.4


def _brute_force(emb_a, ids_a, emb_b=None, ids_b=None):
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    a = unit(emb_a.astype(np.float64))
    if emb_b is None:
        return np.array([a[i] @ a[j] for i, j in itertools.combinations(range(len(a)), 2)
                         if ids_a[i] != ids_a[j]])
    b = unit(emb_b.astype(np.float64))
    return np.array([a[i] @ b[j] for i in range(len(a)) for j in range(len(b))
                     if ids_a[i] != ids_b[j]])


def test_all_vs_all_matches_brute_force():
    rng = np.random.default_rng(3)
    emb, ids = rng.normal(size=(60, 16)), rng.integers(0, 9, 60)
    fast = m.impostor_scores_all_vs_all(emb, ids, chunk=7)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, _brute_force(emb, ids), atol=1e-6)


def test_all_vs_all_cross_set_matches_brute_force():
    rng = np.random.default_rng(4)
    unmasked, ids = rng.normal(size=(50, 16)), np.array([f"id{i}" for i in rng.integers(0, 8, 50)])
    masked = unmasked + rng.normal(scale=0.5, size=unmasked.shape)
    fast = m.impostor_scores_all_vs_all(unmasked, ids, masked, ids, chunk=11)
    np.testing.assert_allclose(fast, _brute_force(unmasked, ids, masked, ids), atol=1e-6)


def test_histogram_fallback_close_to_exact():
    rng = np.random.default_rng(5)
    emb, ids = rng.normal(size=(800, 32)), rng.integers(0, 200, 800)
    exact = m.impostor_scores_all_vs_all(emb, ids)
    hist = m.impostor_scores_all_vs_all(emb, ids, max_bytes=exact.nbytes - 1, bin_width=1e-4)
    assert isinstance(hist, m.ScoreHistogram) and hist.total == exact.size
    genuine = rng.normal(0.3, 0.1, 500)
    fars = (1e-2, 1e-3, 1e-4)
    want, got = m.tar_at_far(genuine, exact, fars), m.tar_at_far(genuine, hist, fars)
    for far in fars:
        assert abs(got[far].threshold - want[far].threshold) <= 1.5e-4
        assert got[far].far <= far
        assert got[far].tar == pytest.approx(want[far].tar, abs=0.01)
    assert m.auc(*m.roc_curve(genuine, hist)[:2]) == pytest.approx(
        m.auc(*m.roc_curve(genuine, exact)[:2]), abs=1e-3)


def test_tar_at_far_on_30m_scores():
    """Exactness at LFW's all-vs-all size (speed is reported by the eval command, not tested)."""
    rng = np.random.default_rng(6)
    impostor = rng.standard_normal(30_000_000, dtype=np.float32)
    genuine = rng.normal(3.0, 1.0, 3000)
    points = m.tar_at_far(genuine, impostor)
    assert points[1e-4].far <= 1e-4 and points[1e-4].threshold == pytest.approx(3.72, abs=0.02)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: m.ten_fold_accuracy([0.1, 0.2], [True]), "shape"),
    (lambda: m.ten_fold_accuracy([0.1, 0.2], [True, False], folds=[0, 0]), "2 distinct"),
    (lambda: m.roc_curve([np.nan], [0.1]), "NaN"),
    (lambda: m.threshold_at_far([0.1], 1.5), r"\[0, 1\]"),
    (lambda: m.impostor_scores_all_vs_all(np.zeros((3, 4)), [0, 1, 2]), "zero"),
    (lambda: m.impostor_scores_all_vs_all(np.ones((3, 4)), [0, 1]), "one label"),
])
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_plots_write_png(tmp_path):
    from benchmarks import plots

    far, tar, _ = m.roc_curve(GENUINE, IMPOSTOR)
    hist = m.ScoreHistogram(counts=np.bincount([5000, 9000], minlength=20000))
    written = [
        plots.plot_roc({"U-U": (far, tar), "U-M": (far, tar * 0.9)}, tmp_path / "roc.png"),
        plots.plot_score_histograms({"U-U": (GENUINE, IMPOSTOR), "M-M": (GENUINE, hist)},
                                    tmp_path / "hist.png"),
        plots.plot_lines({"acc": [0.9, 0.95, 0.97]}, tmp_path / "epochs.png"),
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- paired comparison of two models (benchmarks.paired) ---------------------------------
def test_fold_decisions_reproduce_ten_fold_accuracy():
    rng = np.random.default_rng(3)
    same = rng.random(600) < 0.5
    scores = rng.normal(same * 1.0, 1.0)
    correct, ids, thresholds = m.fold_decisions(scores, same, 10)
    result = m.ten_fold_accuracy(scores, same, 10)
    assert correct.mean() == pytest.approx(result.mean) and np.array_equal(thresholds, result.thresholds)
    assert ids.tolist() == np.repeat(np.arange(10), 60).tolist()


def test_paired_counts_flips_and_matches_the_accuracy_difference():
    from benchmarks.paired import compare_paired

    rng = np.random.default_rng(4)
    same = rng.random(1000) < 0.5
    reference = rng.normal(same * 1.5, 1.0)
    candidate = reference + rng.normal(0, 0.3, reference.size)  # a noisier copy
    result = compare_paired(reference, candidate, same, 10)
    right_ref = m.fold_decisions(reference, same, 10)[0]
    right_cand = m.fold_decisions(candidate, same, 10)[0]
    assert result.reference_only == np.sum(right_ref & ~right_cand) > 0
    assert result.candidate_only == np.sum(right_cand & ~right_ref) > 0
    accuracy = [m.ten_fold_accuracy(s, same, 10).mean for s in (reference, candidate)]
    assert result.difference == pytest.approx(accuracy[1] - accuracy[0])
    assert result.ci95[0] < result.difference < result.ci95[1]
    identical = compare_paired(reference, reference, same, 10)
    assert (identical.reference_only, identical.candidate_only, identical.p_value) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="same pairs"):
        compare_paired(reference, candidate[:-1], same, 10)


def test_mcnemar_exact_hand_computed():
    from benchmarks.paired import mcnemar_exact

    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(4, 4) == 1.0


# ---- noise floor: what noise of a model's own size costs (benchmarks.noise_floor) --------
def _noise_pack(rng, people=150, dim=32):
    from types import SimpleNamespace

    centre = rng.normal(size=(people, dim))
    ids = np.repeat(np.arange(people), 2)

    def faces(spread):
        x = centre[ids] + spread * rng.normal(size=(len(ids), dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    same = [(2 * p, 2 * p + 1) for p in range(people)]
    other = [(2 * p, 2 * ((p + 1 + p % 7) % people) + 1) for p in range(people)]
    pairs = np.array(same + other)
    pack = SimpleNamespace(idx_a=pairs[:, 0], idx_b=pairs[:, 1], fold=np.arange(len(pairs)) % 10,
                           is_same=np.arange(len(pairs)) < people)
    return pack, {"unmasked": faces(0.8), "masked": faces(1.2)}


def _noisy(emb, rng, size):
    out = {}
    for which, x in emb.items():
        y = x + size * rng.normal(size=x.shape).astype(np.float32)
        out[which] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return out


def test_noise_floor_grows_with_the_error_and_is_zero_without_one():
    from benchmarks.noise_floor import noise_floor

    rng = np.random.default_rng(5)
    pack, fp32 = _noise_pack(rng)
    none = noise_floor(fp32, fp32, pack, draws=5)
    assert all((f.mean, f.sd) == (0.0, 0.0) and not f.beyond(0.0) for f in none.values())
    small = noise_floor(fp32, _noisy(fp32, rng, 0.01), pack, draws=20)
    large = noise_floor(fp32, _noisy(fp32, rng, 0.4), pack, draws=20)
    for name in ("U-U", "U-M", "M-M"):
        assert abs(small[name].mean) < 0.01 and large[name].mean < small[name].mean - 0.02, name
        assert large[name].sd > 0 and large[name].draws == 20
    again = noise_floor(fp32, _noisy(fp32, np.random.default_rng(1), 0.4), pack, draws=20)
    assert noise_floor(fp32, _noisy(fp32, np.random.default_rng(1), 0.4), pack, draws=20) == again


def test_noise_floor_beyond_marks_losses_the_noise_does_not_explain():
    from benchmarks.noise_floor import NoiseFloor, noise_floor

    floor = NoiseFloor(mean=-0.001, sd=0.001, draws=40)
    assert floor.beyond(-0.0031) and not floor.beyond(-0.0029) and not floor.beyond(0.002)
    rng = np.random.default_rng(6)
    pack, fp32 = _noise_pack(rng)
    with pytest.raises(ValueError, match="masked embeddings differ in shape"):
        noise_floor(fp32, {"unmasked": fp32["unmasked"], "masked": fp32["masked"][:-1]}, pack)
