"""`python -m sweep.optuna` and `sweep.grid --storage`: studies that resume, Pareto fronts,
one results store for both drivers, and many workers sharing one PostgreSQL study."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest

from conftest import ROOT, report_folder, run_cli, small_space, study_summaries
from sweep.results import load_results

pytestmark = pytest.mark.slow



def tiny_space(tmp_path, factors: dict, name: str = "tiny", **protocol) -> str:
    return small_space(tmp_path, factors, name, **{"train_limit": 32, **protocol})


def load_study(url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def only_study(url: str):
    summaries = study_summaries(url)
    if len(summaries) > 1:  # a local grid run beside the Optuna study in RESULTS/optuna.db (sweep.run.record)
        summaries = [s for s in summaries if "-grid-" not in s.study_name]
    (summary,) = summaries
    return load_study(url, summary.study_name)


def test_a_study_continues_across_invocations(tmp_path):
    space = tiny_space(tmp_path, {"kernel_size": [3, 5], "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    results = tmp_path / "o"
    for _ in range(2):
        out = run_cli("sweep.optuna", "--trials", "2", "--space", space, "--results", str(results))
        assert out.returncode == 0, out.stderr
    study = only_study(f"sqlite:///{results}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    frame = load_results(results)
    assert len(frame) == 4 and set(frame["status"]) == {"complete"}
    assert sorted(frame["optuna_trial"]) == [0, 1, 2, 3] and set(frame["study_name"]) == {study.study_name}
    assert set(frame["optuna_state"]) == {"COMPLETE"} and set(frame["driver"]) == {"optuna"}
    by_number = {t.number: t for t in study.trials}
    for _, row in frame.iterrows():
        trial = by_number[int(row["optuna_trial"])]
        assert trial.user_attrs["trial_key"] == row["trial_key"]
        assert trial.value == pytest.approx(row["val_mse"])
    assert "best trial (val_mse, minimize)" in out.stdout and "optuna-dashboard sqlite:///" in out.stdout
    assert "from only 4 complete trials: a rough guide until there are 20 or more" in out.stdout, out.stdout  # importances' caveat
    assert re.search(r"#\d+ \dconv ch\d+ k[35] f\d+ learning_rate=[\d.e-]+: latent", out.stderr), out.stderr  # the sampled factor in the trial line


def test_pareto_front_members_are_non_dominated_in_the_store(tmp_path):
    space = tiny_space(tmp_path, {"compression_factor": [1, 2, 4], "channel_factor": [1, 2]})
    results = tmp_path / "o"
    out = run_cli(
        "sweep.optuna", "--trials", "5", "--space", space, "--results", str(results),
        "--objectives", "test_mse,latent_size", "--sampler-seed", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Pareto front of test_mse vs latent_size" in out.stdout
    front_keys = set(re.findall(r"trial_key ([0-9a-f]{16})", out.stdout.split("Pareto front")[1]))
    assert front_keys
    frame = load_results(results)
    rows = frame[frame["status"] == "complete"]
    for key in front_keys:
        member = rows[rows["trial_key"] == key].iloc[0]
        dominated = rows[
            (rows["test_mse"] <= member["test_mse"]) & (rows["latent_size"] <= member["latent_size"])
            & ((rows["test_mse"] < member["test_mse"]) | (rows["latent_size"] < member["latent_size"]))
        ]  # fmt: skip
        assert dominated.empty, f"{key} is dominated by {list(dominated['trial_key'])}"


def test_both_drivers_share_one_store_and_never_train_twice(tmp_path):
    space = tiny_space(tmp_path, {"kernel_size": [3]})
    results = tmp_path / "r"
    grid = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert grid.returncode == 0, grid.stderr
    (row,) = load_results(results).to_dict("records")
    out = run_cli("sweep.optuna", "--trials", "1", "--space", space, "--results", str(results), "--sampler", "grid")
    assert out.returncode == 0, out.stderr
    frame = load_results(results)
    assert len(frame) == 1 and frame.iloc[0]["finished_at"] == row["finished_at"]  # not trained again
    (trial,) = only_study(f"sqlite:///{results}/optuna.db").trials
    assert trial.user_attrs["trial_key"] == row["trial_key"] and trial.user_attrs["reused_row"] is True
    assert trial.value == pytest.approx(row["val_mse"])


def test_an_optuna_study_in_a_shared_database_puts_every_row_there_and_reuses_other_machines_rows(tmp_path):
    """`sweep.optuna --storage URL` on two machines (two results folders): every row goes to
    the database's results table, and a configuration another machine completed there is
    reported from its row, not trained again."""
    space = tiny_space(tmp_path, {"kernel_size": [3]})
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    first = run_cli("sweep.optuna", "--trials", "1", "--space", space, "--results", str(tmp_path / "a"), "--storage", url, "--sampler", "grid")
    assert first.returncode == 0, first.stderr
    (row,) = load_results(url).to_dict("records")
    assert row["status"] == "complete" and row["study_name"] and row["optuna_trial"] == 0
    second = run_cli("sweep.optuna", "--trials", "1", "--space", space, "--results", str(tmp_path / "b"), "--storage", url, "--study", "again")
    assert second.returncode == 0, second.stderr
    assert load_results(tmp_path / "b").empty  # nothing trained on the second machine
    trial = load_study(url, "again").trials[0]
    assert trial.user_attrs["reused_row"] is True and trial.value == pytest.approx(row["val_mse"])
    assert len(load_results(url)) == 1


def test_pruning_reads_the_objective_in_its_own_direction(tmp_path):
    """With --objectives val_psnr the pruner sees validation PSNR (dB, larger is better) after
    every epoch, not a loss, and prunes the trials that fall below the median of the completed
    ones: enough trials run past the median pruner's 5 start-up trials that some are pruned,
    and exactly those the rule picks for a maximised objective (recomputed here from the
    reported values), never the better half."""
    space = tiny_space(tmp_path, {"learning_rate": [1e-5, 3e-3, 1e-2], "kernel_size": [3, 5], "channel_factor": [1, 2]}, epochs=3)
    results = tmp_path / "o"
    out = run_cli(
        "sweep.optuna", "--trials", "10", "--space", space, "--results", str(results), "--objectives", "val_psnr",
        "--sampler", "grid", "--sampler-seed", "0", "--workers", "1",
    )  # fmt: skip  (the grid sampler: ten distinct points, none reused; one worker: trials end in order)
    assert out.returncode == 0, out.stderr
    study = only_study(f"sqlite:///{results}/optuna.db")
    assert study.direction.name == "MAXIMIZE"
    rows = load_results(results).set_index("trial_key")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 10 and not any(t.user_attrs.get("reused_row") for t in trials)
    pruned = []
    for index, trial in enumerate(trials):
        row = rows.loc[trial.user_attrs["trial_key"]]
        values = [trial.intermediate_values[epoch] for epoch in sorted(trial.intermediate_values)]
        assert sorted(trial.intermediate_values) == list(range(len(values))) and all(5 < value < 60 for value in values), values  # decibels, not a loss
        # Optuna's median rule, in the objective's own direction (larger is better): from the
        # 6th trial on, after the warm-up epoch, stop when the best value so far is below the
        # median of the completed trials' values at that epoch.
        done = [t for t in trials[:index] if t.state.name == "COMPLETE"]
        due = next((
            epoch for epoch in range(1, len(values))
            if len(done) >= 5 and max(values[: epoch + 1]) < statistics.median(t.intermediate_values[epoch] for t in done)
        ), None)  # fmt: skip
        if due is None:
            assert trial.state.name == "COMPLETE" and len(values) == 3, (trial.number, values)
            assert row["status"] == "complete" and values[int(row["best_epoch"]) - 1] == pytest.approx(row["val_psnr"], rel=1e-5)
            assert trial.value == pytest.approx(row["val_psnr"])
        else:
            assert trial.state.name == "PRUNED" and len(values) == due + 1, (trial.number, values, due)
            assert row["status"] == "pruned" and row["optuna_state"] == "PRUNED" and row["epochs_run"] == due + 1
            pruned.append(trial.number)
    assert pruned and all(number >= 5 for number in pruned), pruned  # something was pruned, never a start-up trial
    assert f"({len(trials) - len(pruned)} complete, {len(pruned)} pruned, 0 fail)" in out.stdout, out.stdout


@pytest.mark.parametrize("objective", ["latent_size", "train_seconds", "test_ab_rmse"])
def test_an_objective_with_no_per_epoch_value_is_not_pruned_on(tmp_path, objective):
    results = tmp_path / "o"
    out = run_cli("sweep.optuna", "--trials", "1", "--space", tiny_space(tmp_path, {"kernel_size": [3]}),
                  "--results", str(results), "--objectives", objective)  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"--pruner median: the objective '{objective}' has no value before a trial ends" in out.stderr
    assert "pass --pruner none" in out.stderr and not results.exists()


def test_the_grid_sampler_refuses_a_log_range(tmp_path):
    space = tiny_space(tmp_path, {"kernel_size": [3], "channel_factor": {"low": 1, "high": 4, "log": True}})
    out = run_cli("sweep.optuna", "--trials", "1", "--space", space, "--results", str(tmp_path / "o"), "--sampler", "grid")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--sampler grid needs a space whose factors are all lists or stepped ranges (a log range has no grid)" in out.stderr


def test_what_each_objective_is_pruned_on():
    from sweep.run.study import pruned_on

    assert pruned_on(("val_mse",), "median") == "val_mse"
    assert pruned_on(("test_psnr",), "hyperband") == "val_psnr"  # the test split is never looked at in training
    assert pruned_on(("test_ssim",), "median") == "val_ssim"
    assert pruned_on(("latent_size",), "median") is None
    assert pruned_on(("val_mse",), "none") is None and pruned_on(("val_mse", "latent_size"), "median") is None


def test_a_grid_worker_never_runs_a_point_it_did_not_take(tmp_path, monkeypatch):
    """Another machine takes the last waiting grid point right after this worker saw it
    waiting: the worker must then stop, not create and sample a configuration of its own."""
    import optuna

    from sweep.run.queue import Queue
    from sweep.run.study import StudyConfig, open_study
    from sweep.run.study_job import OptunaTrialJob
    from sweep.space import load_space

    space = load_space(tiny_space(tmp_path, {"kernel_size": [3]}))
    url = f"sqlite:///{tmp_path}/study.db"
    config = StudyConfig(storage_url=url, study_name="race", sampler="random", pruner="none")
    open_study(config)
    assert config.queue().fill([(point, f"key{i}") for i, point in enumerate(space.grid_points())]) == 1
    real_rows = Queue.rows
    taken = []

    def racing(self, *states):
        found = real_rows(self, *states)
        if states == ("waiting",) and found and not taken:  # another machine takes the point just now
            taken.append(None)
            taken[0] = config.queue().claim_next("another machine")
        return found

    monkeypatch.setattr(Queue, "rows", racing)
    results = tmp_path / "r"
    assert OptunaTrialJob(config, space, None, str(results), enqueued_only=True, run="this run")() is None
    monkeypatch.undo()
    assert taken and taken[0] is not None and config.queue().counts() == {"running": 1}
    assert optuna.load_study(study_name="race", storage=url).get_trials() == []  # no trial of this worker's own
    assert not list(results.glob("rows/*.json"))


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    import sweep.train.step
    from sweep.cli.tune import main

    real_build = sweep.train.step.build_autoencoder

    def build(spec, *args, **kwargs):
        if spec.kernel_size == 5:
            raise RuntimeError("simulated failure")
        return real_build(spec, *args, **kwargs)

    monkeypatch.setattr(sweep.train.step, "build_autoencoder", build)
    space = tiny_space(tmp_path, {"kernel_size": [3, 5]})
    results = tmp_path / "o"
    assert main(["--trials", "2", "--space", space, "--results", str(results), "--sampler", "grid", "--workers", "1"]) == 0
    study = only_study(f"sqlite:///{results}/optuna.db")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.user_attrs["error"] == "RuntimeError: simulated failure"
    frame = load_results(results).set_index("trial_key")
    assert frame.loc[failed.user_attrs["trial_key"], "status"] == "failed"
    assert frame.loc[failed.user_attrs["trial_key"], "optuna_state"] == "FAIL"


# ---- PostgreSQL: several processes on one study -------------------------------------------------


def start_grid(space: str, results, url: str, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "sweep.grid", "--space", space, "--results", str(results), "--storage", url, "--workers", "1", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def grid_points_by_state(study):
    table: dict[int, list[str]] = {}
    for trial in study.trials:
        table.setdefault(trial.user_attrs.get("grid_point"), []).append(trial.state.name)
    return table


@pytest.mark.postgres
def test_two_workers_with_their_own_results_run_a_12_point_grid_each_point_once(tmp_path, postgres_url):
    """The README's two terminals: the same command with the plain postgresql:// URL and a
    results folder each; then the whole grid from the URL, and its report."""
    space = tiny_space(tmp_path, {"channel_factor": [1, 2, 4], "kernel_size": [3, 5], "fewer_layers": [False, True]})
    folders = [tmp_path / "runs" / "a", tmp_path / "runs" / "b"]
    workers = [start_grid(space, folder, postgres_url) for folder in folders]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = only_study(postgres_url)
    table = grid_points_by_state(study)
    assert set(table) == set(range(12))
    assert all(states == ["COMPLETE"] for states in table.values()), table
    frame = load_results(postgres_url)
    assert len(frame) == 12 and frame["trial_key"].is_unique and set(frame["status"]) == {"complete"}
    assert set(frame["trial_key"]) == {t.user_attrs["trial_key"] for t in study.trials}
    here = [set(load_results(folder)["trial_key"]) for folder in folders]
    assert here[0] | here[1] == set(frame["trial_key"]) and not here[0] & here[1]  # both did part, none twice
    assert here[0] and here[1]
    assert "every machine's rows: sweep.results.load_results('postgresql://" in outputs[0]
    out = run_cli("sweep.report", "--results", postgres_url, "--no-reference", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = report_folder(out, tmp_path)
    assert folder.name.startswith("report-127.0.0.1-sweep_test_")  # (a URL's report: a named folder, said in the output)
    assert "Covers **12 trials**: 12 complete" in (folder / "report.md").read_text()


@pytest.mark.postgres
def test_a_killed_worker_is_failed_after_the_grace_period_and_retried(tmp_path, postgres_url):
    space = tiny_space(tmp_path, {"channel_factor": [1, 2, 4], "kernel_size": [3, 5]}, epochs=3, train_limit=64)
    results = tmp_path / "shared-results"
    beat = ("--heartbeat-interval", "1", "--grace-period", "3")
    victim = start_grid(space, results, postgres_url, *beat)
    # Wait until the victim is inside a trial, then kill it without warning.
    deadline = time.monotonic() + 240
    victim_trial = None
    while victim_trial is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = only_study(postgres_url)
        except (KeyError, ValueError):
            continue
        running = [t for t in study.trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        victim_trial = running[0] if running else None
    assert victim_trial is not None, "the victim never started a trial"
    time.sleep(2)  # mid-training
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = start_grid(space, results, postgres_url, *beat)
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output

    study = only_study(postgres_url)
    killed = next(t for t in study.trials if t.number == victim_trial.number)
    assert killed.state.name == "FAIL"
    table = grid_points_by_state(study)
    assert set(table) == set(range(6))
    for point, states in table.items():
        assert states.count("COMPLETE") == 1, (point, states)
    assert table[victim_trial.user_attrs["grid_point"]] == ["FAIL", "COMPLETE"]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == victim_trial.number)
    assert retry.state.name == "COMPLETE" and retry.user_attrs["trial_key"] == victim_trial.user_attrs["trial_key"]
    frame = load_results(results)
    assert len(frame) == 6 and frame["trial_key"].is_unique and set(frame["status"]) == {"complete"}


def test_a_sampled_point_the_space_excludes_is_pruned_untrained(tmp_path):
    import yaml

    space = tiny_space(tmp_path, {"kernel_size": [3, 5], "channel_factor": [1, 2]})
    document = yaml.safe_load(open(space))
    document["exclude"] = [{"kernel_size": 5, "channel_factor": 2}]
    open(space, "w").write(yaml.safe_dump(document))
    results = tmp_path / "r"
    out = run_cli("sweep.optuna", "--trials", "4", "--space", space, "--results", str(results), "--sampler", "grid")
    assert out.returncode == 0, out.stderr
    trials = only_study(f"sqlite:///{results}/optuna.db").trials
    states = {(t.params["kernel_size"], t.params["channel_factor"]): t.state.name for t in trials}
    assert states == {(3, 1): "COMPLETE", (3, 2): "COMPLETE", (5, 1): "COMPLETE", (5, 2): "PRUNED"}
    assert len(load_results(results)) == 3  # the excluded point was never trained


def test_losing_the_race_to_create_the_schema_is_recognised_inside_optunas_wrapper():
    """Machines opening one empty database at once: the loser of the version row's insert sees
    only Optuna's "exception raised during the commit"; the duplicate key is in its cause."""
    import optuna
    import sqlalchemy.exc

    from sweep.run.storage import lost_schema_race

    duplicate = sqlalchemy.exc.IntegrityError("INSERT INTO version_info", {}, Exception('duplicate key value violates unique constraint "version_info_pkey"'))
    try:
        try:
            raise duplicate
        except sqlalchemy.exc.IntegrityError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically happens due to invalid data in the commit, e.g. exceeding max length.") from err
    except optuna.exceptions.StorageInternalError as wrapped:
        assert "duplicate" not in str(wrapped) and lost_schema_race(wrapped)
    assert lost_schema_race(Exception('type "studydirection" already exists'))
    assert not lost_schema_race(optuna.exceptions.StorageInternalError("An exception is raised during the commit."))
    assert not lost_schema_race(ValueError("no such study"))


