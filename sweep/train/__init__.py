"""Training: one trial from spec to row, resumable, and packs of trials in one step.

==============  ==================================================================
module          holds
==============  ==================================================================
`step`          the training step: model init and precision, optimizer, loss, the
                batches of each epoch (`epoch_order`), `fit`, the validation loss
`epochs`        the end of every epoch: history, best weights, early stopping, the
                learning-rate plateau, pruning
`checkpoint`    the whole training state in one atomic file, and resuming from it
`arrays`        a protocol's splits and a task's inputs and targets, once per process
`evaluate`      metrics, the grayscale baseline, artefacts (model, PNG, history)
`rows`          a row's identity, data and provenance columns; failures
`trial`         `run_trial`: one trial -> one row
`pack`          `run_pack`, `make_packs`: several trials in one compiled step
==============  ==================================================================

Keras is imported inside the functions that build or train, never at import.
"""

from sweep.train.arrays import splits_for, task_arrays
from sweep.train.epochs import Pruning
from sweep.train.evaluate import predict_rgb
from sweep.train.pack import make_packs, packable, probe_pack_size, run_pack
from sweep.train.rows import trial_dir
from sweep.train.step import epoch_order
from sweep.train.trial import run_trial

__all__ = [
    "Pruning",
    "epoch_order",
    "make_packs",
    "packable",
    "predict_rgb",
    "probe_pack_size",
    "run_pack",
    "run_trial",
    "splits_for",
    "task_arrays",
    "trial_dir",
]
