"""Property tests: any valid ArchSpec builds and its formula latent size is the built model's;
any invalid one raises the project's ValueError, never an error from inside the framework."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.arch import ArchSpec, build_autoencoder, latent_size
from sweep.errors import SpecError

pytestmark = pytest.mark.slow


@st.composite
def valid_cases(draw):
    compression = draw(st.integers(1, 4))
    spec = ArchSpec(
        fewer_layers=draw(st.booleans()),
        channel_factor=draw(st.integers(1, 4)),
        kernel_size=draw(st.sampled_from([1, 3, 5, 7])),
        compression_factor=compression,
        base_channels=tuple(2 * draw(st.integers(1, 8)) for _ in range(3)),
    )
    unit = compression * compression  # two poolings must divide the size exactly
    shape = (unit * draw(st.integers(1, 4)), unit * draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])))  # at most 64
    return spec, shape, draw(st.sampled_from([1, 2, 3]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cases())
def test_any_valid_spec_builds_with_the_formula_latent_size(case):
    spec, shape, out_channels = case
    model = build_autoencoder(spec, shape, out_channels)
    latent = model.get_layer("latent").output.shape
    assert latent[1] * latent[2] * latent[3] == latent_size(spec, shape)
    assert tuple(model.output.shape[1:]) == (shape[0], shape[1], out_channels)


anything = st.one_of(st.integers(-5, 12), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans())


@st.composite
def invalid_cases(draw):
    """A spec with at least one bad field, or a good spec on an input it cannot fit."""
    fields = {
        "fewer_layers": draw(st.one_of(st.booleans(), anything)),
        "channel_factor": draw(st.one_of(st.integers(1, 4), anything)),
        "kernel_size": draw(st.one_of(st.sampled_from([1, 3, 5]), anything)),
        "compression_factor": draw(st.one_of(st.integers(1, 4), anything)),
    }
    shape = draw(st.one_of(st.just((32, 32, 3)), st.tuples(st.integers(-2, 40), st.integers(-2, 40), st.integers(-1, 4))))
    return fields, shape


@settings(max_examples=300, deadline=None)
@given(invalid_cases())
def test_invalid_specs_raise_the_projects_value_error_and_never_reach_the_framework(case):
    fields, shape = case
    try:
        spec = ArchSpec(**fields)
    except Exception as err:
        assert isinstance(err, SpecError) and isinstance(err, ValueError), repr(err)
        return
    try:
        size = latent_size(spec, shape)
    except Exception as err:
        assert isinstance(err, SpecError), repr(err)
        with pytest.raises(SpecError):
            build_autoencoder(spec, shape)  # the builder refuses before calling into Keras
        return
    assert isinstance(size, int) and size >= 1


# ---- trial keys and models ------------------------------------------------------------------
# Equal trial keys exactly when the built models are equal and the protocol fields that act on
# training are equal. What acts is listed here from the training code's behaviour (the data
# split, the early-stopping and plateau rules), not from `TrialSpec.canonical`.

TRAIN_IMAGES, NATIVE = 20, 8  # a tiny dataset of 8x8 images: its data id names 20 training images
DATA_ID = f"synthetic-{TRAIN_IMAGES}-5-00112233aabbccdd"


def _arch_fields(family: str):
    """Small value sets per field, so that two draws often spell one model."""
    two = st.sampled_from([1, 3])
    if family == "conv_ae":
        return {
            "fewer_layers": st.booleans(), "channel_factor": st.sampled_from([1, 2]), "kernel_size": two,
            "compression_factor": st.sampled_from([1, 2]), "base_channels": st.sampled_from([(2, 4, 2), (4, 8, 4), (2, 2, 2)]),
        }  # fmt: skip
    if family == "dense_latent":
        return {"filters": st.sampled_from([(2,), (2, 4), (4,)]), "kernel_size": two, "latent_dim": st.sampled_from([2, 4]), "dropout": st.sampled_from([0.0, 0.5])}
    if family == "fc_latent":
        return {"filters": st.sampled_from([(2, 2, 2), (2, 4, 2)]), "kernel_size": two, "latent_dim": st.sampled_from([2, 4])}
    if family == "conv_latent":
        return {"filters": st.sampled_from([(2, 2, 2), (2, 4, 2)]), "kernel_size": two, "latent_filters": st.sampled_from([2, 4])}
    return {
        "filters": st.sampled_from([(2,), (2, 4), (4, 4)]), "kernel_size": two, "batch_norm_from": st.integers(1, 4),
        "dropout": st.sampled_from([0.0, 0.5]), "output_kernel": st.sampled_from([1, 2]), "skips": st.booleans(),
        "last_width": st.sampled_from([None, 2, 3]), "depth": st.sampled_from([None, None, 1, 2]), "base_width": st.sampled_from([None, 2]),
    }  # fmt: skip


PROTOCOL_FIELDS = {
    "task_encoding_loss": st.sampled_from([("reconstruct", "rgb", "mse"), ("colorize", "lab", "mse"), ("colorize", "rgb", "mse"), ("colorize", "lab", "ab_classification")]),
    "image_size": st.sampled_from([None, NATIVE, 16]),
    "train_fraction": st.sampled_from([0.5, 0.52, 0.55, 1.0]),  # 10, 10, 11, 20 images
    "train_limit": st.sampled_from([None, 8, 10, 100]),
    "val_fraction": st.sampled_from([0.1, 0.12, 0.2, 0.3]),
    "epochs": st.sampled_from([2, 3]),
    "early_stopping_patience": st.sampled_from([None, 1, 2, 3]),
    "reduce_lr_patience": st.sampled_from([None, 1, 2]),
    "reduce_lr_factor": st.sampled_from([0.1, 0.5]),
    "reduce_lr_min": st.sampled_from([0.0, 1e-6]),  # below the learning rate: a floor it never starts at
    "annealed_temperature": st.sampled_from([0.38, 0.7]),
    "batch_size": st.sampled_from([2, 4]),
    "optimizer": st.sampled_from(["adam", "sgd"]),
    "augment_flip": st.booleans(),
    "augment_rotation": st.sampled_from([0.0, 15.0]),
    "precision": st.sampled_from(["float32", "mixed_bfloat16"]),
    "seed": st.sampled_from([0, 1]),
}


def _draw_fields(draw, strategies, base=None):
    """Every field drawn, or (with `base`) each kept from `base` unless a coin says redraw."""
    return {k: draw(s) if base is None or draw(st.integers(0, 3)) == 0 else base[k] for k, s in strategies.items()}


def _spec(family, arch_values, proto_values):
    from sweep.arch import ARCH_FAMILIES
    from sweep.spec import TrainingProtocol, TrialSpec

    values = dict(proto_values)
    values["task"], values["encoding"], values["loss"] = values.pop("task_encoding_loss")
    arch_values = dict(arch_values)
    if family == "unet" and (arch_values["depth"] is not None or arch_values["base_width"] is not None):
        filters = arch_values.pop("filters")  # the widths follow depth and base_width
        arch_values["depth"] = arch_values["depth"] or len(filters)
    return TrialSpec(ARCH_FAMILIES[family](**arch_values), TrainingProtocol(**values), DATA_ID, native_size=NATIVE)


@st.composite
def spec_pairs(draw, family):
    arch_strategies = _arch_fields(family)
    a_arch, a_proto = _draw_fields(draw, arch_strategies), _draw_fields(draw, PROTOCOL_FIELDS)
    b_arch, b_proto = _draw_fields(draw, arch_strategies, a_arch), _draw_fields(draw, PROTOCOL_FIELDS, a_proto)
    return _spec(family, a_arch, a_proto), _spec(family, b_arch, b_proto)


_SPLITS: dict = {}


def _images(protocol) -> tuple[int, int]:
    """(training, validation) image counts, as `sweep.data.splits.make_splits` selects them."""
    import numpy as np

    from sweep.data.dataset import Dataset
    from sweep.data.splits import make_splits

    args = (protocol.train_fraction, protocol.val_fraction, protocol.train_limit)
    if args not in _SPLITS:
        data = Dataset("synthetic", np.zeros((TRAIN_IMAGES, 2, 2, 3), np.uint8), np.zeros((1, 2, 2, 3), np.uint8), "test")
        splits = make_splits(data, *args)
        _SPLITS[args] = (len(splits.train), len(splits.val))
    return _SPLITS[args]


def acting_protocol(spec) -> dict:
    """The protocol as it acts on training: the split's sizes, not the fractions; the
    temperature only where ab classification decodes with it; early stopping only if it can
    stop before the last epoch (patience < epochs - 1), the plateau only if it can lower the
    rate before the last epoch (patience < epochs - 1); a resize to the images' own size none."""
    p = spec.protocol
    return {
        "data": spec.data_id, "task": (p.task, p.encoding, p.loss), "image_size": None if p.image_size == NATIVE else p.image_size,
        "images": _images(p), "epochs": p.epochs, "batch_size": p.batch_size, "optimizer": p.optimizer, "learning_rate": p.learning_rate,
        "temperature": p.annealed_temperature if p.loss == "ab_classification" else None,
        "early_stopping": p.early_stopping_patience if p.early_stopping_patience is not None and p.early_stopping_patience < p.epochs - 1 else None,
        "plateau": (p.reduce_lr_patience, p.reduce_lr_factor, p.reduce_lr_min) if p.reduce_lr_patience is not None and p.reduce_lr_patience < p.epochs - 1 else None,
        "augment": (p.augment_flip, p.augment_rotation), "precision": p.precision, "seed": p.seed, "backend": getattr(spec, "backend", "tensorflow"),
    }  # fmt: skip


