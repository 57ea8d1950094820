"""Runs kept apart: the comparable groups of a results folder (`load_results`' `group`), the
analysis refusing a frame that pools them, and `python -m sweep.report` analysing each group
apart, with the same numbers as a folder holding that group's rows alone."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from conftest import run_cli, small_space
from sweep import analysis
from sweep.errors import SpecError
from sweep.results import GroupError, load_results, write_row
from sweep.results.schema import unknown_columns, varied_text

FACTORS = {"compression_factor": [1, 2, 4], "channel_factor": [1, 2]}


def rows(data_id: str, dataset: str, epochs: int, varied=tuple(FACTORS), slope: float = -0.1, **protocol) -> list[dict]:
    """Complete rows of a grid over FACTORS whose test MSE falls with the latent size by `slope` (log-log)."""
    out = []
    for compression in FACTORS["compression_factor"]:
        for channels in FACTORS["channel_factor"]:
            latent = (32 // compression**2) ** 2 * 8 * channels if compression < 4 else 8 * channels
            key = f"{data_id}-{epochs}-{compression}-{channels}-{protocol.get('learning_rate', 0.001)}"
            out.append({
                "trial_key": key, "config_key": key, "data_id": data_id, "status": "complete", "family": "conv_ae",
                "fewer_layers": False, "compression_factor": compression, "channel_factor": channels, "kernel_size": 3,
                "dataset": dataset, "task": "reconstruct", "encoding": "rgb", "loss": "mse", "epochs": epochs,
                "train_fraction": 0.1, "batch_size": 32, "learning_rate": 0.001, "seed": 0, **protocol,
                "latent_size": latent, "params": 1000 * channels + compression,
                "test_mse": 0.05 * latent**slope * (1 + 0.01 * channels), "space": "s", "varied": varied_text(varied),
                "finished_at": f"2024-01-01T00:{len(out):02d}",
            })  # fmt: skip
    return out


def folder(tmp_path, name: str, *parts: list[dict]):
    """A results folder of these rows (their files as `write_row` leaves them, without its TensorBoard runs)."""
    path = tmp_path / name
    (path / "rows").mkdir(parents=True)
    for part in parts:
        for row in part:
            assert not unknown_columns(row)
            (path / "rows" / f"{row['trial_key']}.json").write_text(json.dumps(row))
    return path


def test_runs_of_other_data_or_epochs_are_groups_of_their_own(tmp_path):
    cifar, synthetic, cifar_1 = rows("c1f4", "cifar10", 10), rows("5yn7", "synthetic", 1, slope=0.2), rows("c1f4", "cifar10", 1, slope=-0.3)
    frame = load_results(folder(tmp_path, "mixed", cifar, synthetic, cifar_1))
    assert sorted(frame["group"].unique()) == ["cifar10 reconstruct epochs=1", "cifar10 reconstruct epochs=10", "synthetic reconstruct"]
    assert frame.groupby("group").size().to_dict() == {"cifar10 reconstruct epochs=10": 6, "synthetic reconstruct": 6, "cifar10 reconstruct epochs=1": 6}
    # the statistics refuse the pooled frame with one line naming the groups ...
    for statistic in (analysis.latent_correlation, analysis.power_law, analysis.factor_importance, analysis.best, analysis.configurations):
        with pytest.raises(GroupError) as refused:
            statistic(frame)
        message = str(refused.value)
        assert "\n" not in message and "pools 3 comparable groups" in message and "'synthetic reconstruct'" in message
    # ... and one group's numbers are those of a folder holding its rows alone
    alone = load_results(folder(tmp_path, "alone", cifar))
    assert alone["group"].unique().tolist() == ["cifar10 reconstruct"]
    for group, only in ((frame[frame["group"] == "cifar10 reconstruct epochs=10"], alone), (load_results(tmp_path / "mixed", group="cifar10 reconstruct epochs=10"), alone)):
        assert analysis.latent_correlation(group).estimate == analysis.latent_correlation(only).estimate
        assert analysis.power_law(group).b == pytest.approx(analysis.power_law(only).b)
    assert analysis.latent_correlation(frame[frame["group"] == "synthetic reconstruct"]).estimate == pytest.approx(1.0)
    assert set(analysis.groups(frame)) == set(frame["group"])
    with pytest.raises(SpecError, match="not a group of .*its groups: .*'synthetic reconstruct'"):
        load_results(tmp_path / "mixed", group="cifar10")


def test_a_field_some_space_swept_does_not_split_a_group(tmp_path):
    """A space that varies the learning rate puts every learning rate in one group with the
    grid that fixed it; a colorization space's encodings and losses are one group too."""
    grid = rows("c1f4", "cifar10", 10)
    tuned = rows("c1f4", "cifar10", 10, varied=(*FACTORS, "learning_rate"), learning_rate=0.01)
    frame = load_results(folder(tmp_path, "r", grid, tuned))
    assert frame["group"].unique().tolist() == ["cifar10 reconstruct"]
    assert "learning_rate" in analysis.varied_factors(frame)
    # without the space that swept it, two learning rates are two groups
    frame = load_results(folder(tmp_path, "r2", grid, rows("c1f4", "cifar10", 10, learning_rate=0.01)))
    assert sorted(frame["group"].unique()) == ["cifar10 reconstruct learning_rate=0.001", "cifar10 reconstruct learning_rate=0.01"]


