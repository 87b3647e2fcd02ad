"""Model building: preprocessing inside the model, a keras.applications backbone, the searched head."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from blood_automl.errors import ConfigError, WeightsFileError
from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.registry import BackboneSpec, get_backbone
from blood_automl.trainer.keras_private import keras_home, operations, tensors_in, tensors_out

# Input scaling each backbone family was trained with (keras.applications' preprocess_input).
_MODE = {
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "resnet": "caffe",
    "vgg16": "caffe",
    "densenet": "torch",
}
# Batch-norm momentum for backbones trained from scratch: the keras.applications defaults
# (0.99-0.999) lag so far behind the weights that validation sits at the majority class.
SCRATCH_BN_MOMENTUM = 0.9
# Batch-norm momentum of pretrained layers that adapt to the data (batch_norm = "adapt"):
# a search trains tens to hundreds of steps, and at 0.99-0.999 the moving statistics would
# still be mostly ImageNet's when the model is evaluated.
ADAPT_BN_MOMENTUM = 0.9
_NORM_LAYERS = (keras.layers.BatchNormalization,)


def weights_mode(weights: str | Path | None) -> str:
    """Normalise a ``--weights`` value: ``"imagenet"``, ``"none"``, or a directory path."""
    if weights is None or str(weights).lower() == "none":
        return "none"
    if str(weights).lower() == "imagenet":
        return "imagenet"
    return str(Path(weights).expanduser())


def keras_cache_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``)."""
    return Path(keras_home()).expanduser() / "models"


# keras.applications backbones whose ImageNet file depends on the input size: the sizes
# with their own file (others load the 224 px one).
_SIZED_WEIGHTS = {
    "MobileNet": (128, 160, 192, 224),
    "MobileNetV2": (96, 128, 160, 192, 224),
}


def weights_file(spec: BackboneSpec, image_size: int) -> str:
    """The name of the no-top ImageNet file Keras loads for ``spec`` at ``image_size``."""
    if image_size in _SIZED_WEIGHTS.get(spec.app, ()):
        return spec.weights_file.replace("_224_", f"_{image_size}_")
    return spec.weights_file


def _weights_argument(spec: BackboneSpec, weights: str, image_size: int) -> str | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    name = weights_file(spec, image_size)
    path = Path(weights) / name
    if not path.is_file():
        raise WeightsFileError(
            f"weights file for {spec.name} not found: {path}; put {name} "
            f"into {weights} or use --weights imagenet / --weights none"
        )
    return str(path)


def unreadable_weights(path: Path) -> str | None:
    """Why the Keras weights file ``path`` cannot be loaded, or None when it can.

    Opens it as HDF5 (what Keras's ``load_weights`` reads), checks that it lists its
    layers as Keras writes them, and that every array lies within the file (a truncated
    copy fails here). Reads no weights, so a space of large backbones is checked in
    moments.
    """
    import h5py

    try:
        size = path.stat().st_size
        with h5py.File(path, "r") as f:
            if "layer_names" not in f.attrs:
                return "it is an HDF5 file but not Keras weights (no layer_names)"
            ends: list[int] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and obj.id.get_storage_size():
                    offset = obj.id.get_offset()
                    ends.append((offset or 0) + obj.id.get_storage_size())

            f.visititems(visit)
    except OSError as exc:
        return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    if not ends:
        return "it holds no weights"
    if max(ends) > size:
        return f"it is truncated ({size} bytes, its arrays need {max(ends)})"
    return None


def check_weights(
    backbones: Iterable[str], weights: str | Path | None, image_size: int = 96
) -> list[str]:
    """Return one line per backbone whose ImageNet weights cannot be had (empty when all can).

    Files are named as Keras names them for ``image_size`` (:func:`weights_file`). With a
    folder, each backbone's file must be there and load (:func:`unreadable_weights`).
    With ``imagenet`` a file already in the Keras cache must load; a missing one is
    downloaded by building the backbone once with ``weights="imagenet"`` (Keras's own
    download, with its hash check). Nothing is trained.
    """
    mode = weights_mode(weights)
    if mode == "none":
        return []
    problems = []
    for name in dict.fromkeys(backbones):
        spec = get_backbone(name)
        name = weights_file(spec, image_size)
        folder = keras_cache_dir() if mode == "imagenet" else Path(mode)
        path = folder / name
        if path.is_file():
            reason = unreadable_weights(path)
            if reason is not None:
                problems.append(f"{spec.name}: {path} cannot be loaded ({reason})")
            continue
        if mode != "imagenet":
            problems.append(f"{spec.name}: {name} is not in {mode}")
            continue
        try:
            build_backbone(spec, max(image_size, spec.min_size), "imagenet")
        except Exception as exc:  # no network, refused download, bad hash
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            problems.append(
                f"{spec.name}: {name} is not in {keras_cache_dir()} "
                f"and could not be downloaded ({reason})"
            )
        finally:
            keras.backend.clear_session()
    return problems


