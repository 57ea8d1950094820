"""Figures on constructed results: written as PNG and SVG, axes labelled, log where it belongs."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sweep import analysis
from sweep.analysis import figures
from test_analysis import grid_frame


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    out = grid_frame(lambda p, s: 0.08 / p["channel_factor"] ** 0.3 * (1 + 0.05 * rng.normal()), seeds=(0, 1))
    out["fewer_layers"] = out["kernel_size"] == 5
    out["history"] = json.dumps([{"loss": 0.08, "val_loss": 0.07, "lr": 1e-3}, {"loss": 0.05, "val_loss": 0.06, "lr": 1e-3}])
    return out


def labelled(ax) -> bool:
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel())


def test_latent_scatter_with_fit_reference_and_legend(frame, tmp_path):
    reference = pd.DataFrame({
        "latent_size": [32, 128, 512, 2048, 8192], "components": [32, 128, 500, 500, 3072],
        "kind": ["exact", "exact", "capped", "capped", "identity"], "pca_mse": [0.02, 0.01, 0.004, 0.004, 0.0],
    })  # fmt: skip
    fig = figures.latent_scatter(frame, power=analysis.power_law(frame), reference=reference, correlation=analysis.latent_correlation(frame))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and labelled(ax)
    assert "log scale" in ax.get_xlabel() and "MSE" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("fit:") for t in legend) and any(t.startswith("PCA") for t in legend)
    assert any("capped" in t for t in legend) and any("identity" in t for t in legend)
    assert {"1", "2", "4", "5 conv", "3 conv (fewer layers)"} <= set(legend)  # both layer counts occur
    assert "Spearman rho" in ax.get_title() and "2 seeds" in ax.get_title()
    # Configurations that share a latent size are spread sideways, so none hides another;
    # the ticks stay at the true sizes, and the legend sits below the axes, not beside them.
    points = max((c.get_offsets() for c in ax.collections), key=len)  # the scatter's
    configs = analysis.configurations(frame)
    assert len(points) == len(configs) and len({round(float(x), 9) for x, _ in points}) == len(configs)
    assert configs["latent_size"].duplicated().any() and "spread sideways" in ax.get_title()
    assert ax.get_legend().get_bbox_to_anchor().y0 < ax.get_position().y0 * fig.bbox.height
    paths = figures.save(fig, tmp_path, "scatter")
    assert [p.name for p in paths] == ["scatter.png", "scatter.svg"] and all(p.stat().st_size > 1000 for p in paths)


def test_effects_interaction_and_learning_curves(frame, tmp_path):
    fig = figures.factor_effects(frame)
    assert len(fig.axes) == 4 and labelled(fig.axes[0]) and "of variance" in fig.axes[0].get_title()
    fig = figures.interaction_plot(frame)
    assert labelled(fig.axes[0]) and fig.axes[0].get_legend() is not None
    keys = {"best": analysis.best(frame).iloc[0]["trial_key"], "worst": analysis.worst(frame).iloc[0]["trial_key"]}
    fig = figures.learning_curves(frame, keys)
    ax = fig.axes[0]
    # A narrow range of losses gets a linear axis (log ticks would crowd it), a wide one a log axis.
    losses = analysis.learning_curves(frame, keys.values())[["loss", "val_loss"]].to_numpy()
    wide = losses.max() / losses.min() > figures.LOG_SPAN
    assert ax.get_yscale() == ("log" if wide else "linear") and labelled(ax) and len(ax.get_legend().get_texts()) == 4
    assert ax.get_ylabel().endswith("log scale" if wide else "linear scale")
    lines = ax.get_lines()
    assert [line.get_markerfacecolor() for line in lines[1::2]] == ["none"] * 2  # hollow validation markers, never hidden
    one = grid_frame(lambda p, s: 0.05, levels={"channel_factor": [1, 2]})
    assert figures.interaction_plot(one) is None  # one factor: no interaction to draw
    plt.close("all")


def test_gallery_composes_the_stored_pngs(frame, tmp_path):
    picks = {"best": analysis.best(frame).iloc[0], "worst": analysis.worst(frame).iloc[0]}
    stored = tmp_path / "trials" / picks["best"]["trial_key"]
    stored.mkdir(parents=True)
    plt.imsave(stored / "reconstructions.png", np.random.default_rng(0).random((40, 120, 3)))
    fig = figures.gallery(tmp_path, picks)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("best: ") and "seed 0 of 2" in titles[0] and titles[1].startswith("worst: ")
    assert len(fig.axes[0].images) == 1 and not fig.axes[1].images  # the missing PNG is said, not drawn
    assert "no reconstructions.png" in fig.axes[1].texts[0].get_text()
    plt.close(fig)


def test_colorization_gallery_shows_each_encoding(frame, tmp_path):
    assert figures.colorization_gallery(frame, tmp_path) is None
    colour = frame.assign(task="colorize", encoding=np.where(frame["channel_factor"] == 1, "lab", "ycbcr"))
    fig = figures.colorization_gallery(colour, tmp_path)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split(" (")[0] for t in titles] == ["encoding lab", "encoding ycbcr"]
    plt.close(fig)
    # ... and classification's best beside them, each named in a few words
    colour.loc[colour.index[:3], ["encoding", "loss"]] = ["lab", "ab_classification"]
    fig = figures.colorization_gallery(colour, tmp_path)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split(" (")[0] for t in titles] == ["encoding lab", "encoding ycbcr", "loss ab_classification"]
    assert titles[-1].split(": ")[1].startswith("5 conv, ch 1, k 3, f 1, lab, latent"), titles[-1]  # the title says the loss
    assert all("=" not in t and ";" not in t for t in titles), titles  # a few words, not the spec's fields
    plt.close(fig)
    fig = figures.colorization_gallery(colour.assign(preset="acml"), tmp_path)  # a preset: named in a few words
    assert fig.axes[-1].get_title(loc="left").split(": ")[1].startswith("acml, lab, latent")
    assert fig.axes[0].get_title(loc="left").split(": ")[1].startswith("acml, latent")
    plt.close(fig)


def test_colorization_gallery_rows_are_labelled_gray_truth_prediction(frame, tmp_path):
    colour = frame.assign(task="colorize", encoding="lab")
    best = analysis.best(colour).iloc[0]["trial_key"]
    stored = tmp_path / "trials" / best
    stored.mkdir(parents=True)
    plt.imsave(stored / "reconstructions.png", np.random.default_rng(0).random((96, 256, 3)))  # three strips of 32 px
    fig = figures.colorization_gallery(colour, tmp_path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gray", "truth", "prediction"]
    assert list(ax.get_yticks()) == pytest.approx([16, 48, 80])  # each label at its strip's middle
    plt.close(fig)
    plain = {"best": analysis.best(frame).iloc[0]}
    (tmp_path / "trials" / plain["best"]["trial_key"]).mkdir(parents=True, exist_ok=True)
    plt.imsave(tmp_path / "trials" / plain["best"]["trial_key"] / "reconstructions.png", np.random.default_rng(0).random((64, 256, 3)))
    ax = figures.gallery(tmp_path, plain).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "reconstruction"] and list(ax.get_yticks()) == pytest.approx([16, 48])
    plt.close("all")


def colour_configs() -> pd.DataFrame:
    return pd.DataFrame({
        "psnr_gain": [-6.5, -3.4, -1.1, 0.2], "colorfulness_ratio": [0.3, 0.5, 0.9, 0.6],
        "encoding": ["lab", "lab", "ycbcr", "ycbcr"], "arch": ["acml", "unet32", "acml", "unet32"], "loss": ["mse", "ab_classification", "mse", "mse"],
    })  # fmt: skip


def test_colour_tradeoff_plots_each_configuration_and_labels_each_line_beside_it():
    configs = colour_configs()
    fig = figures.colour_tradeoff(configs, configs.iloc[[2, 3]], targets=(1.5, 0.8))
    ax = fig.axes[0]
    points = [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_marker() not in ("None", "", None) and len(line.get_xydata()) == 1]
    assert sorted(points) == sorted(zip(configs["psnr_gain"], configs["colorfulness_ratio"]))
    fig.canvas.draw()
    texts = {t.get_text().strip(): t for t in ax.texts}
    assert {"grayscale baseline", "target: +1.5 dB", "target: 0.8 of the truth's colourfulness"} <= set(texts), list(texts)
    to_pixels = ax.transData.transform
    renderer = fig.canvas.get_renderer()
    for label, x in (("grayscale baseline", 0.0), ("target: +1.5 dB", 1.5)):
        box, line_x = texts[label].get_window_extent(renderer), to_pixels((x, 0))[0]
        assert line_x - 15 < box.x0 < box.x1 <= line_x + 1, (label, box, line_x)  # hugging its own line, on its left
    box, line_y = texts["target: 0.8 of the truth's colourfulness"].get_window_extent(renderer), to_pixels((0, 0.8))[1]
    assert line_y - 1 <= box.y0 < line_y + 5 and box.x1 < to_pixels((-1.1, 0))[0]  # just above its line, clear of the others' labels
    plt.close(fig)


def test_optuna_figures(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    single = optuna.create_study(storage=storage, study_name="single", sampler=optuna.samplers.RandomSampler(seed=0))
    single.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_int("k", 1, 3), n_trials=12)
    made = figures.optuna_figures(storage, "single")
    assert set(made) == {"optuna_history", "optuna_importances"}
    multi = optuna.create_study(storage=storage, study_name="multi", directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    multi.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.suggest_float("y", 0, 1)), n_trials=12)
    made = figures.optuna_figures(storage, "multi")
    assert set(made) == {"optuna_history", "optuna_importances", "optuna_pareto"}
    for name, fig in made.items():
        figures.save(fig, tmp_path, name)
        assert (tmp_path / f"{name}.png").exists()


def config_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's mean over seeds, computed here from the frame (not by the analysis)."""
    factors = ["fewer_layers", "channel_factor", "kernel_size", "compression_factor"]
    return frame.groupby(factors, as_index=False)[["test_mse", "latent_size"]].mean()


