"""sweep: which convolutional autoencoder architecture, and why.

Importing the package is cheap: Keras and TensorFlow load only inside the functions that
build or train models, so command-line help, search-space validation and the results
store work without them.

`sweep.load_trial(results, key)` (or `best="val_psnr", task="colorize"`) gives a stored
trial ready to colorize, reconstruct, encode and decode your own images (`sweep.use`).
"""

__version__ = "0.2.0"
__all__ = ["load_trial"]


def __getattr__(name: str):
    if name == "load_trial":  # lazily: importing `sweep` stays cheap
        from sweep.use import load_trial

        return load_trial
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
