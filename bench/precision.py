"""One numeric precision per command, set in one place, so that every cell is timed and trained alike.

torch's own defaults mix precisions on a GPU: cuDNN convolutions and RNNs may use TF32 while
matmuls run strict FP32, so a fused (cuDNN) cell and its hand-written twin would not compute at
the same precision. Here one setting decides both backends' FP32 mode and, for the mixed modes,
autocast (Lightning's precision plugin when training; `torch.autocast` for `rnnbench speed`).

- `32`: strict IEEE FP32 everywhere (TF32 off for matmuls, cuDNN convolutions and RNNs);
- `tf32`: FP32 storage, TF32 tensor-core maths in matmuls and cuDNN (CUDA only);
- `bf16-mixed`: autocast to bfloat16 where torch deems it safe, FP32 weights and optimiser (CUDA only);
- `16-mixed`: autocast to float16 with a gradient scaler (CUDA only).

On CPU only `32`: torch's CPU autocast treats the cells unequally (measured with torch 2.13 on
this project's CPU: under bfloat16 the fused LSTM fails in oneDNN, the fused GRU stays FP32 while
the fused tanh RNN runs bfloat16), which is the unfair comparison this setting exists to prevent.

`auto` (the default) is `32` on CPU and `tf32` on CUDA: on a GPU every cell then runs on tensor
cores at FP32 storage, which is what torch already gives cuDNN by default, now for matmuls too.
"""

from __future__ import annotations

import contextlib

import torch

from bench.choices import PRECISIONS

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def resolve_precision(precision: str, device_type: str) -> str:
    """`auto` made concrete for the device; an unknown or unsupported setting is a ValueError that
    names it and what is allowed."""
    if precision == "auto":
        return "tf32" if device_type == "cuda" else "32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device_type != "cuda" and precision != "32":
        raise ValueError(f"precision {precision!r} needs a CUDA device; on {device_type} the only precision is 32 "
                         f"(CPU autocast would treat the cells unequally)")
    return precision


def set_backend_precision(precision: str) -> None:
    """Set the FP32 mode of matmuls and of cuDNN's convolutions and RNNs for this process (the only
    place the project sets them; torch's newer per-backend API, not the legacy `allow_tf32` flags)."""
    mode = "tf32" if precision == "tf32" else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.rnn.fp32_precision = mode


def lightning_precision(precision: str) -> str:
    """The Trainer's `precision` for a setting (TF32 is a backend mode on top of 32-bit training)."""
    return "32-true" if precision in ("32", "tf32") else precision


def autocast(precision: str, device_type: str):
    """The context a forward pass runs in at this precision (nothing for 32 and tf32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def matmul_dtype(precision: str) -> torch.dtype:
    """The dtype of the peak matmul that achieved FLOP/s are set against at this precision."""
    return AUTOCAST_DTYPES.get(precision, torch.float32)