def build_backbone(spec: BackboneSpec, image_size: int, weights: str) -> keras.Model:
    """The no-top ``keras.applications`` backbone for ``spec``; from scratch when weights is ``none``."""
    if image_size < spec.min_size:
        raise ConfigError(
            f"{spec.name} needs images of at least {spec.min_size}x{spec.min_size}, "
            f"but the image size is {image_size}; choose another backbone or --image-size"
        )
    kwargs: dict[str, Any] = dict(spec.kwargs)
    if spec.app.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = True
    constructor = getattr(keras.applications, spec.app)
    source = _weights_argument(spec, weights, image_size)
    backbone = constructor(
        include_top=False,
        weights="imagenet" if source == "imagenet" else None,
        input_shape=(image_size, image_size, 3),
        **kwargs,
    )
    if source is not None and source != "imagenet":
        _load_weights_file(backbone, spec, Path(source))
    if weights == "none":
        for layer in backbone.layers:
            if isinstance(layer, _NORM_LAYERS):
                layer.momentum = SCRATCH_BN_MOMENTUM
    return backbone


def _load_weights_file(backbone: keras.Model, spec: BackboneSpec, path: Path) -> None:
    """Load ``path`` into ``backbone`` as ``keras.applications`` would; a bad file is named."""
    try:
        backbone.load_weights(str(path))
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsFileError(
            f"weights file {path} cannot be loaded into {spec.name} ({reason}); put the "
            f"Keras ImageNet file {path.name} there, or use --weights imagenet / none"
        ) from None


def preprocessing_layers(spec: BackboneSpec) -> list[keras.layers.Layer]:
    """Standard Keras layers that do what the backbone's ``preprocess_input`` does to 0-255 RGB.

    Plain layers (no Lambda), so an exported model loads in Keras safe mode and takes raw
    uint8 images.
    """
    if spec.builtin_preprocessing:
        return []
    mode = _MODE[spec.module]
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_pm1")]
    if mode == "torch":
        mean = np.array([0.485, 0.456, 0.406])
        std = np.array([0.229, 0.224, 0.225])
        return [
            keras.layers.Rescaling(1.0 / 255.0, name="scale_to_01"),
            keras.layers.Normalization(
                axis=-1, mean=mean.tolist(), variance=(std**2).tolist(), name="imagenet_norm"
            ),
        ]
    # caffe: RGB -> BGR and subtract the ImageNet channel means, as a fixed 3x3 linear map.
    perm = np.eye(3, dtype="float32")[::-1]
    bias = -np.array([103.939, 116.779, 123.68], dtype="float32")
    layer = keras.layers.Dense(3, name="rgb_to_bgr_centered", trainable=False)
    layer.build((None, 3))
    layer.set_weights([perm, bias])
    return [layer]


def _regularizer(config: TrialConfig) -> keras.regularizers.Regularizer | None:
    if config.l1 <= 0 and config.l2 <= 0:
        return None
    return keras.regularizers.L1L2(l1=config.l1, l2=config.l2)


def _squeeze_excite(x: Any, activation: str, ratio: int = 16) -> Any:
    channels = int(x.shape[-1])
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)
    s = keras.layers.Dense(max(8, channels // ratio), activation=activation, name="se_reduce")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name="se_expand")(s)
    return keras.layers.Multiply(name="se_excite")([x, s])


def build_model(
    config: TrialConfig,
    num_classes: int,
    *,
    image_size: int = 96,
    weights: str | Path | None = "imagenet",
) -> tuple[keras.Model, keras.Model]:
    """Build ``(model, backbone)``: raw 0-255 RGB in, float32 class probabilities out.

    The backbone is a nested model named ``backbone`` so phases can freeze and unfreeze it.
    SELU heads use LeCun-normal initialisation and AlphaDropout and no batch norm, which
    would undo SELU's self-normalisation.
    """
    spec = get_backbone(config.backbone)
    mode = weights_mode(weights)
    backbone = build_backbone(spec, image_size, mode)
    backbone.name = "backbone"

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image", dtype="float32")
    x = inputs
    for layer in preprocessing_layers(spec):
        x = layer(x)
    x = backbone(x)
    if config.se_block:
        x = _squeeze_excite(x, config.activation)
    if config.pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)

    selu = config.activation == "selu"
    init = (
        "lecun_normal"
        if selu
        else ("he_normal" if config.activation == "relu" else "glorot_uniform")
    )
    for i, units in enumerate(config.dense_units[: config.dense_layers]):
        x = keras.layers.Dense(
            int(units),
            kernel_initializer=init,
            kernel_regularizer=_regularizer(config),
            use_bias=not (config.head_batch_norm and not selu),
            name=f"head_dense_{i}",
        )(x)
        if config.head_batch_norm and not selu:
            x = keras.layers.BatchNormalization(name=f"head_bn_{i}")(x)
        x = keras.layers.Activation(config.activation, name=f"head_act_{i}")(x)
        if config.dropout > 0:
            drop = keras.layers.AlphaDropout if selu else keras.layers.Dropout
            x = drop(config.dropout, name=f"head_dropout_{i}")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=_regularizer(config), name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"blood_automl_{spec.name.replace('.', '_')}")
    return model, backbone


