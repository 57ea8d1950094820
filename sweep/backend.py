"""The seam to the deep-learning runtime: device pinning, threads, cleanup, versions.

Everything that differs between Keras backends (TensorFlow, JAX, PyTorch) or must happen
before the backend is first imported lives here, so the rest of sweep uses `keras` and
`keras.ops` alone.
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import subprocess
import sys
from functools import cache
from typing import Any, Callable

from sweep.files import held_native_stderr

__all__ = [
    "clear",
    "configure_process",
    "device_description",
    "resident",
    "synchronize",
    "train_loop",
    "versions",
    "visible_gpus",
]


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without importing any framework."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [part.strip() for part in env.split(",") if part.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def configure_process(gpu: str | None, threads: int | None, gpus_shared: bool = False) -> None:
    """Pin this process to one GPU (or none) and set its CPU threads.

    Must run before Keras is imported in this process: the frameworks read these
    variables once, at start-up.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1" if gpu is None else str(gpu)
    # Several workers share a GPU only if none grabs all its memory up front.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if gpus_shared:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(min(threads, 2))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}".strip()
        os.environ["SWEEP_TORCH_THREADS"] = str(threads)


def _after_import() -> None:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notes: expected when one process builds many models
    if keras.backend.backend() == "torch" and os.environ.get("SWEEP_TORCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["SWEEP_TORCH_THREADS"]))


@cache
def keras_ready() -> str:
    """Import Keras once per process (after `configure_process`), return the backend name."""
    with held_native_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery happens here, quietly
    _after_import()
    return keras.backend.backend()


_RESIDENT: dict[int, tuple[Any, Any]] = {}  # id(numpy array) -> (the array, its copy on the device)
RESIDENT_ARRAYS = 16  # the most arrays kept on the device at once (a worker's splits and tasks)


def resident(array):
    """`array` as a tensor on this process's device, copied there once: a worker's training,
    validation and test arrays stay on the device across epochs and trials, and every batch
    is gathered from them there by index (no host-to-device copy per step). Keyed by the
    array's identity: pass the cached arrays of `sweep.train.task_arrays`, not fresh copies."""
    hit = _RESIDENT.get(id(array))
    if hit is not None and hit[0] is array:
        return hit[1]
    import keras

    if keras.backend.backend() == "jax":
        import jax

        placed = jax.device_put(array)
    else:
        placed = keras.ops.convert_to_tensor(array)
    _RESIDENT[id(array)] = (array, placed)
    while len(_RESIDENT) > RESIDENT_ARRAYS:
        del _RESIDENT[next(iter(_RESIDENT))]
    return placed


def train_loop(model, outputs: list[str] | None = None) -> Callable:
    """A function `run(x, y, order, weights)` that trains `model` (compiled, optimizer built)
    for `len(order)` steps in one compiled call: step `i` is Keras' own `train_step` on
    `x[order[i]]`, `y[order[i]]` (every head named in `outputs` gets the same targets) with
    per-image sample weights `weights[i]` (or None). `x` and `y` are `resident` tensors,
    `order` an int32 array (steps, batch). The model's variables hold the new state when it
    returns, and its metrics (the running loss) have accumulated every step's.

    One trace per step count and batch shape: call it with whole epochs for one dispatch
    per epoch, or one step at a time when something must happen after every step."""
    import keras

    kept = getattr(model, LOOP_ATTRIBUTE, None)
    if kept is not None and kept[0] == outputs:
        return kept[1]  # a reused model: its traced loop too
    backend = keras.backend.backend()
    make = {"jax": _jax_loop, "tensorflow": _tf_loop}.get(backend, _eager_loop)
    loop = None

    def run(x, y, order, weights) -> None:
        nonlocal loop
        if loop is None:
            # What `fit` does first: create the loss trackers and metrics from one batch's
            # shapes (inside the compiled loop they could not be created).
            wb = None if weights is None else weights[0]
            model._symbolic_build(data_batch=_step_data(x[: len(order[0])], y[: len(order[0])], wb, outputs, len(y.shape)))
            loop = make(model, outputs)
        loop(x, y, order, weights)

    # Kept on the model itself (not tracked by Keras): model and loop are freed together.
    object.__setattr__(model, LOOP_ATTRIBUTE, (outputs, run))
    return run


LOOP_ATTRIBUTE = "_sweep_train_loop"


def synchronize(model) -> None:
    """Wait until the device has finished what was queued for `model` (JAX and GPUs run
    asynchronously: time a compiled call only after this)."""
    import keras

    keras.ops.convert_to_numpy(model.trainable_variables[-1])


def _step_data(xb, yb, wb, outputs, y_rank: int):
    import keras

    if wb is not None:  # one weight per image, broadcast over the per-pixel losses
        wb = keras.ops.reshape(wb, (-1, *[1] * (y_rank - 2)))
    if outputs is None:
        return xb, yb, wb
    return xb, {name: yb for name in outputs}, None if wb is None else {name: wb for name in outputs}


def _jax_loop(model, outputs):
    import jax

    def steps(state, x, y, order, weights):
        def body(state, i):
            wb = None if weights is None else weights[i]
            _, state = model.train_step(state, _step_data(x[order[i]], y[order[i]], wb, outputs, y.ndim))
            return state, None

        state, _ = jax.lax.scan(body, state, jax.numpy.arange(order.shape[0]))
        return state

    compiled = jax.jit(steps, donate_argnums=0)
    if hasattr(model, "_record_training_state_sharding_spec"):
        model._record_training_state_sharding_spec()  # what older Keras (3.5) `fit` does first; its train_step reads it

    def run(x, y, order, weights) -> None:
        groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables, model.metrics_variables)
        state = tuple([v.value for v in group] for group in groups)
        state = compiled(state, x, y, order, weights)
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)

    return run


