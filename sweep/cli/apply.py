"""`python -m sweep.apply`: apply a stored trial to your own images.

    python -m sweep.apply --results results --best val_psnr photo.jpg --out colored/
    python -m sweep.apply --results results --trial 3f2a... photos/ --out out/ --latents codes.npz
    python -m sweep.apply --results postgresql://user@host/db --artifacts /shared/artifacts --best psnr photos/ --out out/

A colorizer writes one PNG per input at the input's size; a reconstruction model writes its
reconstruction at the trained size (and says so). Beside them: contact_sheet.png (input,
output, and the original where it had colour) and, with --latents, the latent codes (.npz:
`names`, one per image, and `latents`, one row per image; or .parquet: `name`, `latent`
flattened, `latent_shape`). `--best` ranks the complete
trials of one task and one comparable group on a validation metric unless a test one is
named; with no --task it takes the colorizers when the folder holds any. The work is
`sweep.use` (`sweep.load_trial`); nothing here imports Keras before the arguments are read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.errors import DataError, SpecError
from sweep.export import DEFAULT_FORMAT, FORMATS, PROCESSING_FILE, check_export, export_trial

__all__ = ["IMAGE_SUFFIXES", "build_parser", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # a folder's images
LATENT_SUFFIXES = (".npz", ".parquet")  # --latents: numpy's archive, or a table (one row per image)
SHEET_HEIGHT = 128  # pixels per row of the contact sheet: photos of any size side by side


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.apply",
        description="Colorize, reconstruct or encode your own images with a stored trial: one PNG per input "
        "(a colorizer's at the input's size), a contact sheet, and the latent codes with --latents.",
        epilog="Example: python -m sweep.apply --results results --best val_psnr photo.jpg --out colored/",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders of images (PNG, JPEG, ...); none with --export alone")
    parser.add_argument("--results", required=True, metavar="DIR_OR_URL", help="results folder, storage URL (with --artifacts), or one trial's folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--trial", metavar="KEY", help="the trial key to apply")
    which.add_argument(
        "--best", metavar="METRIC",
        help="apply the best complete trial by this metric (a bare name means validation: psnr is val_psnr)",
    )  # fmt: skip
    parser.add_argument("--task", choices=("colorize", "reconstruct"), help="the task to apply (default: the trial's; with --best, colorize when the results hold colorizers)")
    parser.add_argument("--group", metavar="NAME", help="with --best: rank within this comparable group")
    parser.add_argument("--artifacts", metavar="DIR_OR_URL", help="the run's --artifacts store, where the models are (needed for a storage URL)")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs and the contact sheet (needed with INPUT images)")
    parser.add_argument(
        "--latents", metavar="FILE",
        help="also write the latent codes, one row per image, to this .npz (names, latents) or .parquet file (name, latent flattened, latent_shape)",
    )  # fmt: skip
    parser.add_argument(
        "--export", metavar="DIR",
        help="also export the trial's model to this new or empty folder (Keras' model.export), with processing.json: "
        "the input it takes and how its output decodes to RGB",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=FORMATS,
        help=f"with --export: tf_saved_model (a SavedModel folder; any backend, no extra) or onnx (model.onnx; the "
        f"TensorFlow backend and the onnx extra: pip install -e '.[onnx]') (default: {DEFAULT_FORMAT})",
    )  # fmt: skip
    parser.add_argument(
        "--method", choices=("upsample", "native"), default="upsample",
        help="a colorizer at an image's own size: upsample (chroma predicted at the trained size, upsampled onto the "
        "full-size luma; measured better) or native (the model rebuilt at that size; fully convolutional models only) "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--temperature", type=float, help="ab_classification: the annealed-mean temperature (default: the trial's)")
    parser.add_argument(
        "--chroma-gain", type=float, metavar="S",
        help="a colorizer: scale the predicted chroma about gray by S (1: the model's own colours, 0: gray; "
        "default: the trial's calibrated gain s*, fitted on its validation split, or 1 where it has none and its data is not at hand)",
    )  # fmt: skip
    parser.add_argument(
        "--chroma-about", choices=("gray", "mean"), default="gray",
        help="what --chroma-gain scales the chroma about: gray (neutral; the calibration's) or each image's mean chroma "
        "(mean: its average colour kept, so a gain above s* adds colour without a cast) (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR", help="the trial's dataset, to fit the chroma gain of a trial trained before calibration (as the grid's --data-dir)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def collect_inputs(inputs: list[str]) -> list[Path]:
    """The files named, and each folder's images (sorted); a missing path is a DataError."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trial is None and args.best is None and not (Path(args.results) / "spec.json").exists():
        raise SpecError("give --trial KEY or --best METRIC (or --results a trial's folder)")
    if args.latents is not None and Path(args.latents).suffix not in LATENT_SUFFIXES:
        raise SpecError(f"--latents {args.latents}: the latent codes are written as .npz or Parquet; name a file ending in {' or '.join(LATENT_SUFFIXES)}")
    if not args.inputs and args.export is None:
        raise SpecError("give INPUT images (files or folders) to apply the trial to, or --export DIR to export its model")
    if args.inputs and args.out is None:
        raise SpecError("--out DIR: name the folder for the outputs of the INPUT images")
    if args.format is not None and args.export is None:
        raise SpecError(f"--format {args.format}: the format of an export; give --export DIR too")
    export_format = args.format or DEFAULT_FORMAT
    if args.export is not None:
        check_export(args.export, export_format)  # before the model loads: a missing converter, a folder in use
    files = collect_inputs(args.inputs)

    import numpy as np  # (after the arguments: --help answers at once)

    from sweep.use import load_trial, read_images

    task = args.task
    if args.best is not None and task is None:
        task = _default_task(args.results)
    trial = load_trial(
        args.results, args.trial, best=args.best, task=task if args.best else None, group=args.group,
        artifacts=args.artifacts, temperature=args.temperature,
    )  # fmt: skip
    kind = trial.spec.protocol.task
    if task is not None and task != kind:
        raise SpecError(f"--task {task}: trial {trial.key} is a {kind!r} model; it cannot {task}" + (" (it has no colour to predict)" if task == "colorize" else ""))
    def export() -> None:
        exported = export_trial(trial, args.export, export_format)
        print(f"sweep.apply: trial {trial.key} ({kind}) exported to {exported} ({export_format}; input and output: {Path(args.export) / PROCESSING_FILE})", file=sys.stderr)

    if args.export is not None and not files:
        export()
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metric = f", {args.best if args.best in trial.row else 'val_' + args.best} {trial.row.get(args.best, trial.row.get('val_' + args.best)):.4g}" if args.best else ""
    print(f"sweep.apply: trial {trial.key} ({kind}, {trial.spec.arch.family}, encoding {trial.spec.protocol.encoding}{metric})", file=sys.stderr)
    if kind == "reconstruct":
        print(f"sweep.apply: reconstructions are at the trained size {trial.input_size[0]}x{trial.input_size[1]}, not the inputs' sizes", file=sys.stderr)
    gain = _chroma_gain(trial, args) if kind == "colorize" else None
    if args.export is not None:  # (after the gain: one fitted now goes into processing.json too)
        export()

    from PIL import Image
    from tqdm import tqdm

    names, latents, sheet_rows, used = [], [], [], set()
    for path in tqdm(files, desc="apply", unit="image", disable=len(files) < 2, file=sys.stderr):
        images, colours, _ = read_images(path)
        rgb, colour = images[0], colours[0]
        output = trial.colorize(rgb, method=args.method, gain=gain, about=args.chroma_about) if kind == "colorize" else trial.reconstruct(rgb)
        target = _unique(out / f"{path.stem}.png", used)
        Image.fromarray(_uint8(output)).save(target)
        names.append(str(path))
        if args.latents is not None:
            latents.append(trial.encode(rgb))
        shown = np.repeat(np.asarray(trial.task.inputs(rgb[None])[0]), 3, axis=-1) if kind == "colorize" else rgb
        sheet_rows.append([shown, output] + ([rgb] if colour and kind == "colorize" else []))
    sheet = out / "contact_sheet.png"
    Image.fromarray(_contact_sheet(sheet_rows)).save(sheet)
    print(f"sweep.apply: {len(files)} image(s) written to {out}/ (contact sheet: {sheet})", file=sys.stderr)
    if args.latents is not None:
        codes = np.stack(latents)
        if args.latents.endswith(".npz"):
            np.savez(args.latents, names=np.array(names), latents=codes)
        else:  # one row per image: its path, the flattened latent tensor and that tensor's shape
            import pandas as pd

            shape = "x".join(map(str, codes.shape[1:]))
            pd.DataFrame({"name": names, "latent": list(codes.reshape(len(codes), -1)), "latent_shape": shape}).to_parquet(args.latents)
        print(f"sweep.apply: latent codes {codes.shape[1:]} of {len(codes)} image(s) in {args.latents}", file=sys.stderr)
    return 0