def test_the_scatter_plots_each_configurations_mean_error_at_its_latent_size(frame):
    expected = config_means(frame)
    ax = figures.latent_scatter(frame).axes[0]
    points = max((c.get_offsets() for c in ax.collections), key=len)
    assert sorted(float(y) for _, y in points) == pytest.approx(sorted(expected["test_mse"]))
    for x, y in points:
        (latent,) = expected.loc[np.isclose(expected["test_mse"], y), "latent_size"]
        assert abs(np.log10(x / latent)) < 0.2  # at its latent size, spread sideways by a few per cent at most
    plt.close("all")


def test_main_effects_plot_the_mean_error_at_each_level(frame):
    configs = config_means(frame)
    fig = figures.factor_effects(frame)
    for ax in fig.axes:
        factor = ax.get_xlabel().replace(" ", "_")
        expected = configs.groupby(factor)["test_mse"].mean()
        (line,) = ax.lines[:1]
        assert list(line.get_ydata()) == pytest.approx(list(expected)), factor
        levels = [("3 conv" if v else "5 conv") if factor == "fewer_layers" else str(v) for v in expected.index]
        assert [t.get_text() for t in ax.get_xticklabels()] == levels
    plt.close(fig)


def test_learning_curves_plot_each_epochs_losses(frame):
    keys = {"best": analysis.best(frame).iloc[0]["trial_key"]}
    ax = figures.learning_curves(frame, keys).axes[0]
    training, validation = ax.get_lines()[:2]
    assert list(training.get_xdata()) == [1, 2] and list(training.get_ydata()) == pytest.approx([0.08, 0.05])
    assert list(validation.get_xdata()) == [1, 2] and list(validation.get_ydata()) == pytest.approx([0.07, 0.06])
    plt.close("all")
