"""`python -m sweep.arch`: show a preset or grid point (summary, latent size, parameters)
without training.

    python -m sweep.arch dense_latent --no-summary
    python -m sweep.arch acml kernel_size=5 channel_factor=4 --input-shape 32x32x1
    python -m sweep.arch '{"family": "dense_latent", "latent_dim": 128}'   # a results row's spec
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import yaml

from sweep.arch import PRESETS, ArchSpec, arch_from_dict, build_autoencoder, latent_size, preset
from sweep.errors import SpecError, must_be
from sweep.files import load_yaml


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise SpecError(must_be("--input-shape", None, "HxWxC with positive ints, e.g. 32x32x1", text))
    return shape  # type: ignore[return-value]


def spec_from_cli(arch: str, fields: list[str]) -> tuple[str, Any]:
    """(label, spec) from a preset name or a JSON spec, with FIELD=VALUE overrides (YAML values)."""
    if arch.lstrip().startswith("{"):
        try:
            values = json.loads(arch)
        except json.JSONDecodeError as err:
            raise SpecError(f"the architecture {arch!r} is not valid JSON ({err.msg})") from None
        values = values.get("arch", values) if isinstance(values, dict) else values  # a results row's `spec`
        if not isinstance(values, dict):
            raise SpecError(must_be("a JSON architecture", None, "an object of fields", arch))
        base, label = arch_from_dict(values), values.get("family", ArchSpec.family)
    else:
        base, label = preset(arch), arch
    overrides = {}
    for item in fields:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpecError(must_be("a field to change", None, "FIELD=VALUE (e.g. kernel_size=5)", item))
        try:
            overrides[key.strip()] = load_yaml(text)  # as in a search-space file: 1e-3 is a float
        except yaml.YAMLError:
            raise SpecError(f"{key}: cannot read the value {text!r}") from None
    spec = arch_from_dict(overrides, base) if overrides else base
    return (label if not overrides else f"{label}*"), spec


def describe(spec: Any, input_shape: tuple[int, int, int], output_channels: int, label: str, summary: bool = True) -> str:
    """Build `spec` and say its shapes, latent size and parameter counts (prints the Keras
    summary first when `summary`)."""
    from sweep import backend

    backend.keras_ready()
    import keras

    name = label.rstrip("*").replace("{", "").strip() or "autoencoder"
    model = build_autoencoder(spec, input_shape, output_channels, name=name if name.isidentifier() else "autoencoder")
    if summary:
        model.summary()
    total = model.count_params()
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    encoder = keras.Model(model.inputs, model.get_layer("latent").output).count_params()
    latent = spec.latent_shape(input_shape)
    shape = "x".join(map(str, latent)) if len(latent) > 1 else f"vector of {latent[0]}"
    out_shape = "x".join(str(d) for d in model.output.shape[1:])
    lines = [
        f"architecture  {label}: {json.dumps(spec.to_dict())}",
        f"input         {'x'.join(map(str, input_shape))} -> output {out_shape}",
        f"latent        {shape} = {latent_size(spec, input_shape):,} values",
        f"parameters    {total:,} (encoder up to 'latent' {encoder:,}, decoder {total - encoder:,}; "
        f"trainable {trainable:,}, non-trainable {total - trainable:,})",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.arch",
        description="Print the Keras summary, latent size and parameter count of an architecture, without training.",
        epilog="Examples: python -m sweep.arch unet | python -m sweep.arch acml kernel_size=5 channel_factor=4 "
        "--input-shape 32x32x1 | python -m sweep.arch '{\"family\": \"dense_latent\", \"latent_dim\": 128}'",
    )
    parser.add_argument(
        "arch",
        help=f"a preset ({', '.join(PRESETS)}) or a JSON spec, e.g. a results row's 'spec' column",
    )
    parser.add_argument(
        "fields", nargs="*", metavar="FIELD=VALUE", help="fields to change, as in a search space: kernel_size=5 filters=[32,64,128]"
    )
    parser.add_argument(
        "--input-shape",
        metavar="HxWxC",
        help="input images (default: the seed's, 32x32x1 for the colorization presets, 32x32x3 for acml, 160x160x1 for unet)",
    )
    parser.add_argument("--output-channels", type=int, default=3, help="output channels (default: %(default)s, RGB)")
    parser.add_argument("--no-summary", action="store_true", help="skip the Keras layer table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label, spec = spec_from_cli(args.arch, args.fields)
    input_shape = _parse_shape(args.input_shape) if args.input_shape else spec.reference_input
    if args.output_channels < 1:
        raise SpecError(must_be("--output-channels", None, ">= 1", args.output_channels))
    latent_size(spec, input_shape)  # a spec that does not fit the input fails here, before Keras loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # a summary needs no accelerator
    print(describe(spec, input_shape, args.output_channels, label, summary=not args.no_summary))
    return 0
