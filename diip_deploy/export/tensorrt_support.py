"""Static check: can TensorRT's ONNX parser take this graph?  Runs on CPU, no TensorRT.

The operator list and restrictions below are TensorRT 10.15's "Supported ONNX Operators"
(onnx-tensorrt, docs/operators.md:
https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md), opset 9 to 24.
Only the operators a diffusers UNet and its gradient can plausibly produce are checked
for restrictions; any operator not in the supported list is an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Set

TENSORRT_VERSION = "10.15"
SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"
OPSET_RANGE = (9, 24)

SUPPORTED = set(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
)

# Operators whose listed restriction is "input N must be a build-time constant".
CONSTANT_INPUTS: Dict[str, List[int]] = {
    **{
        op: [1]
        for op in (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
        )
    },
    "Squeeze": [1],
    "Unsqueeze": [1],
    "CumSum": [1],
    "OneHot": [1],
}
# Older TensorRT (before 10) also required Conv/ConvTranspose weights to be initializers;
# we warn, since engines for Jetson's older JetPacks may meet that parser.
CONSTANT_WEIGHTS_WARN = {"Conv": 1, "ConvTranspose": 1}
RESIZE_MODES = {"nearest", "linear"}

_ONNX_DOUBLE = 11
_ONNX_INT64 = 7


@dataclass
class CompatReport:
    graph: str
    op_counts: Dict[str, int]
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        head = (
            f"{self.graph}: {sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types, "
            f"TensorRT {TENSORRT_VERSION} list"
        )
        lines = [head + (": ok" if self.ok else f": {len(self.errors)} problem(s)")]
        lines += [f"  error: {e}" for e in self.errors] + [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


_RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def build_time_constants(g) -> Set[str]:
    """Tensors TensorRT can resolve while building: initializers, Constant outputs, and
    outputs of deterministic nodes whose inputs are all such constants (folded)."""
    constants: Set[str] = {i.name for i in g.initializer}
    for n in g.node:  # ONNX graphs are topologically sorted
        if n.op_type == "Constant" or (
            n.op_type not in _RANDOM and n.input and all((not i) or i in constants for i in n.input)
        ):
            constants.update(o for o in n.output if o)
    return constants


def check_onnx(path: Path | str) -> CompatReport:
    """Every node against TensorRT's supported operators and their restrictions."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    report = CompatReport(graph=Path(path).name, op_counts=dict(Counter(n.op_type for n in g.node)))
    opsets = {o.domain: o.version for o in model.opset_import}
    v = opsets.get("", opsets.get("ai.onnx"))
    if v is None or not OPSET_RANGE[0] <= v <= OPSET_RANGE[1]:
        report.errors.append(f"ai.onnx opset {v} outside TensorRT's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    local_functions = {(f.domain, f.name) for f in model.functions}
    constants = build_time_constants(g)
    for n in g.node:
        where = f"node {n.name or '?'} ({n.op_type})"
        if n.domain not in ("", "ai.onnx"):
            if (n.domain, n.op_type) not in local_functions:
                report.errors.append(f"{where}: custom domain {n.domain!r} needs a TensorRT plugin")
            continue
        if n.op_type not in SUPPORTED:
            report.errors.append(f"{where}: not supported by TensorRT's ONNX parser")
            continue
        for idx in CONSTANT_INPUTS.get(n.op_type, []):
            if len(n.input) > idx and n.input[idx] and n.input[idx] not in constants:
                report.errors.append(f"{where}: input {idx} ({n.input[idx]}) must be a build-time constant")
        widx = CONSTANT_WEIGHTS_WARN.get(n.op_type)
        if widx is not None and len(n.input) > widx and n.input[widx] not in constants:
            report.warnings.append(f"{where}: weights are computed, not an initializer (TensorRT < 10 refuses this)")
        if n.op_type == "ScatterND" and (_attr(n, "reduction", b"none") or b"none") not in (b"none", "none"):
            report.errors.append(f"{where}: ScatterND reduction {_attr(n, 'reduction')!r} is not supported")
        if n.op_type == "Resize":
            mode = _attr(n, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in RESIZE_MODES:
                report.errors.append(f"{where}: Resize mode {mode!r} is not supported")
    elem = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        elem[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        elem[t.name] = t.data_type
    doubles = sorted(k for k, t in elem.items() if t == _ONNX_DOUBLE)
    if doubles:
        report.warnings.append(
            f"{len(doubles)} DOUBLE tensor(s) (e.g. {doubles[0]}): TensorRT casts them down to FLOAT"
        )
    int64_inputs = [i.name for i in g.input if i.type.tensor_type.elem_type == _ONNX_INT64]
    if int64_inputs:
        report.warnings.append(
            f"INT64 input(s) {', '.join(int64_inputs)}: supported natively since TensorRT 10; "
            "older TensorRT casts them to INT32"
        )
    return report
