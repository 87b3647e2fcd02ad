"""The backbone registry: every keras.applications backbone the search can choose, as plain data."""

from __future__ import annotations

from dataclasses import dataclass

from blood_automl.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """What the trainer needs to build one backbone, and what the search needs to choose it.

    ``app`` is the ``keras.applications`` constructor, ``module`` the submodule whose
    ``preprocess_input`` the backbone expects, ``kwargs`` extra constructor arguments,
    ``weights_file`` the no-top ImageNet file Keras looks for in ``$KERAS_HOME/models/``.
    ``layers`` is the layer count of the no-top model (input layer included), ``params``
    its weight count, both at 96x96. ``cpu`` marks backbones that train in minutes on a CPU.
    """

    name: str
    app: str
    module: str
    weights_file: str
    layers: int
    params: int
    kwargs: tuple[tuple[str, float], ...] = ()
    min_size: int = 32
    cpu: bool = False
    # Keras 3 builds these with their own Rescaling/Normalization layers; preprocessing is
    # then the identity on 0-255 input and ``include_preprocessing`` must be left on.
    builtin_preprocessing: bool = False


def _mobilenet(alpha: float, layers: int, params: int) -> BackboneSpec:
    alpha_text = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
    return BackboneSpec(
        name=f"MobileNet-{alpha}",
        app="MobileNet",
        module="mobilenet",
        weights_file=f"mobilenet_{alpha_text}_224_tf_no_top.h5",
        layers=layers,
        params=params,
        kwargs=(("alpha", alpha),),
        cpu=True,
    )


def _effnet(variant: str, layers: int, params: int, cpu: bool = False) -> BackboneSpec:
    return BackboneSpec(
        name=f"EfficientNet{variant}",
        app=f"EfficientNet{variant}",
        module="efficientnet",
        weights_file=f"efficientnet{variant.lower()}_notop.h5",
        layers=layers,
        params=params,
        cpu=cpu,
        builtin_preprocessing=True,
    )


def _effnet_v2(variant: str, layers: int, params: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"EfficientNetV2{variant}",
        app=f"EfficientNetV2{variant}",
        module="efficientnet_v2",
        weights_file=f"efficientnetv2-{variant.lower()}_notop.h5",
        layers=layers,
        params=params,
        builtin_preprocessing=True,
    )


def _convnext(variant: str, layers: int, params: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"ConvNeXt{variant}",
        app=f"ConvNeXt{variant}",
        module="convnext",
        weights_file=f"convnext_{variant.lower()}_notop.h5",
        layers=layers,
        params=params,
        builtin_preprocessing=True,
    )


_SPECS: tuple[BackboneSpec, ...] = (
    _mobilenet(0.25, 86, 218_544),
    _mobilenet(0.5, 86, 829_536),
    _mobilenet(0.75, 86, 1_832_976),
    _mobilenet(1.0, 86, 3_228_864),
    BackboneSpec(
        name="MobileNetV2",
        app="MobileNetV2",
        module="mobilenet_v2",
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        layers=154,
        params=2_257_984,
        cpu=True,
    ),
    BackboneSpec(
        name="MobileNetV3Small",
        app="MobileNetV3Small",
        module="mobilenet_v3",
        weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        layers=157,
        params=939_120,
        cpu=True,
        builtin_preprocessing=True,
    ),
    BackboneSpec(
        name="MobileNetV3Large",
        app="MobileNetV3Large",
        module="mobilenet_v3",
        weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        layers=187,
        params=2_996_352,
        builtin_preprocessing=True,
    ),
    _effnet("B0", 237, 4_049_571),
    _effnet("B1", 339, 6_575_239),
    _effnet("B2", 339, 7_768_569),
    _effnet("B3", 384, 10_783_535),
    _effnet_v2("B0", 270, 5_919_312),
    _effnet_v2("B1", 334, 6_931_124),
    _effnet_v2("B2", 349, 8_769_374),
    _effnet_v2("B3", 409, 12_930_622),
    _effnet_v2("S", 513, 20_331_360),
    _effnet_v2("L", 1028, 117_746_848),
    _convnext("Tiny", 133, 27_820_128),
    _convnext("Small", 259, 49_454_688),
    _convnext("Base", 259, 87_566_464),
    _convnext("Large", 259, 196_230_336),
    BackboneSpec(
        name="ResNet50",
        app="ResNet50",
        module="resnet",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        layers=175,
        params=23_587_712,
    ),
    BackboneSpec(
        name="ResNet50V2",
        app="ResNet50V2",
        module="resnet_v2",
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        layers=190,
        params=23_564_800,
    ),
    BackboneSpec(
        name="DenseNet121",
        app="DenseNet121",
        module="densenet",
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        layers=427,
        params=7_037_504,
    ),
    BackboneSpec(
        name="InceptionV3",
        app="InceptionV3",
        module="inception_v3",
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        layers=311,
        params=21_802_784,
        min_size=75,
    ),
    BackboneSpec(
        name="VGG16",
        app="VGG16",
        module="vgg16",
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        layers=19,
        params=14_714_688,
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def get_backbone(name: str) -> BackboneSpec:
    """Return the registry entry for ``name``, or raise :class:`ConfigError` listing the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(BACKBONES)
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {known}") from None
