"""Low-precision CPU inference: which kernels this CPU has, the checks that refuse a slow or missing path,
and the int8 weight quantization of an encoder's backbone.

bf16 on a CPU without native bf16 instructions is emulated and slower than fp32, and int8 without VNNI
loses most of its speed, so both are refused there instead of running a silent slow path.
"""

from __future__ import annotations

import torch

from decoder2vec.errors import ConfigError

QUANTIZATIONS = ("int8",)


def cpu_kernels() -> dict[str, str | None]:
    """The CPU's native low-precision matmul instructions, as ``{"bf16": ..., "int8": ...}`` (None: none).

    Read from torch's own CPU feature probe (cpuinfo), the one its oneDNN / FBGEMM kernels dispatch on.
    Tests monkeypatch this function to play an older CPU.
    """
    cpu = torch.cpu

    def has(name: str) -> bool:
        probe = getattr(cpu, name, None)
        return bool(probe()) if callable(probe) else False

    amx = has("_is_amx_tile_supported")
    bf16 = "AMX-BF16" if amx and has("_is_avx512_bf16_supported") else None
    bf16 = bf16 or ("AVX512-BF16" if has("_is_avx512_bf16_supported") else None)
    int8 = "AMX-INT8" if amx else ("VNNI" if has("_is_vnni_supported") else None)
    return {"bf16": bf16, "int8": int8}


def describe_kernels(dtype: torch.dtype, quantization: str | None, device: torch.device) -> str:
    """One line for ``decoder2vec info``: what the matmuls of this model run on."""
    if device.type != "cpu":
        return f"{str(dtype).removeprefix('torch.')} on {device}"
    kernels = cpu_kernels()
    if quantization == "int8":
        return f"int8 weights, dynamic 8-bit activations (FBGEMM; int8 instructions: {kernels['int8']})"
    if dtype == torch.bfloat16:
        return f"bfloat16 (oneDNN; bf16 instructions: {kernels['bf16'] or 'none, emulated'})"
    return f"{str(dtype).removeprefix('torch.')} (CPU: {torch.backends.cpu.get_cpu_capability()})"


def check_inference_precision(dtype: torch.dtype, quantization: str | None, device: torch.device) -> None:
    """Refuse, before any weight loads, a dtype / quantization / device combination that cannot run or
    would run on a slow emulated path."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization={quantization!r} is not supported; use None or 'int8'")
    if quantization == "int8":
        if device.type != "cpu":
            raise ConfigError(
                f"quantization='int8' runs on CPU only (device={device}); on a GPU use dtype=bfloat16"
            )
        if dtype != torch.float32:
            raise ConfigError(
                f"quantization='int8' keeps float32 for the layers it leaves unquantized; "
                f"dtype={str(dtype).removeprefix('torch.')} cannot be combined with it"
            )
        if cpu_kernels()["int8"] is None:
            raise ConfigError(
                "quantization='int8' needs a CPU with VNNI (AVX512-VNNI, AVX-VNNI or AMX) for its int8 "
                "matmuls; this CPU has none, so int8 would be no faster than float32"
            )
    if device.type == "cpu" and dtype == torch.bfloat16:
        require_native_bf16("use float32, or quantization='int8' on a CPU with VNNI")


def require_native_bf16(remedy: str, error: type[Exception] = ConfigError) -> None:
    """Refuse bf16 on a CPU that would emulate it (inference and training both ask here)."""
    if cpu_kernels()["bf16"] is None:
        raise error(
            f"dtype=bfloat16 on this CPU would be emulated (no AVX512-BF16 or AMX), slower than float32; {remedy}"
        )


# Linear layers int8 leaves in float32, by name suffix: the MLP's down projection reads the SiLU-gated
# activations, whose few outlier channels a per-tensor dynamic int8 scale crushes (BENCHMARKS.md,
# "Choosing the int8 path": quantizing it costs most of the quality, keeping it costs little speed).
KEEP_FLOAT = ("down_proj",)


class Int8Linear(torch.nn.Module):
    """``y = x W^T + b`` with ``W`` in int8, one symmetric scale per output row, and ``x`` quantized to uint8
    over its own [min, max] at each call (FBGEMM's dynamic linear).

    Activations use the full 8 bits: torch's ``quantize_dynamic`` modules pass ``reduce_range=True`` (7 bits,
    guarding against int16 overflow on CPUs without VNNI), which on the shipped encoder took the mean cosine
    to fp32 from 0.997 to 0.990; int8 is refused without VNNI, whose int32 accumulation cannot overflow."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        zero = torch.zeros(len(scale), dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def check_precision_options(dtype: str | None, quantization: str | None, device: str | None = None) -> None:
    """--dtype / --quantization checked against this machine before anything is read or loaded."""
    from decoder2vec.backbone.model_io import resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    check_inference_precision(resolve_dtype(dtype, torch_device), quantization, torch_device)


def quantize_int8(model: torch.nn.Module, keep_float: tuple[str, ...] = KEEP_FLOAT) -> torch.nn.Module:
    """Replace the backbone's ``nn.Linear`` layers, all but ``keep_float``, by :class:`Int8Linear`, in place.
    Embeddings, norms and attention stay float32."""
    import warnings

    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(keep_float)
    ]
    with warnings.catch_warnings():
        # torch warns that quantized tensor creation is deprecated; the FBGEMM ops themselves stay
        warnings.simplefilter("ignore")
        for name in targets:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, Int8Linear(getattr(owner, child)))
    return model
