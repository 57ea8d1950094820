"""The training step: a whole epoch per compiled call on device-resident data trains exactly
as one step per call does, and as Keras' own `model.fit` on the same ordered batches, for a
lone model, a pack and a resumed model (same losses, best epochs and weights, to float
tolerance). Run under every backend the test command covers (marked `backends`)."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.arch import ArchSpec
from sweep.spec import TrainingProtocol, TrialSpec

pytestmark = pytest.mark.backends

# 58 training images in batches of 16: three whole batches and a padded partial one.
PROTOCOL = TrainingProtocol(dataset="synthetic", epochs=3, train_fraction=1.0, train_limit=64, batch_size=16)
ARCHS = (ArchSpec(), ArchSpec(fewer_layers=True, channel_factor=4, kernel_size=5))


def _setup(synthetic, protocol=PROTOCOL, arch=ARCHS[0]):
    from sweep.train import task_arrays
    from sweep.train.step import build_model, compile_model, make_loss

    spec = TrialSpec(arch, protocol, "synthetic")
    task, splits, arrays = task_arrays(synthetic, protocol)
    loss = make_loss(protocol, arrays["y_train"])
    model = build_model(spec, arrays["x_train"].shape[1:], task)
    compile_model(model, protocol, loss)
    return model, task, splits, arrays, loss


def _recorder(arrays, loss, log):
    """A callback recording each epoch's training loss, validation loss and best epoch."""
    import keras

    from sweep.train.epochs import Tracker
    from sweep.train.step import validation_loss

    tracker = Tracker(100, None)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = {"loss": float(logs["loss"]), "val_loss": validation_loss(self.model, arrays["x_val"], arrays["y_val"], loss)}
            tracker.end_epoch(epoch, record)
            log.append({**record, "best_epoch": tracker.best_epoch})

    return Record()


def _keras_fit(model, splits, arrays, task, protocol, first_epoch, callbacks):
    """The reference: Keras' own `fit`, one step per call, one `fit` per epoch on the same
    ordered and padded batches (how sweep trained before it compiled whole epochs)."""
    from sweep.train.step import epoch_batches, has_batch_norm

    for epoch in range(first_epoch, protocol.epochs):
        x, y, w = epoch_batches(splits.train, arrays["x_train"], arrays["y_train"], task, protocol, epoch, not has_batch_norm(model))
        model.fit(x, y, sample_weight=w, batch_size=protocol.batch_size, shuffle=False, epochs=epoch + 1,
                  initial_epoch=epoch, verbose=0, callbacks=callbacks)  # fmt: skip


def _train(synthetic, how: str, protocol=PROTOCOL, arch=ARCHS[0]):
    from sweep.train.step import fit

    model, task, splits, arrays, loss = _setup(synthetic, protocol, arch)
    log: list[dict] = []
    callbacks = [_recorder(arrays, loss, log)]
    if how == "keras":
        _keras_fit(model, splits, arrays, task, protocol, 0, callbacks)
    else:
        fit(model, splits, arrays, task, protocol, 0, callbacks, steps_per_call={"epoch": None, "step": 1, "two": 2}[how])
    return log, model.get_weights()


def _assert_same(a, b):
    (log_a, weights_a), (log_b, weights_b) = a, b
    assert [r["best_epoch"] for r in log_a] == [r["best_epoch"] for r in log_b]
    for x, y in zip(log_a, log_b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5)
    for w, v in zip(weights_a, weights_b, strict=True):
        np.testing.assert_allclose(w, v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS, ids=["default", "small"])
def test_a_whole_epoch_per_call_trains_as_one_step_per_call_and_as_keras_fit(synthetic, arch):
    epoch = _train(synthetic, "epoch", arch=arch)
    assert len(epoch[0]) == 3 and epoch[0][-1]["loss"] < epoch[0][0]["loss"]  # it trained
    _assert_same(epoch, _train(synthetic, "step", arch=arch))
    _assert_same(epoch, _train(synthetic, "two", arch=arch))  # 4 steps in calls of 2
    _assert_same(epoch, _train(synthetic, "keras", arch=arch))


def test_unpadded_batches_of_a_batch_norm_model_train_as_keras_fit(synthetic):
    """Batch statistics must not see padding: the partial last batch runs in a call of its own."""
    from sweep.arch import UNetSpec

    arch = UNetSpec(filters=(8, 8, 16), batch_norm_from=2)  # BatchNormalization in two blocks
    protocol = TrainingProtocol(**{**PROTOCOL.to_dict(), "epochs": 2})
    model, *_ = _setup(synthetic, protocol, arch)
    from sweep.train.step import has_batch_norm

    assert has_batch_norm(model)
    _assert_same(_train(synthetic, "epoch", protocol, arch), _train(synthetic, "keras", protocol, arch))


