"""The seed papers' architectures as presets: one contract for every preset, checked against
the parameter counts and layer tables printed in the seeds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from sweep.arch import (
    PRESETS,
    ArchSpec,
    ConvLatentSpec,
    DenseLatentSpec,
    FCLatentSpec,
    UNetSpec,
    arch_from_dict,
    build_autoencoder,
    latent_size,
    model_flops,
    pointwise_saving,
    preset_name,
)
from sweep.errors import SpecError

# preset -> (input, output channels, parameters, latent size), from the seeds' tables.
SEED_TABLE = {
    "acml": ((32, 32, 3), 3, 4_911, 1_024),  # seed 002, reconstruction
    "dense_latent": ((32, 32, 1), 3, 3_431_811, 256),  # seeds 000/001/004: 1,418,496 + 2,013,315
    "dense_latent_dropout": ((32, 32, 1), 3, 3_431_811, 256),  # seed 004: Dropout has no parameters
    "fc_latent": ((32, 32, 1), 3, 9_145_475, 256),  # seed 001, Net1
    "conv_latent": ((32, 32, 1), 3, 1_330_307, 16 * 16 * 256),  # seed 001, Net2
    "unet": ((160, 160, 1), 3, 9_600_438, 5 * 5 * 512),  # seed 003
    "unet32": ((32, 32, 1), 3, 222_822, 4 * 4 * 128),  # seed 003's design at CIFAR's size
    "unet32_noskip": ((32, 32, 1), 3, 195_171, 4 * 4 * 128),
}


def test_the_table_covers_every_preset():
    assert set(SEED_TABLE) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(SEED_TABLE))
def test_preset_contract(name):
    import keras

    spec = PRESETS[name]
    shape, out, params, latent = SEED_TABLE[name]
    assert spec.reference_input == shape and preset_name(spec) == name
    assert latent_size(spec, shape) == latent
    model = build_autoencoder(spec, shape, out, name=name)
    assert model.count_params() == params
    batch = np.random.default_rng(0).random((2, *shape)).astype("float32")
    y = keras.ops.convert_to_numpy(model(batch, training=False))
    assert y.shape == (2, shape[0], shape[1], out) and np.isfinite(y).all()
    assert 0.0 <= y.min() and y.max() <= 1.0  # the sigmoid head every encoding's targets fit
    built_latent = model.get_layer("latent").output
    assert int(np.prod(built_latent.shape[1:])) == latent
    assert model.get_layer("output").output.shape[1:] == (shape[0], shape[1], out)
    # Plain values and back: what a search space or a results row holds rebuilds the preset.
    assert arch_from_dict(spec.to_dict()) == spec


def test_dense_latent_is_the_seeds_encoder_and_decoder():
    import keras

    model = build_autoencoder(PRESETS["dense_latent"], (32, 32, 1), 3)
    encoder = keras.Model(model.inputs, model.get_layer("latent").output)
    assert encoder.count_params() == 1_418_496
    assert model.count_params() - encoder.count_params() == 2_013_315
    names = [layer.name for layer in model.layers]
    assert names == [
        "image", "enc_conv1", "enc_conv2", "enc_conv3", "enc_flatten", "latent", "dec_dense", "dec_reshape",
        "dec_deconv1", "dec_deconv2", "dec_deconv3", "output",
    ]  # fmt: skip
    # Seed 004: a Dropout of 0.2 after each encoder convolution, nothing else changes.
    dropout = build_autoencoder(PRESETS["dense_latent_dropout"], (32, 32, 1), 3)
    rates = [layer.rate for layer in dropout.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.2, 0.2, 0.2] and dropout.get_layer("enc_drop1").input is dropout.get_layer("enc_conv1").output


def test_seed001_layer_tables():
    fc = build_autoencoder(PRESETS["fc_latent"], (32, 32, 1), 3)
    assert [fc.get_layer(n).count_params() for n in ("latent", "dec_dense")] == [4_194_560, 4_210_688]
    assert fc.get_layer("dec_up1").interpolation == "bilinear"
    conv = build_autoencoder(PRESETS["conv_latent"], (32, 32, 1), 3)
    assert [conv.get_layer(n).count_params() for n in ("enc_conv3", "latent", "dec_deconv1")] == [295_168, 590_080, 295_040]
    assert conv.get_layer("latent").activation.__name__ == "linear"


def test_unet_blocks_and_skips_follow_seed003():
    import keras

    model = build_autoencoder(PRESETS["unet"], (64, 64, 1), 3)
    assert [l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization)] == ["enc_bn3", "enc_bn4", "enc_bn5"]
    assert model.get_layer("dec_concat1").output.shape[1:] == (4, 4, 1024)  # up1 (512) with down4 (512)
    assert model.get_layer("dec_concat5").output.shape[1:] == (64, 64, 4)  # the last with the input image
    assert model.get_layer("output").kernel.shape == (2, 2, 4, 3)
    dropped = build_autoencoder(UNetSpec(dropout=0.5), (32, 32, 1), 3)
    assert [l.name for l in dropped.layers if isinstance(l, keras.layers.Dropout)] == [f"dec_drop{i}" for i in range(1, 5)]


def test_the_unet_family_spans_small_unets_by_depth_width_and_skips():
    import keras

    from sweep.arch.latent import model_flops

    assert UNetSpec(depth=4, base_width=16).filters == (16, 32, 64, 128)
    assert UNetSpec(depth=5, base_width=8).filters == (8, 16, 32, 64, 64)  # x8 at most
    assert arch_from_dict({"depth": 2}, "unet32").filters == (32, 64)  # the other from the preset's filters
    assert arch_from_dict({"base_width": 64}, "unet32").filters == (64, 128, 256)
    plain = build_autoencoder(PRESETS["unet32_noskip"], (32, 32, 1), 3)
    assert not [l for l in plain.layers if isinstance(l, keras.layers.Concatenate)]
    assert plain.get_layer("output").kernel.shape == (1, 1, 32, 3)  # the last up block (32 wide) alone, no image
    skipped = build_autoencoder(PRESETS["unet32"], (32, 32, 1), 2)
    assert skipped.get_layer("dec_concat1").output.shape[1:] == (8, 8, 128)  # up1 (64) with down2 (64)
    assert skipped.get_layer("output").kernel.shape == (1, 1, 33, 2)  # 32 channels + the luma
    assert build_autoencoder(UNetSpec(depth=2, base_width=8), (32, 32, 1), 5).get_layer("dec_deconv2").filters == 5  # the seed's: the output's width
    for spec in (PRESETS["unet32"], PRESETS["unet32_noskip"], UNetSpec(depth=2, base_width=48, dropout=0.3), PRESETS["unet"]):
        for shape, out in (((32, 32, 1), 3), ((64, 64, 1), 2), ((32, 32, 3), 3), ((32, 32, 1), 261)):
            assert spec.flops(shape, out) == model_flops(build_autoencoder(spec, shape, out))
    # Trial keys: the seed's U-Net keeps its key; depth/base_width are in the widths; skips count.
    assert not {"skips", "last_width"} & set(PRESETS["unet"].canonical()) and "depth" not in PRESETS["unet32"].canonical()
    assert UNetSpec(depth=3, base_width=32).canonical() == UNetSpec(filters=(32, 64, 128)).canonical()
    assert PRESETS["unet32"].canonical() != PRESETS["unet32_noskip"].canonical()
    assert preset_name(arch_from_dict(PRESETS["unet32_noskip"].to_dict())) == "unet32_noskip"


def test_classification_heads_and_other_outputs():
    model = build_autoencoder(PRESETS["dense_latent"], (32, 32, 1), 261, output_activation="linear")
    assert model.output.shape[1:] == (32, 32, 261) and model.get_layer("output").activation.__name__ == "linear"


@pytest.mark.parametrize("name", ["acml", "dense_latent", "conv_latent", "unet", "unet32"])
def test_a_pointwise_head_reads_the_features_the_family_output_reads(name):
    """Zhang et al.'s 1x1 classification head: the same body, the k x k output (and its
    padding) replaced by a 1x1 convolution of the same features; what it saves, from the
    layer shapes where the family has the formula."""
    spec = PRESETS[name]
    own = build_autoencoder(spec, (32, 32, 1), 261, output_activation="linear")
    pointwise = build_autoencoder(spec, (32, 32, 1), 261, output_activation="linear", pointwise_output=True)
    head = pointwise.get_layer("output")
    assert pointwise.output.shape[1:] == (32, 32, 261) and head.kernel_size == (1, 1) and head.activation.__name__ == "linear"
    body = [layer.name for layer in own.layers if layer.name not in ("output", "output_pad")]
    assert [layer.name for layer in pointwise.layers if layer.name != "output"] == body
    k = own.get_layer("output").kernel_size[0]
    features = own.get_layer("output").input.shape[-1] if k == 1 else head.input.shape[-1]
    assert own.count_params() - pointwise.count_params() == (k * k - 1) * features * 261
    saving = pointwise_saving(spec, (32, 32, 1), 261)
    if hasattr(spec, "flops"):
        assert saving == (model_flops(own) - model_flops(pointwise), own.count_params() - pointwise.count_params())
    else:
        assert saving is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DenseLatentSpec(filters=[64, 0]), "'filters' parameter of DenseLatentSpec must be a list of ints >= 1"),
        (lambda: FCLatentSpec(filters=(64, 128)), "'filters' parameter of FCLatentSpec must be 3 ints >= 1"),
        (lambda: DenseLatentSpec(dropout=1.0), "'dropout' parameter of DenseLatentSpec must be a number in [0, 1). Got 1.0"),
        (lambda: ConvLatentSpec(kernel_size=2), "'kernel_size' parameter of ConvLatentSpec must be an odd int >= 1. Got 2"),
        (lambda: UNetSpec(batch_norm_from=0), "'batch_norm_from' parameter of UNetSpec must be an int >= 1. Got 0"),
        (lambda: UNetSpec(skips="no"), "'skips' parameter of UNetSpec must be true or false. Got 'no'"),
        (lambda: UNetSpec(depth=0), "'depth' parameter of UNetSpec must be an int >= 1. Got 0"),
        (lambda: latent_size(PRESETS["unet"], (48, 48, 1)), "The 'input_shape' parameter of UNetSpec must be an image size divisible by 32 (5 stride-2 down blocks). Got '48x48' instead."),
        (lambda: latent_size(PRESETS["dense_latent"], (20, 20, 1)), "divisible by 8"),
        (lambda: arch_from_dict({"latent_dims": 3}, "fc_latent"), "unknown field of FCLatentSpec 'latent_dims'; did you mean 'latent_dim'?"),
        (lambda: arch_from_dict({"family": "resnet"}), "unknown family 'resnet'"),
    ],
)
def test_invalid_presets_are_one_clear_line(make, message):
    with pytest.raises(SpecError) as info:
        make()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_changed_presets_are_not_presets():
    assert preset_name(DenseLatentSpec(latent_dim=128)) is None
    assert preset_name(ArchSpec()) == "acml"
    assert latent_size(DenseLatentSpec(latent_dim=128), (64, 64, 1)) == 128


@pytest.mark.slow
def test_arch_cli_prints_the_seed_counts():
    out = run_cli("sweep.arch", "dense_latent")
    assert out.returncode == 0, out.stderr
    assert "Total params: 3,431,811" in out.stdout  # Keras' own summary
    assert "encoder up to 'latent' 1,418,496, decoder 2,013,315" in out.stdout
    assert "latent        vector of 256 = 256 values" in out.stdout


def test_arch_cli_describes_a_grid_point(capsys):
    from sweep.cli.arch import main

    assert main(["acml", "kernel_size=5", "channel_factor=4", "--input-shape", "32x32x1", "--no-summary"]) == 0
    out = capsys.readouterr().out
    assert '"channel_factor": 4, "kernel_size": 5' in out and "input         32x32x1 -> output 32x32x3" in out
    assert "latent        8x8x32 = 2,048 values" in out
    expected = build_autoencoder(ArchSpec(channel_factor=4, kernel_size=5), (32, 32, 1), 3).count_params()
    assert f"parameters    {expected:,} " in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["dense_latnet"], "unknown architecture preset 'dense_latnet'; did you mean 'dense_latent'?"),
        (["acml", "kernal_size=5"], "did you mean 'kernel_size'?"),
        (["unet", "--input-shape", "100x100x1"], "divisible by 32"),
    ],
)
def test_arch_cli_bad_input_is_one_line_without_loading_a_framework(args, message):
    code = (
        "import sys; from sweep.cli.arch import main; from sweep.cli.common import run_main\n"
        "try:\n    run_main(main, sys.argv[1:])\n"
        "finally:\n    print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr
    assert out.stdout.strip() == "[]"


def test_arch_help_does_not_load_a_framework():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sweep.arch", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "FIELD=VALUE" in out.stdout and "unet" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras", "jax", "torch"}
