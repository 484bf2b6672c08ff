r"""ONNX ``GRU``, ``LSTM`` and ``RNN`` nodes as verify candidates: built in memory with ``onnx.helper``, run
by onnxruntime's CPU provider or by ``onnx.reference.ReferenceEvaluator``.

::

    from refrnn.verify import verify
    from refrnn.verify.adapters_onnx import onnx_op

    report = verify(onnx_op("GRU", runtime="onnxruntime", dtype="float32"))

The layout ``onnx`` hands a candidate one node's tensors and attributes (:func:`refrnn.layouts.onnx.to_onnx`:
``W``, ``R``, ``B``, ``P`` and ``attributes`` with ``hidden_size``, ``direction``,
``linear_before_reset``, ``activations``) and compares what the operator returns, ``Y`` and ``Y_h``
(and ``Y_c``), in the operator's own shapes. How each spec convention maps onto the reference:

=======================  ===============================================================================
``direction``            ``forward``: a refrnn cell; ``bidirectional``: a :class:`~refrnn.layers.bidirectional.BiLayer`;
                         ``reverse``: with ``split_directions=True`` a bidirectional problem is run as two
                         nodes, ``direction="forward"`` on the forward weights and ``direction="reverse"``
                         on the reverse ones, concatenated on the ``num_directions`` axis -- a reverse-only
                         node checked against the BiLayer's reverse half, which is the reference's reverse
``sequence_lens``        refrnn's ``lengths`` (:mod:`refrnn.layers.lengths`): Y is 0 past a length, Y_h the state
                         at it; the reverse direction starts at each sequence's last valid step
``linear_before_reset``  0: GRU ``reset="before"``, 1: ``reset="after"`` (both are drawn)
``initial_h/initial_c``  present, or omitted (zeros): the ``no_initial_state`` convention
``layout``               0: X (T, B, D), Y (T, ndir, B, H), Y_h (ndir, B, H); 1 (``batch_first``):
                         X (B, T, D), Y (B, T, ndir, H), Y_h and initial_h (B, ndir, H)
``activations``          RNN: ``Tanh`` or ``Relu`` per direction (refrnn's ``activation``); GRU and LSTM:
                         the defaults only
``P``                    LSTM peepholes ``[p_i, p_o, p_f]`` (refrnn's ``w_ic, w_oc, w_fc``; ``o`` peeps at
                         the new ``C_t``, as in :mod:`refrnn.cells.lstm`)
=======================  ===============================================================================

Refused, with the reason in the report: non-default GRU/LSTM ``activations`` and ``activation_alpha/beta``,
``clip`` and ``input_forget`` (the reference implements none of them, so a check of them would check
nothing), the LSTM projection (ONNX has none), unbatched input (the operators take a rank-3 X), several
layers (an ONNX node is one layer; stacking is the exporter's graph, not the operator) and gradients
(ONNX defines none: ``grads = False``). float32 and float64 are both drawn; a runtime that has no kernel
for one fails with its own error, which the report shows.
"""

from __future__ import annotations

import numpy as np

from ..layouts import onnx as onnx_layout
from ..layouts import torch as torch_layout
from .adapters import LAYOUTS, Layout, _np, _time_major_to, _unpack, conventions_of, register_layout
from .strategies import Case, CellConfig

OPS = {"GRU": "gru", "LSTM": "lstm", "RNN": "rnn"}
RUNTIMES = ("onnxruntime", "reference")
IR_VERSION = 7  # the IR version of opset 14
OPSET = 14  # the opset that added ``layout``; GRU, LSTM and RNN have not changed since (22 only adds bfloat16)

REFUSED = {
    "clip": "refrnn's cells have no cell clipping, so a check of clip would compare clipped against unclipped",
    "input_forget": "refrnn's LSTM has no coupled input-forget gate",
    "activations": "refrnn's GRU and LSTM have sigmoid/tanh only (RNN: Tanh and Relu are checked)",
    "activation_alpha": "only parameterised activations use it, and refrnn implements none",
    "projection": "the ONNX LSTM has no projection",
}