def _is_norm(layer: Any) -> bool:
    return isinstance(layer, (*_NORM_LAYERS, keras.layers.LayerNormalization))


def block_starts(backbone: keras.Model) -> list[int]:
    """Indices ``i`` of ``backbone.layers`` where a whole block begins.

    A block begins where cutting the graph before layer ``i`` severs exactly one tensor:
    no skip connection or concatenation crosses the cut. The graph is read from all of
    the model's operations (residual additions written as ``ops`` are not layers), in
    topological order. Of several cuts that would train the same weighted layers, the
    first is kept.
    """
    ops = operations(backbone)
    producer: dict[int, int] = {}
    for i, op in enumerate(ops):
        for t in tensors_out(op):
            producer[id(t)] = i
    last_use = list(range(len(ops)))
    for i, op in enumerate(ops):
        for t in tensors_in(op):
            p = producer.get(id(t))
            if p is not None and p < i:
                last_use[p] = max(last_use[p], i)
    # live[i]: tensors produced before operation i and still used at or after it.
    diff = [0] * (len(ops) + 2)
    for p, last in enumerate(last_use):
        if last > p:
            diff[p + 1] += 1
            diff[last + 1] -= 1
    layer_index = {id(layer): i for i, layer in enumerate(backbone.layers)}
    cuts: list[int] = []
    live = 0
    for i, op in enumerate(ops):
        live += diff[i]
        if i > 0 and live == 1 and id(op) in layer_index:
            cuts.append(layer_index[id(op)])
    # Keep the first cut of each run that leads to the same first trainable layer.
    layers = backbone.layers
    starts: list[int] = []
    seen: set[int] = set()
    for cut in cuts:
        first = next(
            (j for j in range(cut, len(layers)) if layers[j].weights and not _is_norm(layers[j])),
            len(layers),
        )
        if first < len(layers) and first not in seen:
            seen.add(first)
            starts.append(cut)
    return starts


def unfreeze_index(backbone: keras.Model, fraction: float) -> int:
    """The first layer index phase 2 trains: ``fraction`` of the layers from the top, to a block start.

    Returns ``len(backbone.layers)`` (nothing unfrozen) when ``fraction`` is 0.
    """
    n = len(backbone.layers)
    if fraction <= 0:
        return n
    target = n - round(fraction * (n - 1))
    starts = block_starts(backbone) or list(range(1, n))
    return min(starts, key=lambda s: (abs(s - target), s))


def set_trainable(
    backbone: keras.Model, start: int, *, scratch: bool = False, adapt_bn: bool = False
) -> int:
    """Train ``backbone.layers[start:]`` and freeze the rest; batch norm frozen unless it adapts.

    Frozen batch norm is set ``trainable=False`` (in Keras 3 that also runs it in
    inference mode); ``training=False`` at call time is not enough under ``fit``. With
    ``adapt_bn`` the batch norm of the trained layers trains too: batch statistics in
    training, moving statistics updated at :data:`ADAPT_BN_MOMENTUM`. From scratch
    (``scratch=True``) every layer trains, batch norm included. Returns the number of
    layers left trainable.
    """
    backbone.trainable = True
    count = 0
    for i, layer in enumerate(backbone.layers):
        norm = isinstance(layer, _NORM_LAYERS)
        trainable = scratch or (i >= start and (adapt_bn or not norm))
        layer.trainable = trainable
        if trainable and norm and adapt_bn and not scratch:
            layer.momentum = ADAPT_BN_MOMENTUM
        count += int(trainable and bool(layer.weights))
    return count