def _chroma_gain(trial, args) -> float:
    """--chroma-gain, else the trial's calibrated s*, else s* fitted now where the trial's data
    is at hand, else 1; said in one line."""
    from sweep.chroma import MAX_GAIN

    if args.chroma_gain is not None:
        if not 0 <= args.chroma_gain <= MAX_GAIN:
            raise SpecError(f"--chroma-gain {args.chroma_gain:g}: a gain in [0, {MAX_GAIN:g}] (1: the model's own colours, 0: gray)")
        note = f"calibrated s* {trial.chroma_gain:.3g}" if trial.chroma_gain is not None else "no calibrated gain stored"
        about = ", about each image's mean chroma" if args.chroma_about == "mean" else ""
        print(f"sweep.apply: chroma gain {args.chroma_gain:g}{about} (--chroma-gain; {note})", file=sys.stderr)
        return args.chroma_gain
    if trial.chroma_gain is not None:
        print(f"sweep.apply: chroma gain {trial.chroma_gain:.3g} (the trial's calibrated s*; --chroma-gain S to change it)", file=sys.stderr)
        return trial.chroma_gain
    why = _data_not_at_hand(trial, args.data_dir)
    if why is None:
        try:
            gain = trial.fit_chroma_gain(args.data_dir)
        except DataError as err:
            if args.data_dir is not None:  # the data named is not the trial's: say so rather than guess
                raise DataError(f"--data-dir {args.data_dir}: cannot fit the chroma gain: {err}") from None
            why = str(err)
        else:
            where = f"stored in {trial.folder}" if trial.chroma_gain_is_the_trials() else f"at --temperature {args.temperature:g}, not stored"
            print(f"sweep.apply: chroma gain {gain:.3g}: s* fitted now on the trial's validation split ({where})", file=sys.stderr)
            return gain
    print(f"sweep.apply: chroma gain 1: trial {trial.key} has no calibrated gain and its data is not at hand ({why}); "
          "--data-dir DIR fits it, --chroma-gain S sets one", file=sys.stderr)  # fmt: skip
    return 1.0


