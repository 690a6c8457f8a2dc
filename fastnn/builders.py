"""Builders for the tutorials' two ways of describing a network.

``from_architecture``: Skalski's ``nn_architecture``, a list of dicts with
``input_dim``, ``output_dim`` and ``activation``.
``from_layer_dims``: the L-layer DNN's ``layer_dims`` such as ``[2, 4, 1]``, with
one activation for the hidden layers and one for the output layer.
"""

from fastnn.layers import Dense
from fastnn.model import Sequential

ARCH_KEYS = {"input_dim", "output_dim", "activation"}


def from_architecture(nn_architecture, init="auto", **model_options):
    """A Sequential of Dense layers from a list of layer dicts.

    ``model_options`` (loss, dtype, seed, backend) go to ``Sequential``.
    """
    if not isinstance(nn_architecture, (list, tuple)) or not nn_architecture:
        raise ValueError("nn_architecture must be a non-empty list of layer dicts")
    layers = []
    for i, spec in enumerate(nn_architecture):
        if not isinstance(spec, dict):
            raise TypeError(f"nn_architecture[{i}] must be a dict; got {type(spec).__name__}")
        missing, extra = ARCH_KEYS - {"activation"} - set(spec), set(spec) - ARCH_KEYS
        if missing or extra:
            raise ValueError(
                f"nn_architecture[{i}] has keys {sorted(spec)}; each layer needs 'input_dim' "
                f"and 'output_dim' and may have 'activation'"
            )
        if i and spec["input_dim"] != nn_architecture[i - 1]["output_dim"]:
            raise ValueError(
                f"nn_architecture[{i}] has input_dim {spec['input_dim']} but the layer before "
                f"has output_dim {nn_architecture[i - 1]['output_dim']}; they must match"
            )
        activation = spec.get("activation", "identity")
        layers.append(Dense(spec["input_dim"], spec["output_dim"], activation, init=init))
    return Sequential(layers, **model_options)


def from_layer_dims(layer_dims, hidden_activation="relu", output_activation="sigmoid",
                    init="auto", **model_options):
    """A Sequential from layer sizes, e.g. ``[2, 4, 1]`` is 2 inputs, 4 hidden, 1 output."""
    if not isinstance(layer_dims, (list, tuple)) or len(layer_dims) < 2:
        raise ValueError(
            f"layer_dims must list at least the input and output sizes, e.g. [2, 4, 1]; "
            f"got {layer_dims!r}"
        )
    last = len(layer_dims) - 2
    layers = [
        Dense(n_in, n_out, output_activation if i == last else hidden_activation, init=init)
        for i, (n_in, n_out) in enumerate(zip(layer_dims[:-1], layer_dims[1:]))
    ]
    return Sequential(layers, **model_options)
