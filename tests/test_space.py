"""Search-space files: the seed-002 grid as data, and one clear line for every mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweep.arch import ArchSpec
from sweep.errors import SpecError
from sweep.spec import TrainingProtocol
from sweep.space import Range, load_space

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_seed002_grid_is_the_36_models_under_the_seed_protocol():
    space = load_space(ROOT / "search_spaces" / "seed002_grid.yaml")
    points = space.grid_points()
    assert len(points) == 36
    assert {tuple(sorted(p.items())) for p in points} == {
        (("channel_factor", c), ("compression_factor", f), ("fewer_layers", l), ("kernel_size", k))
        for l in (False, True) for c in (1, 2, 4) for k in (3, 5) for f in (1, 2, 4)
    }  # fmt: skip
    p = space.protocol
    assert (p.dataset, p.task, p.epochs, p.train_fraction, p.batch_size, p.optimizer, p.loss) == (
        "cifar10", "reconstruct", 10, 0.1, 32, "adam", "mse",
    )  # fmt: skip
    assert p.learning_rate == 1e-3 and isinstance(p.learning_rate, float)
    specs = [space.spec(pt, "data") for pt in points]
    assert len({s.key for s in specs}) == 36
    assert space.spec(space.reference_point(), "data").arch == ArchSpec()


def test_trial_keys_are_stable_and_sensitive():
    space = load_space(ROOT / "search_spaces" / "seed002_grid.yaml")
    point = space.grid_points()[0]
    a, b = space.spec(point, "data-1"), space.spec(dict(reversed(point.items())), "data-1")
    assert a.key == b.key and len(a.key) == 16
    assert space.spec(point, "data-2").key != a.key
    assert space.with_protocol(epochs=3).spec(point, "data-1").key != a.key
    assert space.with_protocol(seed=1).spec(point, "data-1").key != a.key


def test_yaml_floats_without_a_dot(tmp_path):
    path = write(tmp_path, """
        space: {kernel_size: [3]}
        protocol: {learning_rate: 1e-4, reduce_lr_min: 5e-7}
    """)
    space = load_space(path)
    assert space.protocol.learning_rate == 1e-4 and space.protocol.reduce_lr_min == 5e-7


def test_ranges_and_grids(tmp_path):
    path = write(tmp_path, """
        space:
          channel_factor: {low: 1, high: 3}
          learning_rate: {low: 1e-4, high: 1e-2, log: true}
    """)
    space = load_space(path)
    assert space.factors["channel_factor"] == Range(1, 3, None, False, True)
    assert not space.is_grid
    path = write(tmp_path, "space: {channel_factor: {low: 1, high: 3}}")
    assert [p["channel_factor"] for p in load_space(path).grid_points()] == [1, 2, 3]


@pytest.mark.parametrize(
    "dimension, grid",
    [
        (Range(0, 1, 0.6), (0.0, 0.6)),  # a step that does not divide the range stops inside it
        (Range(0, 1, 0.25), (0.0, 0.25, 0.5, 0.75, 1.0)),
        (Range(0.1, 0.3, 0.1), (0.1, 0.2, 0.3)),  # float noise at `high` neither adds nor drops a value
        (Range(0, 11, 4, is_int=True), (0, 4, 8)),
        (Range(1, 3, is_int=True), (1, 2, 3)),
    ],
)
def test_a_grid_never_leaves_its_range(dimension, grid):
    assert dimension.grid() == pytest.approx(grid)
    assert all(dimension.low <= value <= dimension.high for value in dimension.grid())
    assert dimension.last == pytest.approx(grid[-1])


@pytest.mark.parametrize("dimension", [Range(1, 64, log=True, is_int=True), Range(1e-4, 1e-2, log=True)])
def test_a_log_range_is_sampled_never_enumerated(dimension):
    """Optuna samples a log range log-uniformly; enumerating it evenly (every integer of
    1..64, say) would be another search than the one the file asks for, so it has no grid."""
    assert not dimension.has_grid
    with pytest.raises(SpecError, match="log range .* has no grid; list the values"):
        dimension.grid()


def test_samplers_are_given_the_range_a_grid_spans(tmp_path):
    """Optuna gets `high` lowered to the last step inside the range, as the grid has it."""
    path = write(tmp_path, """
        arch: dense_latent
        space:
          dropout: {low: 0.0, high: 0.5, step: 0.2}
          latent_dim: {low: 16, high: 100, step: 32}
          learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
          batch_size: {low: 8, high: 64, log: true}
    """)
    space = load_space(path)
    asked = {}

    class Trial:
        def suggest_float(self, name, low, high, step=None, log=False):
            asked[name] = (low, high, step, log)
            return low

        def suggest_int(self, name, low, high, step=1, log=False):
            asked[name] = (low, high, step, log)
            return low

    space.suggest(Trial())
    assert asked["dropout"] == (0.0, pytest.approx(0.4), 0.2, False)
    assert asked["latent_dim"] == (16, 80, 32, False)
    assert asked["learning_rate"] == (1e-4, 1e-2, None, True)
    assert asked["batch_size"] == (8, 64, 1, True)
    assert not space.is_grid  # the log ranges have no grid


def test_the_grid_driver_names_the_factors_that_have_no_grid(tmp_path):
    from conftest import run_cli

    path = write(tmp_path, "space: {channel_factor: {low: 1, high: 8, log: true}, kernel_size: [3]}")
    out = run_cli("sweep.grid", "--space", str(path), "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "space: channel_factor is a range to sample" in out.stderr and "list its values" in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("space: {kernal_size: [3, 5]}", "space.kernal_size: unknown factor 'kernal_size'; did you mean 'kernel_size'?"),
        ("space: {kernel_size: [3]}\nprotocol: {epoch: 3}", "protocol.epoch: unknown protocol key 'epoch'; did you mean 'epochs'?"),
        ("spaces: {kernel_size: [3]}", "spaces: unknown top-level key 'spaces'; did you mean 'space'?"),
        ("space: {kernel_size: [3, 4]}", "space.kernel_size: The 'kernel_size' parameter of ArchSpec must be an odd int >= 1. Got 4 instead."),
        ("space: {kernel_size: three}", "space.kernel_size must be a list of values or a range"),
        ("space: {kernel_size: []}", "space.kernel_size: an empty list"),
        ("space: {kernel_size: [3]}\nprotocol: {epochs: ten}", "The 'epochs' parameter of TrainingProtocol must be an int >= 1. Got 'ten' instead."),
        ("space: {kernel_size: [3]}\nprotocol: {train_fraction: 1.5}", "'train_fraction' parameter of TrainingProtocol must be a number in (0, 1]. Got 1.5 instead."),
        ("space: {kernel_size: [3]}\nprotocol: {dataset: cifar11}", "unknown dataset 'cifar11'; did you mean 'cifar10'?"),
        ("space: {}", "space: no factors"),
        ("name: x", "space: no factors"),
        ("", "the file is empty"),
        ("space: [1, 2", "malformed YAML"),
        ("- 1\n- 2", "the top level must be a mapping"),
        ("arch: resnet\nspace: {kernel_size: [3]}", "arch: unknown architecture preset 'resnet'"),
        ("space: {learning_rate: {low: 1, high: 0.1}}", "space.learning_rate.low must be below 'high' (0.1). Got 1 instead."),
        ("space: {learning_rate: {low: 0.1, high: 1, step: 0}}", "space.learning_rate.step must be a number > 0. Got 0 instead."),
        ("space: {kernel_size: {low: 3, high: 7, step: -2}}", "space.kernel_size.step must be a number > 0. Got -2 instead."),
        ("space: {learning_rate: {low: 0, high: 1, log: true}}", "a log range needs low > 0"),
        ("space: {learning_rate: {low: 0.1, hihg: 1}}", "unknown range key 'hihg'; did you mean 'high'?"),
        ("space: {kernel_size: [3]}\nprotocol: {mixed_precision: true}", "protocol key 'mixed_precision' was replaced by precision"),
        ("space: {kernel_size: [3, 5]}\nexclude: {kernel_size: 3}", "exclude must be a list of mappings of factors to values"),
        ("space: {kernel_size: [3, 5]}\nexclude: [{kernal_size: 3}]", "exclude[0].kernal_size: unknown factor of this space 'kernal_size'; did you mean 'kernel_size'?"),
        ("space: {kernel_size: [3, 5]}\nexclude: [{kernel_size: 7}]", "exclude[0].kernel_size must be one of [3, 5]. Got 7 instead."),
        ("space: {kernel_size: [3]}\nprotocol: {precision: float16}", "unknown precision 'float16'; did you mean 'float32'? (allowed: float32, mixed_bfloat16, mixed_float16)"),
    ],
)
def test_every_mistake_is_one_line_naming_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_file():
    with pytest.raises(SpecError, match="nope.yaml: search-space file not found"):
        load_space("nope.yaml")


def test_yaml_cannot_construct_python_objects(tmp_path):
    path = write(tmp_path, "space: !!python/object/apply:os.system ['touch hacked']")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_space(path)
    assert not (tmp_path / "hacked").exists()


def test_protocol_defaults_are_the_seed_study():
    p = TrainingProtocol()
    assert (p.epochs, p.batch_size, p.train_fraction, p.optimizer, p.loss) == (10, 32, 0.1, "adam", "mse")


def test_exclude_leaves_combinations_out_of_the_grid(tmp_path):
    """The colorization study: ab classification only where it applies (lab); without the
    exclusions its grid has invalid points, and the file says which."""
    space = load_space(ROOT / "search_spaces" / "colorization_study.yaml")
    points = space.grid_points()
    assert len(points) == 4 * 4 + 3 and len(space.with_repeats(3).grid_points()) == 57
    assert {p["encoding"] for p in points if p["loss"] == "ab_classification"} == {"lab"}
    assert {p["arch"] for p in points if p["loss"] == "ab_classification"} == {"acml", "unet32", "unet32_noskip"}
    assert space.excluded({"arch": "acml", "encoding": "rgb", "loss": "ab_classification"})
    assert not space.excluded({"arch": "acml", "encoding": "lab", "loss": "ab_classification"})
    text = (ROOT / "search_spaces" / "colorization_study.yaml").read_text()
    with pytest.raises(SpecError, match="the combination .* is invalid: loss 'ab_classification' needs task 'colorize' with encoding 'lab'"):
        load_space(write(tmp_path, text.split("exclude:")[0] + "protocol:" + text.split("protocol:")[1]))