def _data_not_at_hand(trial, data_dir: str | None) -> str | None:
    """Why the trial's dataset cannot be read without a download, or None when it can."""
    dataset = trial.spec.protocol.dataset
    if data_dir is not None or dataset == "synthetic":
        return None
    if dataset == "folder":
        return "an image folder: pass --data-dir"
    from sweep.data.cifar import CIFAR, keras_cache_folder

    if dataset in CIFAR and (keras_cache_folder(dataset) / CIFAR[dataset][0] / CIFAR[dataset][1][0]).exists():
        return None
    return f"no --data-dir, and no {dataset} in Keras' download cache"


def _default_task(results: str) -> str | None:
    """With --best and no --task: the colorizers when the results hold any (the command is
    mostly for colorizing photographs), else the reconstruction models."""
    from sweep.results import load_results

    try:
        frame = load_results(results)
    except Exception:  # load_trial says what is wrong with `results`, in one line
        return None
    if "task" in frame.columns and (frame["task"] == "colorize").any():
        return "colorize"
    return "reconstruct" if len(frame) else None


def _unique(path: Path, used: set) -> Path:
    """`path`, or path-2.png, ... when two inputs share a name (from different folders)."""
    candidate, n = path, 1
    while candidate in used:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    used.add(candidate)
    return candidate


def _uint8(image):
    import numpy as np

    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _contact_sheet(rows: list[list]) -> "np.ndarray":  # noqa: F821
    """One row per image (input, output, original), each tile scaled to SHEET_HEIGHT high."""
    import numpy as np
    from PIL import Image

    strips = []
    for tiles in rows:
        scaled = []
        for tile in tiles:
            image = Image.fromarray(_uint8(tile))
            width = max(1, round(image.width * SHEET_HEIGHT / image.height))
            filter_ = Image.Resampling.NEAREST if image.height < SHEET_HEIGHT else Image.Resampling.LANCZOS
            scaled.append(np.asarray(image.resize((width, SHEET_HEIGHT), filter_)))
            scaled.append(np.full((SHEET_HEIGHT, 4, 3), 255, np.uint8))  # a white gap
        strips.append(np.concatenate(scaled, axis=1))
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    return np.concatenate(padded, axis=0)