def test_a_pack_trains_each_member_as_keras_fit_does(synthetic):
    import keras

    from sweep.train.step import build_model, epoch_batches, fit, make_loss, make_optimizer

    def pack_and_members(how):
        from sweep.train import task_arrays

        task, splits, arrays = task_arrays(synthetic, PROTOCOL)
        members = [build_model(TrialSpec(a, PROTOCOL, "synthetic"), arrays["x_train"].shape[1:], task, name=f"ae{i}") for i, a in enumerate(ARCHS)]
        inputs = keras.Input(arrays["x_train"].shape[1:])
        names = ["m0", "m1"]
        pack = keras.Model(inputs, {n: m(inputs) for n, m in zip(names, members)})
        loss = make_loss(PROTOCOL, arrays["y_train"])
        pack.compile(optimizer=make_optimizer(PROTOCOL), loss={n: loss for n in names})
        pack.optimizer.build(pack.trainable_variables)
        logs = []

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, l=None):
                logs.append({k: float(l[k]) for k in ("loss", "m0_loss", "m1_loss")})

        if how == "keras":
            for epoch in range(PROTOCOL.epochs):
                x, y, w = epoch_batches(splits.train, arrays["x_train"], arrays["y_train"], task, PROTOCOL, epoch)
                pack.fit(x, {n: y for n in names}, sample_weight={n: w for n in names}, batch_size=16, shuffle=False,
                         epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[Record()])  # fmt: skip
        else:
            fit(pack, splits, arrays, task, PROTOCOL, 0, [Record()], outputs=names, steps_per_call=None if how == "epoch" else 1)
        return logs, [m.get_weights() for m in members]

    epoch, step, reference = (pack_and_members(how) for how in ("epoch", "step", "keras"))
    for logs, weights in (step, reference):
        for a, b in zip(epoch[0], logs, strict=True):
            assert a == pytest.approx(b, rel=1e-5)
        for mine, theirs in zip(epoch[1], weights):
            for w, v in zip(mine, theirs, strict=True):
                np.testing.assert_allclose(w, v, rtol=1e-4, atol=1e-6)


def test_a_resumed_model_trains_on_as_if_never_stopped(synthetic, tmp_path):
    """Two epochs, a checkpoint, a fresh model restored from it, the last epoch: the same as
    three epochs in one go (whole-epoch calls), and as Keras' fit."""
    from sweep.train.checkpoint import Checkpoint
    from sweep.train.step import fit

    model, task, splits, arrays, loss = _setup(synthetic)
    log: list[dict] = []
    short = TrainingProtocol(**{**PROTOCOL.to_dict(), "epochs": 2})
    fit(model, splits, arrays, task, short, 0, [_recorder(arrays, loss, log)])
    checkpoint = Checkpoint(tmp_path, "k", 0)
    checkpoint.save(1, model, None, {})
    resumed, *_ = _setup(synthetic)
    Checkpoint.restore(checkpoint.load(), resumed)
    rest: list[dict] = []
    fit(resumed, splits, arrays, task, PROTOCOL, 2, [_recorder(arrays, loss, rest)])
    whole = _train(synthetic, "epoch")
    assert len(rest) == 1
    assert rest[0]["loss"] == pytest.approx(whole[0][2]["loss"], rel=1e-5)
    assert rest[0]["val_loss"] == pytest.approx(whole[0][2]["val_loss"], rel=1e-5)
    for w, v in zip(resumed.get_weights(), whole[1], strict=True):
        np.testing.assert_allclose(w, v, rtol=1e-4, atol=1e-6)
    _assert_same(whole, _train(synthetic, "keras"))


def test_training_data_is_placed_on_the_device_once():
    from sweep import backend

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    first = backend.resident(array)
    assert backend.resident(array) is first  # the same tensor: no second copy
    assert backend.resident(array.copy()) is not first
    np.testing.assert_array_equal(np.asarray(first), array)


def test_a_reused_compiled_model_trains_as_a_new_one(synthetic, tmp_path):
    """Trials of one shape (other seeds, another learning rate) reuse the first one's model
    and traced step with fresh values: rows and saved weights equal those of new models."""
    import json

    import keras

    from sweep.train import run_trial, trial_dir
    from sweep.train.step import forget_models, kept_models, step_key

    arch = ARCHS[1]
    specs = [TrialSpec(arch, TrainingProtocol(**{**PROTOCOL.to_dict(), **change}), "synthetic")
             for change in ({"seed": 1}, {"seed": 2}, {"seed": 2, "learning_rate": 0.003})]  # fmt: skip
    assert len({step_key(s) for s in specs}) == 1 and len({s.key for s in specs}) == 3
    assert step_key(TrialSpec(arch, TrainingProtocol(**{**PROTOCOL.to_dict(), "batch_size": 8}), "synthetic")) != step_key(specs[0])

    def rows(where, reuse: bool):
        out = []
        for spec in specs:
            if not reuse:
                forget_models()
            out.append(run_trial(spec, synthetic, tmp_path / where, checkpoint_every_s=float("inf")))
        return out

    forget_models()
    reused = rows("reused", reuse=True)
    assert kept_models() == 1  # one model served the three trials
    fresh = rows("fresh", reuse=False)
    for a, b in zip(reused, fresh, strict=True):
        assert a["status"] == b["status"] == "complete", (a["error"], b["error"])
        for h, g in zip(json.loads(a["history"]), json.loads(b["history"]), strict=True):
            assert h == pytest.approx(g, rel=1e-6)
        assert a["test_mse"] == pytest.approx(b["test_mse"], rel=1e-6)
    assert reused[0]["test_mse"] != reused[1]["test_mse"] != reused[2]["test_mse"]  # really different trials
    for spec in specs:
        saved = [keras.models.load_model(trial_dir(tmp_path / d, spec.key) / "model.keras").get_weights() for d in ("reused", "fresh")]
        for w, v in zip(*saved, strict=True):
            np.testing.assert_allclose(w, v, rtol=1e-6, atol=1e-8)
    forget_models()


def test_a_models_compiled_loop_is_kept_with_it_and_freed_with_it():
    """A model trained through `train_loop` is freed once nothing uses it (memory stays flat
    over a worker's many trials), and a reused model gets its own loop back."""
    import gc
    import weakref

    import keras

    from sweep import backend

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    loop = backend.train_loop(model)
    x = backend.resident(np.random.default_rng(0).random((8, 4, 4, 3), dtype=np.float32))
    loop(x, x, np.arange(8, dtype=np.int32).reshape(2, 4), None)
    assert backend.train_loop(model) is loop
    assert backend.train_loop(model, ["head"]) is not loop  # another head layout: another loop
    alive = weakref.ref(model)
    del model, loop
    gc.collect()
    assert alive() is None