def test_study_names_stand_while_a_new_protocol_field_is_at_its_default():
    """Adding `annealed_temperature` to the protocol changed no study's hash: machines of
    either version, and a resumed Optuna run, find the same one."""
    from sweep.run.study import study_name_for
    from sweep.space import load_space

    root = ROOT / "search_spaces"
    assert study_name_for("grid", load_space(root / "colorization_classification.yaml"), ["d1"], ("val_mse",)) == "colorization_classification-grid-d1-10ep-f0426724"
    assert study_name_for("optuna", load_space(root / "seed002_grid.yaml"), ["d1"], ("val_mse",)) == "seed002_grid-optuna-d1-10ep-41db290d"
    hot = load_space(root / "colorization_classification.yaml").with_protocol(annealed_temperature=0.7)
    assert not study_name_for("grid", hot, ["d1"], ("val_mse",)).endswith("-f0426724")


def test_study_names_read_space_driver_datasets_and_epochs_before_the_hash(tmp_path):
    """optuna-dashboard lists studies by name: what a reader needs to tell them apart comes
    first (the dataset's name from its data id, the epochs), the hash keeps them unique."""
    from sweep.run.study import study_name_for
    from sweep.space import load_space

    space = load_space(tiny_space(tmp_path, {"kernel_size": [3, 5]}, epochs=3))
    cifar, synthetic = "cifar10-5000-1000-0123456789abcdef", "synthetic-48-16-fedcba9876543210"
    name = study_name_for("grid", space, [cifar], ("val_mse",))
    assert re.fullmatch(r"tiny-grid-cifar10-3ep-[0-9a-f]{8}", name), name
    both = study_name_for("optuna", space, [synthetic, cifar, cifar], ("val_mse",))
    assert re.fullmatch(r"tiny-optuna-cifar10\+synthetic-3ep-[0-9a-f]{8}", both), both
    assert study_name_for("grid", space.with_protocol(epochs=4), [cifar], ("val_mse",)).startswith("tiny-grid-cifar10-4ep-")


