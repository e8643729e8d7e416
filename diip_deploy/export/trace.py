"""Trace forward and gradient functions into ONNX-exportable graphs.

``torch.onnx.export`` does not record ``torch.autograd.grad``; ``make_fx`` does, since
it runs below autograd, turning the backward pass into ordinary aten ops.  So we trace
with make_fx (symbolic shapes: batch, height and width stay dynamic) and a
decomposition table, then hand the GraphModule to the dynamo ONNX exporter.
See docs/export.md for the traps this module avoids:
- attention runs through diffusers' classic processor (no fused flash attention,
  whose core decomposition silently gives wrong gradients);
- integer-factor nearest upsampling becomes expand/reshape, so its backward is a
  ReduceSum instead of a ScatterND;
- convolution_backward (input gradient only) becomes a transposed convolution.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, cast

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _nearest_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.unsqueeze(3).unsqueeze(5).expand(b, c, h, factor, w, factor)
    return x.reshape(b, c, h * factor, w * factor)


@contextlib.contextmanager
def export_friendly_ops() -> Iterator[None]:
    """Route integer-factor nearest interpolation through expand/reshape while tracing."""
    original = F.interpolate

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None, **kw):
        if mode == "nearest" and input.dim() == 4 and size is None and scale_factor is not None:
            f = scale_factor if isinstance(scale_factor, (int, float)) else scale_factor[0]
            if (
                float(f) == int(f)
                and int(f) >= 1
                and (isinstance(scale_factor, (int, float)) or len(set(scale_factor)) == 1)
            ):
                return _nearest_upsample(input, int(f))
        return original(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners, **kw)

    functional: Any = F  # patched for the duration of a trace
    functional.interpolate = interpolate
    try:
        yield
    finally:
        functional.interpolate = original


def prepare_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """Frozen weights (they become graph constants) and classic attention."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.eval().requires_grad_(False)
    # UNet2DModel has no set_attn_processor: set it on every Attention module.
    for module in unet.modules():
        if hasattr(module, "set_processor") and hasattr(module, "processor"):
            cast(Any, module).set_processor(AttnProcessor())
    return unet


def _convolution_backward(
    grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
):
    """Input gradient of a (non-transposed) convolution as a transposed convolution."""
    if transposed:
        raise NotImplementedError("backward of transposed convolution is not needed for UNet2DModel")
    grad_input = None
    if output_mask[0]:
        out_pad = []
        for d in range(len(stride)):
            full = (
                (grad_output.shape[2 + d] - 1) * stride[d]
                - 2 * padding[d]
                + dilation[d] * (weight.shape[2 + d] - 1)
                + 1
            )
            out_pad.append(input.shape[2 + d] - full)
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, out_pad, groups)
    grad_weight = None
    grad_bias = None
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("weight/bias gradients are not exported: UNet weights are constants")
    return grad_input, grad_weight, grad_bias


def decomposition_table() -> Dict:
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    for op in list(table):
        if "flash_attention" in str(op) or "efficient_attention" in str(op):
            del table[op]
    table[aten.convolution_backward.default] = _convolution_backward
    return table


def trace(fn: Callable, *example_args: torch.Tensor) -> torch.fx.GraphModule:
    """make_fx with symbolic shapes and our decompositions."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with export_friendly_ops():
        gm = make_fx(
            fn, decomposition_table=decomposition_table(), tracing_mode="symbolic", _allow_non_fake_inputs=True
        )(*example_args)
    return gm
