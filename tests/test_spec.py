"""What a trial is: the canonical trial key (equal models, equal keys), the protocol's named
precision, and the library versions every row records."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pandas as pd
import pytest

from sweep import analysis
from sweep.arch import ArchSpec, UNetSpec
from sweep.spec import TrainingProtocol, TrialSpec


def key(arch=None, **protocol) -> str:
    return TrialSpec(arch or ArchSpec(), TrainingProtocol(**protocol), "data").key


def test_fields_that_change_nothing_do_not_change_the_key():
    # The plateau's factor and floor while the plateau is off
    assert key(reduce_lr_factor=0.5) == key() == key(reduce_lr_min=1e-3)
    assert key(reduce_lr_patience=3, reduce_lr_factor=0.5) != key(reduce_lr_patience=3)
    # ... or while its patience is too long to lower the rate before the last epoch
    assert key(epochs=5, reduce_lr_patience=4, reduce_lr_factor=0.5) == key(epochs=5) != key(epochs=5, reduce_lr_patience=3)
    # An early-stopping patience that could stop training only after its last epoch (epochs - 1 or more)
    assert key(epochs=5, early_stopping_patience=5) == key(epochs=5, early_stopping_patience=4) == key(epochs=5) != key(epochs=5, early_stopping_patience=3)
    # base_channels x channel_factor pairs with the same widths; the medium width when it is dropped
    assert key(ArchSpec(base_channels=(16, 24, 32), channel_factor=1)) == key(ArchSpec(channel_factor=2))
    assert key(ArchSpec(fewer_layers=True, base_channels=(8, 40, 16))) == key(ArchSpec(fewer_layers=True))
    assert key(ArchSpec(base_channels=(8, 40, 16))) != key(ArchSpec())
    # Batch norm "from" a block past the last one is none at all
    assert key(UNetSpec(filters=(8, 16), batch_norm_from=3)) == key(UNetSpec(filters=(8, 16), batch_norm_from=9))
    assert key(UNetSpec(filters=(8,), dropout=0.5)) == key(UNetSpec(filters=(8,)))  # no up block to drop out of
    # The annealed-mean temperature decodes ab classification only; at its default, keys stand
    ab = {"task": "colorize", "encoding": "lab", "loss": "ab_classification"}
    assert key(annealed_temperature=0.7) == key() and key(**ab, annealed_temperature=0.38) == key(**ab) != key(**ab, annealed_temperature=0.7)
    assert "annealed_temperature" not in TrainingProtocol(**ab).canonical()
    # ... while everything that acts still counts
    assert key(seed=1) != key() and key(learning_rate=0.01) != key() and key(ArchSpec(kernel_size=5)) != key()


def test_ab_classification_with_a_k_by_k_output_family_is_another_model():
    """Its 1x1 head replaces the family's k x k output: the key says so (stored results of the
    k x k head are not taken for it); families whose output is 1x1 already keep their keys."""
    ab = {"task": "colorize", "encoding": "lab", "loss": "ab_classification"}
    acml = TrialSpec(ArchSpec(), TrainingProtocol(**ab), "data")
    unet32 = TrialSpec(UNetSpec(depth=3, base_width=32, output_kernel=1), TrainingProtocol(**ab), "data")
    assert acml.canonical()["head"] == "pointwise" and "head" not in unet32.canonical()
    assert "head" not in TrialSpec(ArchSpec(), TrainingProtocol(task="colorize", encoding="lab"), "data").canonical()


def test_ab_classification_flops_come_from_the_formula_without_a_framework():
    """The grid's own process sizes every trial (progress, ETA) before its workers start: it
    must not load Keras, which would take the GPU before the workers set it up."""
    code = (
        "import sys; from sweep.arch import ArchSpec, UNetSpec; from sweep.spec import TrainingProtocol, TrialSpec\n"
        "p = TrainingProtocol(task='colorize', encoding='lab', loss='ab_classification')\n"
        "print([TrialSpec(a, p, 'd').forward_flops((32, 32, 3)) for a in (ArchSpec(), UNetSpec(depth=3, base_width=32, output_kernel=3))])\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'keras' in m)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from sweep.arch import build_autoencoder, model_flops

    for arch, value in zip((ArchSpec(), UNetSpec(depth=3, base_width=32, output_kernel=3)), json.loads(result.stdout)):
        assert value == model_flops(build_autoencoder(arch, (32, 32, 1), 261, pointwise_output=True))


def test_an_image_size_equal_to_the_native_size_is_no_resize():
    from sweep.space.searchspace import SearchSpace
    from sweep.space.grid import Categorical

    space = SearchSpace("s", "s.yaml", "acml", {"image_size": Categorical((32, 16))}, TrainingProtocol())
    native = space.spec({"image_size": 32}, "data", native_size=32)
    assert native.key == TrialSpec(ArchSpec(), TrainingProtocol(), "data", native_size=32).key
    assert native.protocol.image_size == 32  # the row keeps the value as spelled: the analysis sees the factor
    assert space.spec({"image_size": 16}, "data", native_size=32).key != native.key


def test_the_config_key_leaves_out_the_seed_only():
    a = TrialSpec(ArchSpec(), TrainingProtocol(seed=0), "data")
    b = TrialSpec(ArchSpec(), TrainingProtocol(seed=1, reduce_lr_factor=0.5), "data")
    assert a.key != b.key and a.config_key == b.config_key
    assert TrialSpec(ArchSpec(kernel_size=5), TrainingProtocol(), "data").config_key != a.config_key


def test_a_grid_of_spellings_of_one_model_runs_it_once(tmp_path):
    from conftest import small_space
    from sweep.run import grid_trials
    from sweep.space import load_space

    path = small_space(tmp_path, {"channel_factor": [1, 2], "base_channels": [[8, 12, 16], [16, 24, 32]]})
    pairs = grid_trials(load_space(path), None)
    assert len(pairs) == 4 and len({spec.key for _, spec in pairs}) == 3  # (2, 8-12-16) is (1, 16-24-32)


def test_replicates_are_merged_whatever_fields_that_change_nothing_say():
    rows = []
    for seed, factor in ((0, 0.5), (1, 0.3)):  # the plateau is off: its factor is irrelevant
        spec = TrialSpec(ArchSpec(), TrainingProtocol(seed=seed, reduce_lr_factor=factor), "data")
        rows.append({"trial_key": spec.key, "config_key": spec.config_key, "status": "complete", **spec.arch.to_dict(),
                     **spec.protocol.to_dict(), "data_id": "data", "latent_size": 1024, "test_mse": 0.01 * (seed + 1)})  # fmt: skip
    configs = analysis.configurations(pd.DataFrame(rows))
    assert len(configs) == 1 and configs.iloc[0]["n_seeds"] == 2
    assert configs.iloc[0]["test_mse"] == pytest.approx(0.015)


def test_the_protocol_names_the_precision_so_the_key_decides_the_computation():
    assert key(precision="mixed_float16") != key(precision="mixed_bfloat16") != key()
    assert TrainingProtocol().precision == "float32"
    assert "mixed_precision" not in {f.name for f in dataclasses.fields(TrainingProtocol)}


@pytest.mark.slow
def test_a_row_records_every_library_that_changes_its_numbers(synthetic, tmp_path):
    from importlib import metadata

    import keras

    from sweep.train import run_trial

    protocol = TrainingProtocol(dataset="synthetic", epochs=1, train_fraction=1.0, train_limit=32, batch_size=16)
    row = run_trial(TrialSpec(ArchSpec(), protocol, synthetic.data_id), synthetic, tmp_path)
    versions = json.loads(row["versions"])
    backend = keras.backend.backend()
    assert versions["backend"] == backend
    for name in ("keras", "numpy", "scikit-image", "scipy", "pillow", "optuna", backend):
        assert versions[name] == metadata.version(name), name


def test_every_value_the_schema_prunes_on_is_one_a_trial_measures_each_epoch():
    from sweep.results.schema import COLUMNS
    from sweep.train.evaluate import PER_EPOCH

    tracked = {c.per_epoch for c in COLUMNS if c.per_epoch}
    assert tracked == set(PER_EPOCH) == {"val_mse", "val_mae", "val_psnr", "val_ssim"}
    for column in COLUMNS:
        if column.per_epoch:
            assert column.goal == next(c.goal for c in COLUMNS if c.name == column.per_epoch), column.name