def test_a_study_stored_under_its_earlier_hash_only_name_is_the_one_found(tmp_path):
    """Studies created before names were readable (`SPACE-KIND-HASH`) are resumed under that
    name: asked with the storage, `study_name_for` finds them; a new storage gets the readable
    name, and one that holds both (a study started after the upgrade) keeps the readable one."""
    import optuna

    from sweep.run.study import study_name_for
    from sweep.space import load_space

    space = load_space(tiny_space(tmp_path, {"kernel_size": [3, 5]}))
    name = study_name_for("grid", space, ["d1"], ("val_mse",))
    legacy = f"tiny-grid-{name.rsplit('-', 1)[1]}"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert study_name_for("grid", space, ["d1"], ("val_mse",), url) == name
    assert not (tmp_path / "studies.db").exists()  # asking creates no database
    assert study_name_for("grid", space, ["d1"], ("val_mse",), f"journal:{tmp_path / 'journal.log'}") == name
    optuna.create_study(study_name=legacy, storage=url)
    assert study_name_for("grid", space, ["d1"], ("val_mse",), url) == legacy
    assert study_name_for("optuna", space, ["d1"], ("val_mse",), url) != legacy  # another kind: its own study
    optuna.create_study(study_name=name, storage=url)
    assert study_name_for("grid", space, ["d1"], ("val_mse",), url) == name


