"""The colour targets, from calibrated colorization trials: per configuration, means over seeds
with 95% t-intervals of the test PSNR gain over the grayscale baseline and the colourfulness as
a share of the truth's, at gain 1 (the row's headline), at the calibrated s* and along gains
(multiples of each trial's s*, or the same gain for every seed), with the a*/b* cast.

    python benchmarks/colour_targets.py --results DIR [DIR ...] [--gain 1.8] [--times 1.9] [--data-dir DATA_DIR]

Read from the rows' `chroma_gain`, `test_*_at_gain` and `gain_curve` (sweep.chroma): no model
is loaded. With --data-dir, each trial's model is applied to its test split again for what
the rows do not hold: the a*/b* cast at each --gain, and what test-time flips (the mean of
the chroma predicted for an image and its mirror) and a seed ensemble (the mean over a
configuration's seeds) add at s*. Targets: a recipe at its stated gain with colourfulness >= 80% of the truth's and a
mean PSNR at least the grayscale baseline's, a*/b* bias within +-2; the best-PSNR recipe's gain
over gray >= +1.0 dB.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

SPLIT_BY = ("preset", "family", "base_width", "depth", "encoding", "loss", "annealed_temperature", "epochs", "augment_flip", "augment_rotation", "learning_rate", "space")


def interval(values) -> str:
    from scipy import stats

    values = np.asarray(values, float)
    mean = values.mean()
    if len(values) < 2:
        return f"{mean:+.3f}"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+", required=True, help="results folders (or storage URLs) holding calibrated colorization trials")
    parser.add_argument("--gain", type=float, nargs="*", default=[1.6, 1.7, 1.8], help="gains to read for every seed alike")
    parser.add_argument("--times", type=float, nargs="*", default=[1.5, 1.75, 1.9, 2.0], help="multiples of each trial's own s* to read")
    parser.add_argument("--about", choices=("gray", "mean"), default="gray", help="with --data-dir: scale the chroma about gray or each image's mean chroma (sweep.chroma)")
    parser.add_argument("--data-dir", help="the trials' dataset: apply the models again for the cast at each --gain, flips and seed ensembles")
    args = parser.parse_args()

    import pandas as pd

    from sweep.chroma import curve_at
    from sweep.results import load_results

    frame = pd.concat([load_results(where).assign(_where=where) for where in args.results], ignore_index=True)
    frame = frame[(frame["task"] == "colorize") & (frame["status"] == "complete")]
    if "chroma_gain" not in frame or frame["chroma_gain"].isna().all():
        raise SystemExit("no calibrated colorization trial in these results (trained before the chroma gain was fitted)")
    frame = frame[frame["chroma_gain"].notna()]
    keys = [c for c in SPLIT_BY if c in frame and frame[c].astype(str).nunique() > 1]
    for config, rows in frame.groupby([frame[c].astype(str) for c in keys] if keys else [frame["task"]]):
        truth = rows["test_colorfulness_truth"]
        named = ", ".join(f"{k}={v}" for k, v in zip(keys, config if isinstance(config, tuple) else (config,))) if keys else "all"
        print(f"== {rows['space'].iloc[0]} ({named}): {len(rows)} seed(s), epochs run {rows['epochs_run'].tolist()}, best {rows['best_epoch'].tolist()}")
        print(f"   s* {interval(rows['chroma_gain'])}")
        print(f"   gain 1:  PSNR over gray {interval(rows['test_psnr'] - rows['test_gray_psnr'])} dB, colourfulness {interval(rows['test_colorfulness'] / truth)}")
        print(f"   gain s*: PSNR over gray {interval(rows['test_psnr_at_gain'] - rows['test_gray_psnr'])} dB, colourfulness "
              f"{interval(rows['test_colorfulness_at_gain'] / truth)}, a*/b* bias {interval(rows['test_a_bias_at_gain'])} / {interval(rows['test_b_bias_at_gain'])}")  # fmt: skip

        def along(gains, what):
            psnr = [curve_at(r["gain_curve"], g, "psnr") - r["test_gray_psnr"] for g, (_, r) in zip(gains, rows.iterrows())]
            colour = [curve_at(r["gain_curve"], g, "colorfulness") / r["test_colorfulness_truth"] for g, (_, r) in zip(gains, rows.iterrows())]
            print(f"   {what}: PSNR over gray {interval(psnr)} dB, colourfulness {interval(colour)}")

        for times in args.times:
            along(list(times * rows["chroma_gain"]), f"{times:g} s*")
        for gain in args.gain:
            along([gain] * len(rows), f"gain {gain:g}")
        if args.data_dir:
            _with_models(args, rows)


def _with_models(args, rows) -> None:
    """The cast at each --gain, and test-time flips and the seed ensemble at s*, from the models."""
    from sweep.chroma import fit_gain, with_gain
    from sweep.data import load_dataset
    from sweep.encodings import gray_baseline, luminance
    from sweep.metrics import chroma_agreement, colorfulness, psnr
    from sweep.train.arrays import splits_for
    from sweep.use import load_trial

    def ab(rgb):
        from skimage.color import rgb2lab

        return rgb2lab(np.clip(rgb, 0, 1).astype(np.float64))[..., 1:]

    casts = {gain: [] for gain in args.gain}
    plain, flipped, predictions = [], [], {"val": [], "test": [], "val_flip": [], "test_flip": []}
    for _, row in rows.iterrows():
        trial = load_trial(row["_where"], row["trial_key"])
        splits = splits_for(load_dataset(trial.spec.protocol.dataset, args.data_dir), trial.spec.protocol)
        gray = psnr(splits.test, gray_baseline(splits.test))
        for split in ("val", "test"):
            images = getattr(splits, split)
            x = trial.task.inputs(images)
            out = trial._run(trial.model, x)
            mirrored = trial._run(trial.model, np.ascontiguousarray(x[:, :, ::-1]))[:, :, ::-1]
            predictions[split].append(trial.task.to_rgb(out, x))
            predictions[f"{split}_flip"].append(trial.task.to_rgb((out + mirrored) / 2, x))
        luma = luminance(splits.test)
        for gain in args.gain:
            scaled = with_gain(predictions["test"][-1], gain, luma, about=args.about)
            agreement = chroma_agreement(ab(splits.test), ab(scaled))
            casts[gain].append((agreement["a_bias"], agreement["b_bias"], colorfulness(scaled) / colorfulness(splits.test), psnr(splits.test, scaled) - gray))
        for kind, out in ((plain, ""), (flipped, "_flip")):
            s = fit_gain(splits.val, predictions[f"val{out}"][-1])
            kind.append(psnr(splits.test, with_gain(predictions[f"test{out}"][-1], s, luma)) - gray)
    for gain, values in casts.items():
        values = np.array(values)
        print(f"   gain {gain:g} about {args.about} (models): PSNR over gray {interval(values[:, 3])} dB, colourfulness {interval(values[:, 2])}, "
              f"a*/b* bias {interval(values[:, 0])} / {interval(values[:, 1])}")  # fmt: skip
    print(f"   at s*, models again: PSNR over gray {interval(plain)} dB; with test-time flips {interval(flipped)} dB")
    for out, what in (("", "seed ensemble"), ("_flip", "seed ensemble with flips")):
        val, test = np.mean(predictions[f"val{out}"], axis=0), np.mean(predictions[f"test{out}"], axis=0)
        s = fit_gain(splits.val, val)
        print(f"   {what} of {len(rows)} at its s* {s:.3f}: PSNR over gray {psnr(splits.test, with_gain(test, s, luminance(splits.test))) - gray:+.3f} dB")


if __name__ == "__main__":
    main()
