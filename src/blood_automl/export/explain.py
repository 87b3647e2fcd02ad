"""Grad-CAM: where a model looked, from the gradient of its logit on a late feature map.

The feature map is found from the model's graph, never by a layer name: going back from the
``logits`` layer, the last tensor every path passes through (a cut) that is 4-D and at least
6x6 (:data:`MIN_SIDE`; the last one above 1x1 when the images are too small for that); when
a nested model (the ``backbone``) ends in a smaller map, the search goes on inside it. Keras 3 cannot take a nested model's inner tensor as an output of the
outer model, so the graph is split at that tensor into a front (input to feature map) and a
tail (feature map to logits and probabilities), each a chain of sub-models of the saved
layers; the tail's probabilities must match the whole model's. Ensembles
(:mod:`blood_automl.export.ensemble`) get one map per member and their mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blood_automl.errors import DataError
from blood_automl.export.ensemble import members_of

LOGITS_LAYER = "logits"
MIN_SIDE = 6
"""The smallest feature map Grad-CAM takes when the model has one this large (6x6).

A backbone's last map is small at blood-cell image sizes (3x3 for MobileNet at 96 px), and
each of its cells sees nearly the whole image; there Grad-CAM points away from what the
model uses. On 240 real PBC test images (``bench/gradcam.py``), greying out the 20% of
pixels the 3x3 map marks hottest lowered the predicted class's probability by 0.01-0.02 and
the coldest 20% by 0.71-0.72 (a random 20%: 0.50-0.52); at the last 6x6 map the hottest 20%
lowered it by 0.75-0.76 and the coldest by 0.01. At 224 px the usual last 7x7 map
qualifies; images too small for any 6x6 map use the last map larger than 1x1.
"""

MATCH_TOLERANCE = 1e-3
"""Largest difference allowed between the split graph's probabilities and the model's."""


@dataclass(frozen=True)
class CamTarget:
    """The feature map Grad-CAM weighs: ``path`` names the nested models down to ``layer``."""

    path: tuple[str, ...]
    layer: str
    shape: tuple[int, int, int]  # height, width, channels


@dataclass(frozen=True, eq=False)
class CamResult:
    """Grad-CAM of N images: maps (N, H, W) in [0, 1] and the classes they explain.

    ``member_maps`` is (members, N, H, W): one map per ensemble member (one row for a
    single model); ``maps`` is their mean. ``probabilities`` are the whole model's.
    """

    maps: np.ndarray
    member_maps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    targets: tuple[CamTarget, ...]

    @property
    def ensemble(self) -> bool:
        """Whether the maps are a mean over several members."""
        return len(self.targets) > 1


@dataclass(frozen=True, eq=False)
class _Split:
    """A model cut at its feature map: ``front`` maps images to it, ``tail`` it to logits."""

    target: CamTarget
    front: list[Any]  # sub-models applied in order
    tail: list[Any]  # sub-models applied in order; the last gives [logits, probabilities]


# -- finding the feature map ---------------------------------------------------------------


def find_target(model: Any, min_side: int = MIN_SIDE) -> CamTarget:
    """The feature map Grad-CAM uses in a single (non-ensemble) model; DataError if none."""
    return _split(model, min_side).target


def _split(model: Any, min_side: int = MIN_SIDE) -> _Split:
    import keras

    names = [layer.name for layer in model.layers]
    if LOGITS_LAYER not in names:
        raise DataError(
            f"model {model.name!r} has no '{LOGITS_LAYER}' layer (the class scores before "
            f"softmax), so Grad-CAM cannot explain it; use a model exported by "
            f"`blood-automl refit-best`"
        )
    logits = _output_of(model.get_layer(LOGITS_LAYER))
    ends = [logits, model.outputs[0]]
    found = _search(model, logits, (), ends, keras, min_side)
    if found is None:  # small images: the last map that is larger than 1x1 at all
        found = _search(model, logits, (), ends, keras, 2)
    if found is None:
        raise DataError(
            f"model {model.name!r} has no convolutional feature map larger than 1x1 before "
            f"its '{LOGITS_LAYER}' layer, so Grad-CAM has nothing to show; use a model "
            f"exported by `blood-automl refit-best` at a larger image size"
        )
    return found


def _search(
    model: Any, end: Any, path: tuple[str, ...], ends: list[Any], keras: Any, min_side: int
) -> _Split | None:
    """Look back from ``end`` in ``model``'s graph for the last usable 4-D cut.

    Usable: a map of known size, at least ``min_side`` pixels on its longer side, with more
    than 3 channels, not a zero-padding output.
    """
    inputs = model.inputs[0]
    for op in reversed(_cuts(model, end)):
        tensor = _output_of(op)
        if len(tensor.shape) != 4 or isinstance(op, keras.layers.InputLayer):
            continue
        if any(d is None for d in tensor.shape[1:]):
            continue  # a map of unknown size cannot be weighed against the image
        height, width, channels = (int(d) for d in tensor.shape[1:])
        if max(height, width) >= min_side and not _is_padding(op, keras) and channels > 3:
            target = CamTarget((*path, model.name), op.name, (height, width, channels))
            return _Split(target, [keras.Model(inputs, tensor)], [keras.Model(tensor, ends)])
        if isinstance(op, keras.Model) and not isinstance(op, keras.Sequential):
            inner = _search(
                op, op.outputs[0], (*path, model.name), [op.outputs[0]], keras, min_side
            )
            if inner is None:
                continue
            fed = _input_of(op)
            front = [] if fed is inputs else [keras.Model(inputs, fed)]
            return _Split(
                inner.target,
                front + inner.front,
                [*inner.tail, keras.Model(tensor, ends)],
            )
    return None


def _is_padding(op: Any, keras: Any) -> bool:
    return isinstance(op, keras.layers.ZeroPadding2D)


def _output_of(op: Any) -> Any:
    from blood_automl.trainer.keras_private import first_call

    found = first_call(op)[1]
    if len(found) != 1:
        raise DataError(f"layer {op.name!r} is gives {len(found)} tensors; Grad-CAM needs one")
    return found[0]


def _input_of(op: Any) -> Any:
    from blood_automl.trainer.keras_private import first_call

    found = first_call(op)[0]
    if len(found) != 1:
        raise DataError(f"nested model {op.name!r} takes {len(found)} inputs; Grad-CAM needs 1")
    return found[0]


def _cuts(model: Any, end: Any) -> list[Any]:
    """Operations up to ``end``'s whose output is the only tensor alive after them."""
    from blood_automl.trainer.keras_private import first_call, operations

    ops = operations(model)
    calls = [first_call(op) for op in ops]
    producer: dict[int, int] = {}
    for i, (_, outs) in enumerate(calls):
        for t in outs:
            producer[id(t)] = i
    last = producer[id(end)]
    ops = ops[: last + 1]
    last_use = list(range(len(ops)))
    last_use[last] = last + 1  # the end tensor is used after the graph
    for i, (ins, _) in enumerate(calls[: last + 1]):
        for t in ins:
            p = producer.get(id(t))
            if p is not None and p < i:
                last_use[p] = max(last_use[p], i)
    starts = [0] * (len(ops) + 2)  # live[i]: tensors made at or before i, used after i
    for p, used in enumerate(last_use):
        if used > p:
            starts[p] += 1
            starts[used] -= 1
    cuts = []
    live = 0
    for i, op in enumerate(ops):
        live += starts[i]
        if live == 1 and last_use[i] > i and len(calls[i][1]) == 1:
            cuts.append(op)
    return cuts