def test_rows_older_than_varied_read_their_committed_space(tmp_path):
    colour = []
    for i, (encoding, loss) in enumerate([("lab", "mse"), ("lab", "ab_classification"), ("rgb", "mse")]):
        row = {**rows("c1f4", "cifar10", 8)[i], "task": "colorize", "encoding": encoding, "loss": loss, "space": "colorization_study"}
        del row["varied"]
        colour.append(row)
    frame = load_results(folder(tmp_path, "r", colour))
    assert frame["group"].unique().tolist() == ["cifar10 colorize"]


def test_a_factor_with_one_level_is_never_an_effect():
    frame = pd.DataFrame(rows("c1f4", "cifar10", 10, varied=(*FACTORS, "train_limit", "augment_flip")))
    frame["train_limit"] = [None, 64] * 3  # None is a level of its own
    frame["augment_flip"] = None  # one level
    importance = analysis.factor_importance(frame, factors=["compression_factor", "train_limit", "augment_flip"])
    assert importance.set_index("factor")["levels"].to_dict() == {"compression_factor": 3, "train_limit": 2}


def _report(results, *extra):
    out = run_cli("sweep.report", "--results", str(results), "--no-reference", *extra)
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.slow
def test_the_report_of_a_folder_of_two_groups_analyses_each_apart(tmp_path):
    """Two runs of one space at other `--epochs` in one folder: two groups, each with its own
    report, figures and the Spearman rho of a folder holding its rows alone."""
    space = small_space(tmp_path, {"compression_factor": [2, 4], "channel_factor": [1, 2]})
    mixed, alone = tmp_path / "mixed", tmp_path / "alone"
    for epochs in ("1", "2"):
        out = run_cli("sweep.grid", "--space", space, "--epochs", epochs, "--results", str(mixed))
        assert out.returncode == 0, out.stderr
    assert f"load_results({str(mixed)!r}, group='synthetic reconstruct epochs=2')" in out.stdout, out.stdout  # (its end says how to select its own)
    _check_apart(mixed, alone, "synthetic reconstruct epochs=1", "synthetic reconstruct epochs=2")


@pytest.mark.slow
def test_the_quick_start_keeps_cifar_and_the_smoke_sweep_apart(tmp_path, shared_data):
    """The quick start's two runs, shrunk: the main job's space on CIFAR, then the same space
    with --dataset synthetic into the same folder."""
    space = small_space(tmp_path, {"compression_factor": [2, 4], "channel_factor": [1, 2]}, dataset="cifar10", train_limit=64)
    mixed, alone = tmp_path / "mixed", tmp_path / "alone"
    out = run_cli("sweep.grid", "--space", space, "--data-dir", str(shared_data), "--results", str(mixed))
    assert out.returncode == 0, out.stderr
    out = run_cli("sweep.grid", "--space", space, "--dataset", "synthetic", "--results", str(mixed))
    assert out.returncode == 0, out.stderr
    _check_apart(mixed, alone, "cifar10 reconstruct", "synthetic reconstruct")