class OnnxLayout(Layout):
    """One ONNX ``GRU``/``LSTM``/``RNN`` node: see the module docstring for what each name holds."""

    name = "onnx"
    CONVENTIONS, NOT_EXPRESSIBLE = conventions_of(name)

    def unsupported(self, config: CellConfig) -> str | None:
        one = "an ONNX GRU/LSTM/RNN node is one layer (num_layers has no attribute: stacking is the graph's)"
        if why := self.one_layer(config, one, OPS.values(), "a GRU, LSTM or RNN layer"):
            return why
        if config.layers[0].opts.get("proj_size"):
            return REFUSED["projection"]
        return super().unsupported(config)

    def options(self, cell: str) -> dict:
        return {"proj": (False,)} if cell == "lstm" else {}

    def _is_lstm(self, case: Case) -> bool:
        return case.config.layers[0].cell == "lstm"

    def state(self, case: Case, states):
        """refrnn's one-layer state -> the operator's (ndir, B, H) (layout 0) or (B, ndir, H) (layout 1)."""
        if states is None:
            return None
        stacked = torch_layout.state_to_torch(case.layers, states)
        arrays = stacked if self._is_lstm(case) else (stacked,)
        if case.config.batch_first:
            arrays = tuple(np.swapaxes(a, 0, 1) for a in arrays)
        return arrays if self._is_lstm(case) else arrays[0]

    def arguments(self, case: Case) -> tuple:
        tensors, attributes = onnx_layout.to_onnx(case.layers[0])
        weights = {**tensors, "attributes": attributes}
        args = (weights, _time_major_to(case, case.x), self.state(case, case.state0))
        if case.dy is not None:  # never: ONNX has no gradients (candidates set grads = False)
            args += (case.dy, case.dstate_T)
        return args

    def _names(self, case: Case) -> tuple[str, ...]:
        return ("Y_h", "Y_c") if self._is_lstm(case) else ("Y_h",)

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        T, B = case.config.T, case.config.B
        ndir = 2 if case.config.bidirectional else 1
        Y = y.reshape(T, B, ndir, -1)  # [forward; reverse] on the feature axis -> its own axis
        Y = Y.transpose(1, 0, 2, 3) if case.config.batch_first else Y.transpose(0, 2, 1, 3)
        out = {"Y": Y}
        state = self.state(case, states_T)
        out.update(zip(self._names(case), state if self._is_lstm(case) else (state,)))
        return out

    def candidate_outputs(self, case, result, grads: bool):
        Y, state_T, _ = _unpack(result, False)
        out = {"Y": _np("Y", Y)}
        arrays = state_T if self._is_lstm(case) else (state_T,)
        if self._is_lstm(case) and (not isinstance(state_T, (tuple, list)) or len(state_T) != 2):
            raise TypeError(f"candidate: the LSTM state must be the pair (Y_h, Y_c), got {type(state_T).__name__}")
        out.update({n: _np(n, a) for n, a in zip(self._names(case), arrays)})
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        where = ", ".join(map(str, idx))
        bf = case.config.batch_first
        if name == "Y" and len(idx) == 4:
            t, b, d, unit = (idx[1], idx[0], idx[2], idx[3]) if bf else (idx[0], idx[2], idx[1], idx[3])
            return f"Y[{where}] (step {t}, batch row {b}, {'reverse' if d else 'forward'} direction, unit {unit})"
        if len(idx) == 3:
            b, d, unit = (idx[0], idx[1], idx[2]) if bf else (idx[1], idx[0], idx[2])
            return f"{name}[{where}] (batch row {b}, {'reverse' if d else 'forward'} direction, unit {unit})"
        return super().describe(case, name, index)


if "onnx" not in LAYOUTS:
    register_layout(OnnxLayout())


def onnx_version(runtime: str) -> str:
    """The installed version of ``runtime``'s package (raises ImportError when it is missing)."""
    if runtime == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    import onnx

    return onnx.__version__


