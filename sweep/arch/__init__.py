"""Architectures: the seed-002 parametric family, the seeds' presets, the latent-size formula.

    from sweep.arch import ArchSpec, build_autoencoder, latent_size
    latent_size(ArchSpec(kernel_size=5, channel_factor=4))   # 2048, without building
    build_autoencoder(PRESETS["unet"], (160, 160, 1), 3)     # a Keras model

==================  ===========================================================
module              holds
==================  ===========================================================
`latent`            the latent-size formula ((W - K + 2P)/S + 1)^2 * C; FLOPs
`base`              what every family shares: plain and canonical forms, checks
`conv_ae`           `ArchSpec`, seed 002's 36-model family
`families`          the seeds' colorization families (dense/fc/conv latent, U-Net)
`presets`           the preset registry, `arch_from_dict`, `build_autoencoder`, `pointwise_saving`
==================  ===========================================================

Everything but the `build` methods is pure Python: specs validate and the latent size is
computed without importing Keras. `python -m sweep.arch NAME` prints a model's summary,
latent size and parameter count (`sweep.cli.arch`).
"""

from sweep.arch.base import Family
from sweep.arch.conv_ae import ArchSpec
from sweep.arch.families import ConvLatentSpec, DenseLatentSpec, FCLatentSpec, UNetSpec
from sweep.arch.latent import conv_output_size, forward_flops, latent_size, model_flops
from sweep.arch.presets import ARCH_FAMILIES, PRESETS, arch_fields, arch_from_dict, build_autoencoder, pointwise_saving, preset, preset_name

__all__ = [
    "ARCH_FAMILIES",
    "ArchSpec",
    "ConvLatentSpec",
    "DenseLatentSpec",
    "FCLatentSpec",
    "Family",
    "PRESETS",
    "UNetSpec",
    "arch_fields",
    "arch_from_dict",
    "build_autoencoder",
    "conv_output_size",
    "forward_flops",
    "latent_size",
    "model_flops",
    "pointwise_saving",
    "preset",
    "preset_name",
]
