"""`sweep.analysis` on constructed results with known answers (nothing here trains)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweep import analysis
from sweep.errors import DataError

LEVELS = {"channel_factor": [1, 2, 4], "compression_factor": [1, 2, 4], "kernel_size": [3, 5]}


def grid_frame(error, levels=LEVELS, seeds=(0,), **fixed) -> pd.DataFrame:
    """One complete row per (grid point, seed); `error(point, seed)` gives its test MSE."""
    rows = []
    names = list(levels)
    for combo in itertools.product(*(levels[n] for n in names)):
        point = dict(zip(names, combo))
        for seed in seeds:
            values = {"fewer_layers": False, "channel_factor": 2, "kernel_size": 3, "compression_factor": 2, **fixed, **point}
            latent = (32 // values["compression_factor"] ** 2) ** 2 * 8 * values["channel_factor"]
            rows.append({
                "trial_key": f"t{len(rows):03d}", "status": "complete", **values, "seed": seed,
                "latent_size": latent, "params": 1000 * values["channel_factor"] + values["kernel_size"],
                "test_mse": error(point, seed), "finished_at": f"{len(rows):03d}",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_an_exact_power_law_is_recovered():
    frame = pd.DataFrame({
        "trial_key": [f"t{i}" for i in range(11)], "status": "complete",
        "channel_factor": range(11), "latent_size": [2**k for k in range(5, 16)],
    })  # fmt: skip
    frame["test_mse"] = 0.3 * frame["latent_size"] ** -0.25
    law = analysis.power_law(frame)
    assert law.b == pytest.approx(-0.25) and law.a == pytest.approx(0.3) and law.r2 == pytest.approx(1.0)
    assert law.b_ci[0] == pytest.approx(-0.25) and law.b_ci[1] == pytest.approx(-0.25)
    assert law.predict([1024])[0] == pytest.approx(0.3 * 1024**-0.25)
    pearson = analysis.latent_correlation(frame, "pearson")
    spearman = analysis.latent_correlation(frame, "spearman")
    assert pearson.estimate == pytest.approx(-1.0) and spearman.estimate == pytest.approx(-1.0)
    assert pearson.n == spearman.n == 11


def test_correlation_matches_scipy_and_its_interval_is_reproducible():
    rng = np.random.default_rng(1)
    frame = grid_frame(lambda p, s: 0.05 - 0.004 * math.log2(p["channel_factor"]) + rng.normal(0, 0.005))
    configs = analysis.configurations(frame)
    rho = analysis.latent_correlation(frame)
    # Spearman's rho written out: Pearson's r of the ranks (ties get their average rank), and
    # its p-value from the t-distribution with n - 2 degrees of freedom.
    ranks = configs[["latent_size", "test_mse"]].rank()
    r = np.corrcoef(ranks["latent_size"], ranks["test_mse"])[0, 1]
    n = len(configs)
    t = r * math.sqrt((n - 2) / (1 - r**2))
    assert rho.estimate == pytest.approx(r) and rho.p_value == pytest.approx(2 * stats.t.sf(abs(t), n - 2))
    assert rho.ci_low < rho.estimate < rho.ci_high and -1 <= rho.ci_low and rho.ci_high <= 1
    assert analysis.latent_correlation(frame) == rho  # fixed bootstrap seed: the same interval every time
    pearson = analysis.latent_correlation(frame, "pearson")
    expected = np.corrcoef(np.log10(configs["latent_size"]), np.log10(configs["test_mse"]))[0, 1]
    assert pearson.estimate == pytest.approx(expected)
    assert pearson.ci_low < pearson.estimate < pearson.ci_high


def test_too_few_configurations_give_no_interval():
    frame = grid_frame(lambda p, s: 0.1 / p["channel_factor"], levels={"channel_factor": [1, 2, 4, 8]})
    rho = analysis.latent_correlation(frame)
    assert rho.n == 4 and rho.estimate == pytest.approx(-1.0) and math.isnan(rho.ci_low) and math.isnan(rho.ci_high)
    assert "no CI" in rho.describe()
    with pytest.raises(ValueError, match="'method'.*Got 'kendall'"):
        analysis.latent_correlation(frame, "kendall")


def test_replicates_are_one_configuration_with_mean_and_spread():
    frame = grid_frame(lambda p, s: 0.01 * p["channel_factor"] + 0.001 * s, seeds=(0, 1, 2))
    frame = pd.concat([frame, frame.iloc[[0]].assign(trial_key="broken", status="failed", test_mse=np.nan, seed=3)])
    configs = analysis.configurations(frame)
    assert len(frame) == 18 * 3 + 1 and len(configs) == 18
    assert set(configs["n_seeds"]) == {3} and all(s == [0, 1, 2] for s in configs["seeds"])
    row = configs[(configs["channel_factor"] == 4)].iloc[0]
    assert row["test_mse"] == pytest.approx(0.041) and row["test_mse_std"] == pytest.approx(0.001)
    assert row["test_mse_min"] == pytest.approx(0.040) and row["test_mse_max"] == pytest.approx(0.042)
    assert row["trial_key"] == row["trial_keys"][0]  # the seed-0 replicate's artefacts
    assert analysis.latent_correlation(frame).n == 18  # configurations, not trials
    assert analysis.varied_factors(frame) == ["channel_factor", "kernel_size", "compression_factor"]
    assert analysis.configurations(configs) is configs  # idempotent: every function takes either


def test_a_planted_main_effect_is_the_most_important_factor():
    step = {1: 0.0, 2: 0.01, 4: 0.03}
    frame = grid_frame(lambda p, s: 0.05 + step[p["compression_factor"]] + 0.001 * (p["kernel_size"] == 5))
    importance = analysis.factor_importance(frame)
    assert list(importance["factor"][:2]) == ["compression_factor", "kernel_size"]
    assert importance.set_index("factor").loc["channel_factor", "share"] == pytest.approx(0.0, abs=1e-12)
    assert importance["share"].sum() == pytest.approx(1.0)  # additive and balanced: main effects explain all
    assert importance.iloc[0]["best_level"] == 1 and importance.iloc[0]["effect_range"] == pytest.approx(0.03)
    effects = analysis.main_effects(frame).set_index(["factor", "level"])
    assert effects.loc[("compression_factor", 4), "mean"] == pytest.approx(0.0805)
    assert effects.loc[("compression_factor", 4), "n"] == 6
    assert effects.loc[("kernel_size", 5), "ci_low"] < effects.loc[("kernel_size", 5), "mean"] < effects.loc[("kernel_size", 5), "ci_high"]
    assert analysis.interactions(frame)["share"].max() == pytest.approx(0.0, abs=1e-12)


def test_a_planted_interaction_is_the_strongest():
    frame = grid_frame(lambda p, s: 0.05 + 0.02 * (p["channel_factor"] == 4 and p["kernel_size"] == 5))
    interaction = analysis.strongest_interaction(frame)
    assert interaction.factors == ("channel_factor", "kernel_size")
    shares = analysis.interactions(frame).set_index(["a", "b"])["share"]
    assert shares[("channel_factor", "compression_factor")] == pytest.approx(0.0, abs=1e-12)
    main = analysis.factor_importance(frame)["share"].sum()
    assert interaction.share == pytest.approx(1 - main)  # noise-free: the rest is the interaction
    assert interaction.table.loc[4, 5] == pytest.approx(0.07) and interaction.table.loc[1, 3] == pytest.approx(0.05)


def test_a_sampled_numeric_factor_is_binned():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"trial_key": [f"t{i}" for i in range(40)], "status": "complete", "learning_rate": rng.uniform(1e-4, 1e-2, 40)})
    frame["test_mse"] = 0.05 + frame["learning_rate"]
    effects = analysis.main_effects(frame)
    assert len(effects) == analysis.stats.N_BINS and effects["n"].sum() == 40


def test_pareto_front():
    points = [(32, 0.05), (64, 0.03), (64, 0.04), (128, 0.03), (256, 0.01), (256, 0.01), (512, 0.02)]
    frame = pd.DataFrame({
        "trial_key": [f"t{i}" for i in range(len(points))], "status": "complete", "channel_factor": range(len(points)),
        "latent_size": [p[0] for p in points], "test_mse": [p[1] for p in points],
        "test_psnr": [10 * math.log10(1 / p[1]) for p in points], "params": [7 - i for i in range(len(points))],
    })  # fmt: skip
    front = analysis.pareto_front(frame)
    assert list(front["trial_key"]) == ["t0", "t1", "t4", "t5"]  # the tie at (256, 0.01) keeps both
    assert list(analysis.pareto_front(frame, metric="test_psnr")["trial_key"]) == ["t0", "t1", "t4", "t5"]
    # against params (7 - i): t6 is cheapest; only configurations with a lower error than all cheaper ones remain
    assert list(analysis.pareto_front(frame, cost="params")["trial_key"]) == ["t6", "t5"]


def test_best_worst_first_by_any_metric():
    frame = grid_frame(lambda p, s: 0.01 * p["channel_factor"] * p["compression_factor"])
    frame["test_psnr"] = 10 * np.log10(1 / frame["test_mse"])
    frame["test_ssim"] = 1 - frame["test_mse"] - 0.001 * frame["kernel_size"]
    assert analysis.best(frame).iloc[0]["test_mse"] == pytest.approx(0.01)
    assert analysis.worst(frame).iloc[0]["test_mse"] == pytest.approx(0.16)
    assert analysis.best(frame, "test_psnr").iloc[0]["test_mse"] == pytest.approx(0.01)  # higher PSNR is better
    assert analysis.best(frame, "test_ssim").iloc[0]["kernel_size"] == 3
    assert list(analysis.best(frame, n=3)["test_mse"]) == sorted(frame["test_mse"])[:3]
    first = analysis.first(frame)
    assert len(first) == 1 and first.iloc[0][["channel_factor", "kernel_size", "compression_factor"]].tolist() == [2, 3, 2]
    assert first.iloc[0]["label"] == "5 conv, ch 2, k 3, f 2"
    assert analysis.first(frame[frame["kernel_size"] == 5]).empty
    with pytest.raises(ValueError, match="unknown metric 'test_psnrr'"):
        analysis.best(frame, "test_psnrr")


def test_learning_curves_read_the_history():
    frame = grid_frame(lambda p, s: 0.05, levels={"channel_factor": [1, 2]})
    frame["history"] = [json.dumps([{"loss": 0.1, "val_loss": 0.2, "lr": 1e-3}, {"loss": 0.05, "val_loss": 0.1, "lr": 1e-3}])] * 2
    curves = analysis.learning_curves(frame, ["t001"])
    assert list(curves["epoch"]) == [1, 2] and list(curves["val_loss"]) == [0.2, 0.1]


def test_metric_names():
    assert analysis.higher_is_better("test_psnr") and analysis.higher_is_better("val_ssim")
    assert not analysis.higher_is_better("test_mse")
    assert analysis.metric_label("test_mse").startswith("test MSE (") and "dB" in analysis.metric_label("test_psnr")


def test_recorded_data_dirs(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text(json.dumps({"argv": ["-m", "sweep.grid", "--data-dir", "/data/x", "--epochs", "1"]}))
    (tmp_path / "runs" / "b.json").write_text(json.dumps({"argv": ["--data-dir=/data/y"]}))
    assert analysis.recorded_data_dirs(tmp_path) == ["/data/y", "/data/x"]


# --------------------------------------------------------------------------- the PCA reference


def synthetic_rows(synthetic, latent_sizes, **protocol) -> pd.DataFrame:
    base = {"dataset": "synthetic", "data_id": synthetic.data_id, "task": "reconstruct", "train_fraction": 1.0,
            "val_fraction": 0.1, "train_limit": 48, "image_size": None}  # fmt: skip
    return pd.DataFrame([
        {"trial_key": f"t{k}", "status": "complete", "channel_factor": k, "latent_size": k, "test_mse": 0.05, **base, **protocol}
        for k in latent_sizes
    ])  # fmt: skip


def test_pca_reference_on_the_trials_own_images(synthetic):
    from sweep.data import make_splits
    from sweep.metrics import mse

    frame = synthetic_rows(synthetic, [4, 16, 64, 4096])
    ref = analysis.pca_reference(frame).set_index("latent_size")
    splits = make_splits(synthetic, 1.0, 0.1, 48)
    n_train = len(splits.train)  # 43: 48 minus 5 for validation
    assert set(ref["n_train"]) == {n_train}
    assert ref.loc[4, "kind"] == "exact" and ref.loc[16, "kind"] == "exact" and ref.loc[4, "components"] == 4
    assert ref.loc[64, "kind"] == "capped" and ref.loc[64, "components"] == n_train - 1  # centred: rank n - 1
    assert ref.loc[4096, "kind"] == "identity" and ref.loc[4096, "pca_mse"] == 0.0  # >= 32 * 32 * 3 values
    assert ref.loc[4, "pca_mse"] > ref.loc[16, "pca_mse"] > ref.loc[64, "pca_mse"] > 0
    # optimality: no other 4-dimensional linear code of the training images does better on them
    train = splits.train.reshape(n_train, -1).astype(np.float64)
    test = splits.test.reshape(len(splits.test), -1).astype(np.float64)
    mean = train.mean(axis=0)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(train.shape[1], 4)))[0].T
    random_error = mse(test, np.clip(mean + ((test - mean) @ basis.T) @ basis, 0, 1))
    assert ref.loc[4, "pca_mse"] < random_error


def test_pca_reference_refuses_other_images(synthetic):
    frame = synthetic_rows(synthetic, [4], data_id="synthetic-512-128-0000000000000000")
    with pytest.raises(DataError, match="not in any data folder"):
        analysis.pca_reference(frame)
    colour = synthetic_rows(synthetic, [4], task="colorize")
    assert analysis.pca_reference(colour).empty  # no linear reference for colorization


# --------------------------------------------------------------------------- Optuna studies


def test_optuna_importance_of_a_stored_study(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 10 * t.suggest_float("x", 0, 1) + 0.01 * t.suggest_float("y", 0, 1), n_trials=30)
    importance = analysis.optuna_importance(storage, "s")
    assert list(importance["param"]) == ["x", "y"] and importance["importance"].iloc[0] > 0.5
    assert importance["evaluator"].iloc[0] in ("fanova", "ped_anova")
    with pytest.raises(ValueError, match="no study 'nope'.*studies there: s"):
        analysis.optuna_importance(storage, "nope")