def _check_apart(mixed, alone, first: str, second: str) -> None:
    frame = load_results(mixed)
    assert list(dict.fromkeys(frame["group"])) == [first, second] and (frame["status"] == "complete").all()
    for key in frame.loc[frame["group"] == first, "trial_key"]:  # a folder holding the first group's rows only
        (alone / "rows").mkdir(parents=True, exist_ok=True)
        shutil.copy(mixed / "rows" / f"{key}.json", alone / "rows")
        shutil.copytree(mixed / "trials" / key, alone / "trials" / key)
    out = _report(mixed)
    text = (mixed / "report" / "report.md").read_text()
    assert "holds **2 comparable groups**" in text and f"({first.replace(' ', '-').replace('=', '-')}/report.md)" in text
    summary = json.loads((mixed / "report" / "summary.json").read_text())
    assert list(summary["groups"]) == [first, second]
    for name, group in summary["groups"].items():
        assert group["trials"] == group["configurations"] == 4
        sub = mixed / "report" / group["folder"]
        body = (sub / "report.md").read_text()
        assert f"Group: **{name}**" in body and "latent_vs_error.png" in body and (sub / "latent_vs_error.png").is_file()
        assert "The complete trials are **4 configurations**" in body
        assert json.loads((sub / "summary.json").read_text())["spearman"]["estimate"] == group["spearman"]["estimate"]
    _report(alone)
    only = json.loads((alone / "report" / "summary.json").read_text())
    assert "groups" not in only and only["spearman"]["estimate"] == summary["groups"][first]["spearman"]["estimate"]
    assert (only["spearman"]["p_value"], only["spearman"]["n"]) == (summary["groups"][first]["spearman"]["p_value"], 4)
    assert f"Group: **{first.split(' epochs=')[0]}**, the only comparable group" in (alone / "report" / "report.md").read_text()  # (alone, nothing tells it apart)
    # one group chosen with --group: its report alone, where --out says
    out = _report(mixed, "--group", second, "--out", str(mixed / "one"))
    assert f"Group: **{second}**" in (mixed / "one" / "report.md").read_text()
    assert json.loads((mixed / "one" / "summary.json").read_text())["spearman"]["estimate"] == summary["groups"][second]["spearman"]["estimate"]


def test_a_runs_summary_covers_its_own_trials_whatever_groups_reused_rows_fall_in(tmp_path):
    """A run that reused stored rows trained one way under another spelling (a patience of
    epochs - 1 against none: one key) ends with its summary, not a refusal of pooled groups."""
    from sweep.cli.grid import summarize

    for i in range(4):
        write_row(tmp_path, {
            "trial_key": f"k{i}", "status": "complete", "family": "conv_ae", "task": "reconstruct", "dataset": "cifar10",
            "data_id": "cifar10-5085-1017-abc", "epochs": 10, "early_stopping_patience": 9 if i % 2 else None,
            "latent_size": 256 * (i + 1), "channel_factor": i + 1, "test_mse": 0.02 - i / 1000, "finished_at": str(i),
            "varied": varied_text(["channel_factor"]),
        })  # fmt: skip
    frame = load_results(tmp_path)
    assert frame["group"].nunique() == 2  # (the folder's groups: the recorded patience differs)
    text = summarize(frame, reference_key="k0")
    assert "4 trials: 4 complete" in text and "Spearman correlation of latent size with test MSE: rho = -1.000" in text, text


@pytest.mark.slow
def test_a_row_reused_under_another_spelling_of_its_training_is_in_the_group_of_both_runs(tmp_path):
    """The second run spells its early stopping as a patience of epochs - 1 (it trains as none
    does: one key), reuses the first run's rows and trains one more point: one group, the
    rows of both runs compared together."""
    first = small_space(tmp_path, {"channel_factor": [1, 2]}, "first", epochs=2)
    second = small_space(tmp_path, {"channel_factor": [1, 2, 4]}, "second", epochs=2, early_stopping_patience=1)
    results = tmp_path / "results"
    for space in (first, second):
        out = run_cli("sweep.grid", "--space", space, "--results", str(results))
        assert out.returncode == 0, out.stderr
    assert "2 already stored, 1 to run" in out.stdout + out.stderr, out.stderr
    frame = load_results(results)
    assert len(frame) == 3 and set(frame["early_stopping_patience"].fillna(-1)) == {-1, 1}  # (recorded as each run spelt it)
    assert frame["group"].nunique() == 1, frame["group"].tolist()
    assert analysis.latent_correlation(frame, "spearman", "test_mse").n == 3