def test_a_shared_grid_stored_under_its_earlier_name_is_resumed_not_trained_again(tmp_path):
    """A database whose grid study (and queue) an earlier version created under the hash-only
    name: the rerun finds it there, queues nothing and trains nothing."""
    from sweep.run import grid_trials
    from sweep.run.study import study_name_for
    from sweep.space import load_space

    space = tiny_space(tmp_path, {"kernel_size": [3, 5]})
    data_ids = [spec.data_id for _, spec in grid_trials(load_space(space), None)]
    legacy = f"tiny-grid-{study_name_for('grid', load_space(space), data_ids, ('val_mse',)).rsplit('-', 1)[1]}"
    url, results = f"sqlite:///{tmp_path / 'cluster.db'}", tmp_path / "r"
    first = run_cli("sweep.grid", "--space", space, "--results", str(results), "--storage", url, "--study", legacy)  # (as the earlier version named it)
    assert first.returncode == 0, first.stderr
    stored = load_results(results).set_index("trial_key")["finished_at"].to_dict()
    assert len(stored) == 2
    again = run_cli("sweep.grid", "--space", space, "--results", str(results), "--storage", url)
    assert again.returncode == 0, again.stderr
    assert f"in study {legacy!r}" in again.stderr and "(0 queued now" in again.stderr, again.stderr
    assert load_results(results).set_index("trial_key")["finished_at"].to_dict() == stored  # not trained again
    assert [s.study_name for s in study_summaries(url)] == [legacy]
    assert [t.state.name for t in load_study(url, legacy).trials] == ["COMPLETE"] * 2


