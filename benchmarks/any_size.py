"""A colorizer on photographs larger than its input: "native" (the model rebuilt at the
photo's size) against "upsample" (chroma predicted at the trained size, upsampled onto the
full-resolution luma), on scikit-image's bundled colour photographs.

    python benchmarks/any_size.py --results DIR [--trial KEY | --best val_psnr] [--group NAME] [--chroma-gain S]

For each photograph and method: PSNR against the truth and its gain over the grayscale
baseline (the luma copied to RGB), colourfulness as a share of the truth's, and the colour
cast (mean a*, b* error in CIE Lab); then the means over the photographs.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field")  # skimage.data's colour photographs (cat is chelsea)


def photographs() -> dict[str, np.ndarray]:
    from skimage import data

    found = {}
    for name in PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[name] = getattr(data, name)()[..., :3].astype(np.float32) / 255.0
        except Exception as err:  # a photograph scikit-image fetches on first use, offline
            print(f"# {name}: not available offline ({type(err).__name__})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--trial")
    parser.add_argument("--best", default="val_psnr")
    parser.add_argument("--group")
    parser.add_argument("--chroma-gain", type=float, help="the chroma gain (default: the trial's calibrated s*, or 1 without one)")
    args = parser.parse_args()

    from sweep.encodings import gray_baseline
    from sweep.metrics import colour_metrics, psnr
    from sweep.use import load_trial

    if args.trial:
        trial = load_trial(args.results, args.trial)
    else:
        trial = load_trial(args.results, best=args.best, task="colorize", group=args.group)
    p = trial.spec.protocol
    gain = args.chroma_gain if args.chroma_gain is not None else trial.chroma_gain if trial.chroma_gain is not None else 1.0
    print(f"# trial {trial.key}: {trial.spec.arch.family}, {p.encoding}, {p.loss}, {p.epochs} epochs, trained at {trial.input_size}, chroma gain {gain:.3g}")
    scores: dict[str, list[tuple[float, ...]]] = {"gray": [], "native": [], "upsample": []}
    for name, truth in photographs().items():
        gray = psnr(truth[None], gray_baseline(truth[None]))
        scores["gray"].append((gray,))
        line = [f"{name} {truth.shape[0]}x{truth.shape[1]}: gray {gray:.2f} dB"]
        for method in ("native", "upsample"):
            t0 = time.perf_counter()
            out = trial.colorize(truth, method=method, gain=args.chroma_gain)
            seconds = time.perf_counter() - t0
            colour = colour_metrics(truth[None], out[None])
            share = colour["colorfulness"] / colour["colorfulness_truth"]
            value = psnr(truth[None], out[None])
            scores[method].append((value, value - gray, share, colour["a_bias"], colour["b_bias"]))
            line.append(f"{method} {value:.2f} dB ({value - gray:+.2f}), colourfulness {share:.0%}, a*/b* bias {colour['a_bias']:+.1f}/{colour['b_bias']:+.1f}, {seconds:.2f} s")
        print(" | ".join(line))
    for method in ("native", "upsample"):
        s = np.array(scores[method])
        print(
            f"{method}: PSNR {s[:, 0].mean():.2f} dB, gain over gray {s[:, 1].mean():+.2f} dB (above gray on {(s[:, 1] > 0).sum()} of {len(s)}), "
            f"colourfulness {s[:, 2].mean():.0%} of the truth's, a*/b* bias {s[:, 3].mean():+.1f}/{s[:, 4].mean():+.1f}"
        )


if __name__ == "__main__":
    main()