# -- the maps ------------------------------------------------------------------------------


def gradcam(
    model: Any,
    images: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    batch_size: int = 32,
    min_side: int = MIN_SIDE,
) -> CamResult:
    """Grad-CAM maps of ``images`` (N, H, W, 3) for ``classes`` (default: the predicted ones).

    Each map is ReLU(sum over channels of the mean gradient of the class logit times the
    feature map), upsampled to the image size and divided by its maximum. An ensemble gets
    one map per member (each for the ensemble's class) and their mean.
    """
    parts = list(
        gradcam_batches(model, images, classes=classes, batch_size=batch_size, min_side=min_side)
    )
    if not parts:
        pixels = np.asarray(images, dtype=np.float32)
        splits = [_split(member, min_side) for member in members_of(model)]
        none = np.zeros((len(splits), 0, *pixels.shape[1:3]), dtype=np.float32)
        return CamResult(
            none[0],
            none,
            np.zeros(0, dtype=np.int64),
            _probabilities(model, pixels, 1),
            tuple(s.target for s in splits),
        )
    member_maps = np.concatenate([p.member_maps for p in parts], axis=1)
    return CamResult(
        maps=member_maps.mean(axis=0),
        member_maps=member_maps,
        classes=np.concatenate([p.classes for p in parts]),
        probabilities=np.concatenate([p.probabilities for p in parts]),
        targets=parts[0].targets,
    )