_MODELS: dict = {}


def model_layout(spec):
    """The model training builds (`sweep.train.step.build_model`), as its layers' classes and
    configurations, with every layer name replaced by the layer's position (so the wiring
    counts and the names do not)."""
    from sweep.encodings import task_for
    from sweep.train.step import build_model

    p = spec.protocol
    task = task_for(p.task, p.encoding, p.loss, p.annealed_temperature)
    size = p.image_size or NATIVE
    cache = (repr(spec.arch), size, task.input_channels, task.output_channels, p.loss, p.precision)
    if cache not in _MODELS:
        config = build_model(spec, (size, size, task.input_channels), task).get_config()
        index = {layer["name"]: i for i, layer in enumerate(config["layers"])}

        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k != "name" or not isinstance(v, str) or v in index}
            if isinstance(value, (list, tuple)):
                return [strip(v) for v in value]
            return index.get(value, value) if isinstance(value, str) else value

        _MODELS[cache] = repr([(layer["class_name"], strip(layer["config"]), strip(layer.get("inbound_nodes"))) for layer in config["layers"]])
    return _MODELS[cache]


@pytest.mark.parametrize("family", ["conv_ae", "dense_latent", "fc_latent", "conv_latent", "unet"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_equal_keys_exactly_when_equal_models_train_the_same_way(family, data):
    from sweep.arch import ARCH_FAMILIES

    assert set(ARCH_FAMILIES) == {"conv_ae", "dense_latent", "fc_latent", "conv_latent", "unet"}  # every family is drawn
    a, b = data.draw(spec_pairs(family))
    same = model_layout(a) == model_layout(b) and acting_protocol(a) == acting_protocol(b)
    assert (a.key == b.key) == same, (a, b)