class OnnxOp:
    """A candidate that runs one ONNX ``op`` node ("GRU", "LSTM" or "RNN") on ``runtime``
    ("onnxruntime": the CPU provider; "reference": ``onnx.reference.ReferenceEvaluator``) in ``dtype``.

    ``split_directions=True`` runs a bidirectional problem as a ``direction="forward"`` and a
    ``direction="reverse"`` node (see the module docstring), which is how ``reverse`` is checked.
    ``attributes`` are extra node attributes, set verbatim on every node (a way to plant a wrong
    conversion, or to see what a runtime does with one the reference cannot express).
    """

    layout = "onnx"
    grads = False
    max_layers = 1

    def __init__(self, op: str = "GRU", *, runtime: str = "onnxruntime", dtype="float64", split_directions: bool = False,
                 attributes: dict | None = None, name: str | None = None):
        if op not in OPS:
            raise ValueError(f"op: expected one of {', '.join(OPS)}, got {op!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        if attributes is not None and not isinstance(attributes, dict):
            raise TypeError(f"attributes: expected a dict of ONNX attribute names to values, got {type(attributes).__name__}")
        self.op, self.runtime, self.split_directions = op, runtime, bool(split_directions)
        self.attributes = dict(attributes or {})
        self.cell = OPS[op]
        self.conventions = tuple(LAYOUTS["onnx"].CONVENTIONS)
        where = "onnxruntime" if runtime == "onnxruntime" else "onnx.reference"
        self.name = name or f"{where} {op}{' (reverse as its own node)' if split_directions else ''}"

    def __repr__(self) -> str:
        return f"OnnxOp({self.op!r}, runtime={self.runtime!r}, dtype={self.dtype.name!r}, split_directions={self.split_directions})"

    def _run(self, tensors: dict, attributes: dict, x, state0, lengths, batch_first: bool):
        import onnx
        from onnx import helper

        elem = onnx.TensorProto.FLOAT if self.dtype == np.float32 else onnx.TensorProto.DOUBLE
        feeds = {"X": x, "W": tensors["W"], "R": tensors["R"], "B": tensors["B"]}
        names = ["X", "W", "R", "B", "", ""]
        if lengths is not None:
            feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
            names[4] = "sequence_lens"
        is_lstm = self.op == "LSTM"
        if state0 is not None:
            h0, c0 = state0 if is_lstm else (state0, None)
            feeds["initial_h"], names[5] = h0, "initial_h"
            if c0 is not None:
                feeds["initial_c"] = c0
                names.append("initial_c")
        if "P" in tensors:
            names += [""] * (7 - len(names)) + ["P"]
            feeds["P"] = tensors["P"]
        while names and names[-1] == "":
            names.pop()
        outputs = ["Y", "Y_h"] + (["Y_c"] if is_lstm else [])
        attrs = dict(attributes)
        if batch_first:
            attrs["layout"] = 1
        attrs.update(self.attributes)
        node = helper.make_node(self.op, names, outputs, **attrs)
        feeds = {k: (v if k == "sequence_lens" else np.ascontiguousarray(v, dtype=self.dtype)) for k, v in feeds.items()}

        def info(name, a):
            kind = onnx.TensorProto.INT32 if name == "sequence_lens" else elem
            return helper.make_tensor_value_info(name, kind, list(a.shape))

        graph = helper.make_graph(
            [node], "refrnn_verify", [info(n, feeds[n]) for n in names if n],
            [helper.make_tensor_value_info(o, elem, None) for o in outputs],
        )
        # onnx 1.23 stamps IR version 14 by default, which onnxruntime 1.31 refuses (it reads up to 13);
        # opset 14 needs IR 7, so the model says what it needs rather than what the writer knows
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        if self.runtime == "reference":
            from onnx.reference import ReferenceEvaluator

            got = ReferenceEvaluator(model).run(None, feeds)
        else:
            import onnxruntime

            # a refused model is reported by the exception; the runtime's own log would print it twice
            onnxruntime.set_default_logger_severity(4)
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = 1  # tiny problems: threads only add synchronisation on 2 shared cores
            opts.log_severity_level = 4
            session = onnxruntime.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            got = session.run(None, feeds)
        Y, rest = np.asarray(got[0]), tuple(np.asarray(a) for a in got[1:])
        return Y, rest

    def __call__(self, weights, x, state0, dy=None, dstate_T=None, *, lengths=None, batch_first=False):
        weights = dict(weights)
        attributes = dict(weights.pop("attributes"))
        tensors = weights
        is_lstm = self.op == "LSTM"
        if not (self.split_directions and attributes["direction"] == "bidirectional"):
            Y, rest = self._run(tensors, attributes, x, state0, lengths, batch_first)
            return Y, (rest if is_lstm else rest[0])
        # two one-direction nodes; the num_directions axis is 0 of the states and 1 of Y (layout 0),
        # 1 of the states and 2 of Y (layout 1)
        s_axis, y_axis = (1, 2) if batch_first else (0, 1)
        parts = []
        for d, direction in enumerate(("forward", "reverse")):
            one = {k: v[d : d + 1] for k, v in tensors.items()}
            attrs = {**attributes, "direction": direction}
            if "activations" in attrs:
                attrs["activations"] = attrs["activations"][d : d + 1]
            s0 = None
            if state0 is not None:
                pick = lambda a: np.take(a, [d], axis=s_axis)  # noqa: E731
                s0 = tuple(pick(a) for a in state0) if is_lstm else pick(state0)
            parts.append(self._run(one, attrs, x, s0, lengths, batch_first))
        Y = np.concatenate([p[0] for p in parts], axis=y_axis)
        states = tuple(np.concatenate([p[1][k] for p in parts], axis=s_axis) for k in range(len(parts[0][1])))
        return Y, (states if is_lstm else states[0])


def onnx_op(op: str = "GRU", *, runtime: str = "onnxruntime", dtype="float64", split_directions: bool = False,
            attributes: dict | None = None, name: str | None = None) -> OnnxOp:
    """A candidate for one ONNX ``op`` node on ``runtime`` (see :class:`OnnxOp`)."""
    return OnnxOp(op, runtime=runtime, dtype=dtype, split_directions=split_directions, attributes=attributes, name=name)


__all__ = ["OPS", "REFUSED", "RUNTIMES", "OnnxLayout", "OnnxOp", "onnx_op", "onnx_version"]