def _tf_loop(model, outputs):
    import tensorflow as tf

    # XLA where Keras' own fit would use it (`jit_compile="auto"` resolves to GPUs; on this
    # project's CPUs an XLA-compiled epoch ran 10x slower). One trace per batch shape, never a
    # shape-generic one: Keras weighs a packed member's loss by the static batch size, so a
    # partial last batch traced with an unknown size counted as one image.
    @tf.function(autograph=False, reduce_retracing=False, jit_compile=bool(model.jit_compile))
    def steps(x, y, order, weights):
        def body(i):
            wb = None if weights is None else weights[i]
            model.train_step(_step_data(tf.gather(x, order[i]), tf.gather(y, order[i]), wb, outputs, len(y.shape)))
            return (i + 1,)

        tf.while_loop(lambda i: i < tf.shape(order)[0], body, (tf.constant(0),))

    return steps


def _eager_loop(model, outputs):
    """Any other backend: Keras' own one-batch step, once per step."""
    import keras

    def run(x, y, order, weights) -> None:
        for i in range(len(order)):
            index = keras.ops.convert_to_tensor(order[i])
            xb, yb = keras.ops.take(x, index, axis=0), keras.ops.take(y, index, axis=0)
            _, yb, wb = _step_data(xb, yb, None if weights is None else weights[i], outputs, len(y.shape))
            model.train_on_batch(xb, yb, sample_weight=wb, reset_metrics=False)

    return run


def clear() -> None:
    """Free what one trial left behind, so memory stays flat across many trials in a worker.

    Call it only when no model of this process is still in use."""
    import keras

    global _COLLECTED_AT
    if keras.backend.backend() == "tensorflow":
        _forget_custom_gradients()
    keras.backend.clear_session(free_memory=False)
    # A full garbage collection costs 0.2-0.3 s with a framework loaded, more than a small
    # trial's training: collect only once memory has grown since the last one (the trials'
    # reference cycles are then freed together; memory stays flat, see BENCHMARKS.md).
    used = _resident_bytes()
    if used is None or used - _COLLECTED_AT > COLLECT_AFTER_GROWTH:
        gc.collect()
        _return_freed_memory()
        _COLLECTED_AT = _resident_bytes() or 0


COLLECT_AFTER_GROWTH = 256 * 2**20  # bytes of resident memory gained since the last full collection
_COLLECTED_AT = 0


def _resident_bytes() -> int | None:
    """This process's resident memory; None where /proc is not there (then `clear` collects
    after every trial)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _forget_custom_gradients() -> None:
    """Every traced training step registers its `tf.custom_gradient` functions in a global
    TensorFlow registry that nothing ever empties; each entry keeps the whole traced graph
    alive (about 12 MiB per trial here). Once the session is cleared they are dead weight."""
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
        for name in [name for name in registry if name.startswith("CustomGradient-")]:
            del registry[name]
    except (ImportError, AttributeError):  # a TensorFlow without this internal: nothing to do
        pass


def _return_freed_memory() -> None:
    """Ask glibc to give freed heap back to the OS, so resident memory reflects what is used."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# The libraries whose version can change a number in a row, as (name in the row, module):
# the framework and its backend (training), NumPy, scikit-image (SSIM, colour spaces), SciPy
# (rotations, rebalancing), Pillow (resizing, decoding) and Optuna (what is sampled and pruned).
NUMERIC_LIBRARIES = (
    ("keras", "keras"), ("numpy", "numpy"), ("scikit-image", "skimage"), ("scipy", "scipy"),
    ("pillow", "PIL"), ("optuna", "optuna"),
)  # fmt: skip
BACKEND_LIBRARIES = {"tensorflow": (("tensorflow", "tensorflow"),), "jax": (("jax", "jax"), ("jaxlib", "jaxlib")), "torch": (("torch", "torch"),)}


def _version(module: str) -> str | None:
    """The version a module reports; read from it if it is loaded already, else from the
    installed package's metadata (so the row costs no import); None if it is not installed."""
    from importlib import metadata

    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    for distribution in metadata.packages_distributions().get(module, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


@cache
def versions() -> dict[str, str | None]:
    """Python's version and those of the libraries that change numbers (None for one that is
    not installed), with the Keras backend in use."""
    import keras

    backend = keras.backend.backend()
    found: dict[str, str | None] = {"python": platform.python_version(), "backend": backend}
    for name, module in (*NUMERIC_LIBRARIES, *BACKEND_LIBRARIES.get(backend, ())):
        found[name] = _version(module)
    return found


@cache
def device_description() -> str:
    """'cpu' or the accelerator's name, for the results row."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"gpu:{details.get('device_name', gpus[0].name)}"
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                return f"{device.platform}:{device.device_kind}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"gpu:{torch.cuda.get_device_name(0)}"
    except Exception:  # a description is best-effort; training does not depend on it
        pass
    return "cpu"
