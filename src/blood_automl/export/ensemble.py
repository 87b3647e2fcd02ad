"""The ensemble's shape: member models joined by a soft vote, and how to find the members again.

An exported ensemble is one Keras model: its input (raw RGB pixels, as every exported model
takes them) goes to each member, a whole model nested as a layer named ``member_<i>``, and
the members' class probabilities are averaged by a built-in ``Average`` layer named
``soft_vote``. Only built-in layers are used, so it saves and loads in Keras safe mode like a
single model. A single model is an ensemble of one for :func:`members_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MEMBER_PREFIX = "member_"
SOFT_VOTE_LAYER = "soft_vote"


def member_name(index: int) -> str:
    """The layer name of member ``index`` inside an ensemble."""
    return f"{MEMBER_PREFIX}{index}"


def soft_vote(members: Sequence[Any], name: str = "blood_automl_ensemble") -> Any:
    """One model whose output is the mean of ``members``' class probabilities.

    Every member must take the same input shape and give the same number of classes. The
    members are renamed ``member_0`` ... in the given order (the best first).
    """
    import keras

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, not {len(members)}")
    shapes = {tuple(m.inputs[0].shape[1:]) for m in members}
    classes = {int(m.outputs[0].shape[-1]) for m in members}
    if len(shapes) != 1 or len(classes) != 1:
        raise ValueError(
            f"ensemble members differ in input shape {sorted(shapes)} or classes {sorted(classes)}"
        )
    inputs = keras.Input(shape=members[0].inputs[0].shape[1:], name="image", dtype="float32")
    outputs = []
    for i, member in enumerate(members):
        member.name = member_name(i)
        outputs.append(member(inputs))
    vote = keras.layers.Average(name=SOFT_VOTE_LAYER, dtype="float32")(outputs)
    return keras.Model(inputs, vote, name=name)


def is_ensemble(model: Any) -> bool:
    """Whether ``model`` was made by :func:`soft_vote`."""
    return any(layer.name == SOFT_VOTE_LAYER for layer in model.layers)


def members_of(model: Any) -> list[Any]:
    """The member models of an ensemble, in order; ``[model]`` for a single model."""
    if not is_ensemble(model):
        return [model]
    found = [layer for layer in model.layers if layer.name.startswith(MEMBER_PREFIX)]
    return sorted(found, key=lambda layer: int(layer.name[len(MEMBER_PREFIX) :]))
