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
