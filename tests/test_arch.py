"""The seed-002 family: the latent-size formula against built models, pinned values, and
invalid specs rejected before any framework call."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from sweep.arch import ArchSpec, arch_from_dict, build_autoencoder, conv_output_size, latent_size
from sweep.errors import SpecError

GRID = list(itertools.product([False, True], [1, 2, 4], [3, 5], [1, 2, 4]))

# (fewer_layers, channel_factor, kernel_size, compression_factor) -> latent size on 32x32x3.
# Hand-derived: 32 / f / f squared, times c3 = 16 / 2 * channel_factor; matched padding
# keeps the kernel out of it. Pinned so a change to the builder or formula cannot slip by.
LATENT_TABLE = {
    (False, 1, 3, 1): 8192, (False, 1, 3, 2): 512, (False, 1, 3, 4): 32,
    (False, 1, 5, 1): 8192, (False, 1, 5, 2): 512, (False, 1, 5, 4): 32,
    (False, 2, 3, 1): 16384, (False, 2, 3, 2): 1024, (False, 2, 3, 4): 64,
    (False, 2, 5, 1): 16384, (False, 2, 5, 2): 1024, (False, 2, 5, 4): 64,
    (False, 4, 3, 1): 32768, (False, 4, 3, 2): 2048, (False, 4, 3, 4): 128,
    (False, 4, 5, 1): 32768, (False, 4, 5, 2): 2048, (False, 4, 5, 4): 128,
    (True, 1, 3, 1): 8192, (True, 1, 3, 2): 512, (True, 1, 3, 4): 32,
    (True, 1, 5, 1): 8192, (True, 1, 5, 2): 512, (True, 1, 5, 4): 32,
    (True, 2, 3, 1): 16384, (True, 2, 3, 2): 1024, (True, 2, 3, 4): 64,
    (True, 2, 5, 1): 16384, (True, 2, 5, 2): 1024, (True, 2, 5, 4): 64,
    (True, 4, 3, 1): 32768, (True, 4, 3, 2): 2048, (True, 4, 3, 4): 128,
    (True, 4, 5, 1): 32768, (True, 4, 5, 2): 2048, (True, 4, 5, 4): 128,
}  # fmt: skip


def spec_of(point) -> ArchSpec:
    fewer, factor, kernel, compression = point
    return ArchSpec(fewer_layers=fewer, channel_factor=factor, kernel_size=kernel, compression_factor=compression)


def conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def expected_params(spec: ArchSpec, channels: int = 3) -> int:
    """Parameter count from the layer table, independently of Keras."""
    c1, c2, c3 = spec.channels
    k = spec.kernel_size
    if spec.fewer_layers:
        return conv_params(k, channels, c1) + conv_params(k, c1, c3) + conv_params(k, c3, channels)
    return (
        conv_params(k, channels, c1)
        + conv_params(k, c1, c2)
        + conv_params(k, c2, c3)
        + conv_params(k, c3, c2)
        + conv_params(k, c2, channels)
    )


@pytest.mark.parametrize(
    "width, kernel, padding, stride, expected",
    [(32, 3, 1, 1, 32), (32, 5, 2, 1, 32), (32, 3, 0, 1, 30), (32, 4, 1, 2, 16), (8, 3, 1, 1, 8), (5, 5, 0, 1, 1)],
)
def test_the_convolution_formula(width, kernel, padding, stride, expected):
    """(W - K + 2P) / S + 1, and an error where it is not a whole number or negative."""
    assert conv_output_size(width, kernel, padding, stride) == expected


@pytest.mark.parametrize("width, kernel, padding, stride", [(32, 4, 0, 3), (3, 5, 0, 1)])
def test_a_convolution_that_does_not_fit_is_refused(width, kernel, padding, stride):
    with pytest.raises(SpecError, match="does not fit a width of"):
        conv_output_size(width, kernel, padding, stride)


def test_table_covers_the_36_models():
    assert sorted(LATENT_TABLE) == sorted(GRID)
    assert len(GRID) == 36


@pytest.mark.parametrize("point", GRID, ids=lambda p: f"fewer{int(p[0])}-ch{p[1]}-k{p[2]}-f{p[3]}")
def test_formula_matches_table_and_built_model(point):
    spec = spec_of(point)
    assert latent_size(spec, (32, 32, 3)) == LATENT_TABLE[point]
    model = build_autoencoder(spec, (32, 32, 3))
    latent = model.get_layer("latent").output
    assert latent.shape[1] * latent.shape[2] * latent.shape[3] == LATENT_TABLE[point]
    assert model.output.shape[1:] == (32, 32, 3)
    assert model.count_params() == expected_params(spec) == spec.params((32, 32, 3), 3)  # (the dry run's count)


def test_first_model_is_the_seed_papers():
    first = ArchSpec()
    assert (first.fewer_layers, first.channel_factor, first.kernel_size, first.compression_factor) == (False, 2, 3, 2)
    # ((8 - 3 + 2 * 1) / 1 + 1)^2 * 16 = 1024, as seed 002 states.
    assert latent_size(first, (32, 32, 3)) == 1024  # 8 x 8 x 16
    model = build_autoencoder(first, (32, 32, 3))
    assert model.count_params() == 4911


def test_layer_names_are_predictable():
    model = build_autoencoder(ArchSpec(), (32, 32, 3))
    names = [layer.name for layer in model.layers if not layer.name.endswith("_pad")]
    assert names == ["image", "enc_conv1", "enc_pool1", "enc_conv2", "enc_pool2", "latent", "dec_up1", "dec_conv1", "dec_up2", "output"]
    fewer = build_autoencoder(ArchSpec(fewer_layers=True), (32, 32, 3))
    assert "enc_conv2" not in {layer.name for layer in fewer.layers}
    assert fewer.get_layer("output").activation.__name__ == "sigmoid"


def test_other_input_sizes_and_channels():
    spec = ArchSpec(compression_factor=4)
    assert latent_size(spec, (64, 48, 1)) == (64 // 16) * (48 // 16) * 16
    model = build_autoencoder(spec, (64, 48, 1), output_channels=2)
    assert model.output.shape[1:] == (64, 48, 2)


@pytest.mark.parametrize(
    "kwargs, field, got",
    [
        ({"kernel_size": 4}, "kernel_size", "4"),
        ({"kernel_size": 0}, "kernel_size", "0"),
        ({"channel_factor": 0}, "channel_factor", "0"),
        ({"channel_factor": -2}, "channel_factor", "-2"),
        ({"compression_factor": 0}, "compression_factor", "0"),
        ({"fewer_layers": "yes"}, "fewer_layers", "'yes'"),
        ({"kernel_size": 3.0}, "kernel_size", "3.0"),
    ],
)
def test_invalid_specs_name_field_value_and_allowed(kwargs, field, got):
    with pytest.raises(ValueError) as info:
        ArchSpec(**kwargs)
    message = str(info.value)
    assert f"'{field}'" in message and f"Got {got} instead" in message and "must be" in message


def test_pooling_factor_that_does_not_divide_the_size():
    with pytest.raises(ValueError, match=r"'compression_factor'.*divides the image size.*Got 3 instead"):
        latent_size(ArchSpec(compression_factor=3), (32, 32, 3))
    with pytest.raises(ValueError, match="compression_factor"):
        build_autoencoder(ArchSpec(compression_factor=3), (32, 32, 3))


def test_unknown_field_gets_a_did_you_mean():
    with pytest.raises(ValueError, match=r"unknown field of ArchSpec 'kernal_size'; did you mean 'kernel_size'\?"):
        arch_from_dict({"kernal_size": 3})


def test_invalid_specs_fail_before_any_framework_is_imported():
    code = """
