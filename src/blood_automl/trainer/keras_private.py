"""Keras internals that blood-automl relies on, each behind one function.

Keras 3 documents neither a model's operation graph nor where it keeps downloaded files;
``tests/test_private_apis.py`` exercises each function against the installed Keras, so an
upgrade that moves one of them fails one test rather than a search.
"""

from __future__ import annotations

import os
from typing import Any

import keras


def keras_home() -> str:
    """The folder Keras keeps its files in (``$KERAS_HOME``, else ``~/.keras``).

    Read with ``keras.src.backend.config.keras_home``, a private accessor: Keras falls back
    to a temporary folder when ``~/.keras`` is not writable, and only it knows which.
    Without it (a Keras that moved it), the documented default is used.
    """
    try:
        from keras.src.backend.config import keras_home as private_home
    except ImportError:  # pragma: no cover - a Keras without the accessor
        return os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    return str(private_home())


def operations(model: keras.Model) -> list[Any]:
    """Every operation of a functional model in topological order: layers and ``ops`` calls.

    ``Functional.operations`` is undocumented; ``model.layers`` leaves out operations
    written as ``keras.ops`` (the residual additions of some backbones).
    """
    return list(model.operations)


def tensors_in(op: Any) -> list[Any]:
    """The symbolic tensors an operation of a functional model was called on.

    Read from the operation's private ``_inbound_nodes`` (one per call) and each node's
    ``input_tensors``.
    """
    return [t for node in op._inbound_nodes for t in node.input_tensors]


def tensors_out(op: Any) -> list[Any]:
    """The symbolic tensors an operation of a functional model produced.

    Read from the operation's private ``_inbound_nodes`` and each node's ``output_tensors``.
    """
    return [t for node in op._inbound_nodes for t in node.output_tensors]


def first_call(op: Any) -> tuple[list[Any], list[Any]]:
    """The input and output tensors of an operation's first call: the graph it was built in.

    A model cut from an intermediate tensor (``keras.Model(tensor, ...)``) clones the nodes
    it spans and appends them to the operations' private ``_inbound_nodes``; the first
    node stays the original graph's.
    """
    node = op._inbound_nodes[0]
    return list(node.input_tensors), list(node.output_tensors)