def gradcam_batches(
    model: Any,
    images: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    batch_size: int = 32,
    min_side: int = MIN_SIDE,
) -> Iterator[CamResult]:
    """:func:`gradcam` a batch at a time (the graph is split once): one result per batch."""
    members = members_of(model)
    splits = [_split(member, min_side) for member in members]
    targets = tuple(s.target for s in splits)
    for start in range(0, len(images), batch_size):
        pixels = np.asarray(images[start : start + batch_size], dtype=np.float32)
        probs = _probabilities(model, pixels, batch_size)
        chosen = (
            probs.argmax(axis=1)
            if classes is None
            else np.asarray(classes[start : start + batch_size], dtype=np.int64)
        )
        member_maps = np.stack(
            [
                _batch_maps(member, split, pixels, chosen)
                for member, split in zip(members, splits, strict=True)
            ]
        )
        yield CamResult(member_maps.mean(axis=0), member_maps, chosen, probs, targets)


def _empty(pixels: np.ndarray) -> np.ndarray:
    return np.zeros((0, *pixels.shape[1:3]), dtype=np.float32)


def _probabilities(model: Any, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [
        model_output(model, pixels[i : i + batch_size])
        for i in range(0, pixels.shape[0], batch_size)
    ]
    if not parts:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.concatenate(parts)


def model_output(model: Any, pixels: np.ndarray) -> np.ndarray:
    """The model's output on one batch, called directly: batches of any size, no retracing.

    The images go in the structure the model was built with (a saved model takes a list of
    its one input), so Keras has nothing to warn about.
    """
    given = [pixels] if isinstance(model.input, list) else pixels
    return np.asarray(model(given, training=False), dtype=np.float32)


def _chain(models: Sequence[Any], x: Any) -> Any:
    for part in models:
        x = part(x, training=False)
    return x


def _batch_maps(member: Any, split: _Split, pixels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    x = tf.convert_to_tensor(pixels)
    fmap = tf.cast(_chain(split.front, x), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        logits, probs = _chain(split.tail, fmap)
        score = tf.gather(tf.cast(logits, tf.float32), classes, axis=1, batch_dims=1)
    grads = tape.gradient(score, fmap)
    _check_match(member, split, np.asarray(probs, dtype=np.float32), pixels)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, pixels.shape[1:3], method="bilinear")[..., 0].numpy()
    return _normalise(cam)


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero)."""
    top = cam.reshape(cam.shape[0], -1).max(axis=1) if cam.size else np.zeros(0)
    scale = np.where(top > 0, top, 1.0)[:, None, None]
    return np.clip(cam / scale, 0.0, 1.0).astype(np.float32)


def _check_match(member: Any, split: _Split, probs: np.ndarray, pixels: np.ndarray) -> None:
    whole = model_output(member, pixels)
    gap = float(np.abs(whole - probs).max()) if probs.size else 0.0
    if gap > MATCH_TOLERANCE:
        raise DataError(
            f"model {member.name!r} cut at {split.target.layer!r} gives probabilities "
            f"{gap:.3g} away from the whole model's, so its Grad-CAM would explain another "
            f"model; use a model exported by `blood-automl refit-best`"
        )


def describe(result: CamResult) -> str:
    """One phrase for titles: which maps are shown."""
    if not result.ensemble:
        return f"Grad-CAM at {result.targets[0].layer}"
    return f"Grad-CAM: mean of the {len(result.targets)} ensemble members' maps"