import sys
from sweep.arch import ArchSpec, arch_from_dict, latent_size
for make in (lambda: ArchSpec(kernel_size=4), lambda: arch_from_dict({"bogus": 1}),
             lambda: latent_size(ArchSpec(compression_factor=3), (32, 32, 3))):
    try:
        make()
    except ValueError:
        pass
    else:
        raise SystemExit("no ValueError")
heavy = [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules]
print(heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flops_formula_matches_the_built_models_and_the_first_model_by_hand():
    from sweep.arch import forward_flops, model_flops, preset

    for point in GRID:
        spec = ArchSpec(*point)
        assert spec.flops((32, 32, 3), 3) == model_flops(build_autoencoder(spec)), point
    # First model: 3->8 at 32x32, 8->12 at 16x16, 12->16 at 8x8, 16->12 at 16x16, 12->3 at 32x32; 3x3 kernels.
    by_hand = 2 * 9 * (32 * 32 * 3 * 8 + 16 * 16 * 8 * 12 + 8 * 8 * 12 * 16 + 16 * 16 * 16 * 12 + 32 * 32 * 12 * 3)
    assert ArchSpec().flops((32, 32, 3), 3) == by_hand == 2_654_208
    # Presets without a formula are counted on the built model, dense and transposed layers
    # included (a transposed convolution costs K*K*Cin*Cout per input position), by hand:
    by_hand = 2 * (
        16 * 16 * 9 * 1 * 64 + 8 * 8 * 9 * 64 * 128 + 4 * 4 * 9 * 128 * 256  # strided encoder convolutions
        + 4096 * 256 + 256 * 4096  # the dense latent and back
        + 4 * 4 * 9 * 256 * 256 + 8 * 8 * 9 * 256 * 128 + 16 * 16 * 9 * 128 * 64  # up-sampling deconvolutions
        + 32 * 32 * 9 * 64 * 3  # the output
    )  # fmt: skip
    assert forward_flops(preset("dense_latent"), (32, 32, 1), 3) == by_hand == 121_274_368