def test_a_local_grid_mirror_under_its_earlier_name_gets_the_rows_and_objectives_are_named(tmp_path):
    """RESULTS/optuna.db written by an earlier version holds the grid's mirror under the
    hash-only name: a rerun adds to that study (no second one); studies name their objective
    (optuna-dashboard shows "val_mse", not "Objective 0")."""
    import optuna

    from sweep.run import grid_trials
    from sweep.run.study import study_name_for
    from sweep.space import load_space

    space = tiny_space(tmp_path, {"kernel_size": [3, 5]})
    data_ids = [spec.data_id for _, spec in grid_trials(load_space(space), None)]
    legacy = f"tiny-grid-{study_name_for('grid', load_space(space), data_ids, ('val_mse',)).rsplit('-', 1)[1]}"
    results = tmp_path / "r"
    results.mkdir()
    optuna.create_study(study_name=legacy, storage=f"sqlite:///{results / 'optuna.db'}")
    out = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert out.returncode == 0, out.stderr
    url = f"sqlite:///{results / 'optuna.db'}"
    assert [s.study_name for s in study_summaries(url)] == [legacy] and f"(study '{legacy}'" in out.stdout
    study = load_study(url, legacy)
    assert len(study.trials) == 2 and study.metric_names == ["val_mse"]
    tuned = run_cli("sweep.optuna", "--trials", "1", "--space", space, "--results", str(results), "--objectives", "test_mse,latent_size")
    assert tuned.returncode == 0, tuned.stderr
    assert only_study(url).metric_names == ["test_mse", "latent_size"]
