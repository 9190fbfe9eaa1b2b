"""``decoder2vec export onnx``: an encoder folder in the layout sentence-transformers' ONNX backend reads.

    OUT/                      the saved encoder (HF config + weights, tokenizer, modules.json, 1_Pooling/)
    OUT/onnx/model.onnx       backbone graph: (input_ids, attention_mask) -> last_hidden_state, fp32
    OUT/onnx/model_qint8_avx512_vnni.onnx   with --quantize: int8 weights (per channel), dynamic int8
                              activations; the name sentence-transformers' export_dynamic_quantized_onnx_model
                              gives its "avx512_vnni" file, so ``file_name=`` picks it the same way.

Only the backbone is in the graph, because that is what optimum's ORTModelForFeatureExtraction (behind
``SentenceTransformer(folder, backend="onnx")``), TEI and Transformers.js run: they read
``last_hidden_state`` and pool it themselves from 1_Pooling/. Position ids are computed inside the graph
from the attention mask (cumulative sum), since those loaders feed only ids and mask. Bidirectional
attention is baked into the traced mask; :func:`verify_onnx_attention` proves it on the written file
with the same probe ``backbone.bidirectional`` runs on the PyTorch model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decoder2vec.backbone.bidirectional import (
    CAUSAL_TOLERANCE,
    AttentionCheck,
    first_token_shift,
    probe_inputs,
)
from decoder2vec.errors import BidirectionalityError, ConfigError, ModelLoadError, OutputExistsError

ONNX_FOLDER = "onnx"
ONNX_MODEL = "model.onnx"
ONNX_QINT8 = "model_qint8_avx512_vnni.onnx"
OPSET = 17
# The exported graph must reproduce the PyTorch encoder's vectors to this cosine (fp32 vs fp32: only
# kernel rounding differs).
MIN_COSINE = 0.9999
# Poolings every ONNX consumer can apply from 1_Pooling/ (TEI and Transformers.js have no weighted mean).
ONNX_POOLINGS = ("mean", "last_token", "bos")
# MatMuls left in float32 by --quantize, by name: see BENCHMARKS.md, "int8 on CPU" (the MLP's down
# projection reads the SiLU-gated activations, whose outlier channels a per-tensor int8 scale crushes).
KEEP_FLOAT = ("down_proj",)


def onnxruntime_or_error():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs the optional extra ({exc.name} is missing): pip install 'decoder2vec[onnx]'"
        ) from None
    return onnxruntime


def check_export(model: str, out: Path) -> None:
    """Everything the flags and config files decide, before any weight loads: OUT is new, the model is a
    saved encoder, and its pooling and projection fit the ONNX layout."""
    from decoder2vec.backbone.loading import resolve_model_path
    from decoder2vec.encoder_config import ENCODER_CONFIG, read_encoder_config

    onnxruntime_or_error()
    if out.exists() or out.is_symlink():
        raise OutputExistsError(f"OUT {out} already exists; export onnx writes a new folder, choose another")
    path = Path(resolve_model_path(model))
    if not path.is_dir() or not (path / ENCODER_CONFIG).is_file():
        raise ModelLoadError(
            f"{model} is not a saved decoder2vec encoder (no {ENCODER_CONFIG}); export one that "
            "Encoder.save, convert or an alias wrote"
        )
    saved = read_encoder_config(path)
    check_layout(saved.get("pooling", "mean"), bool(saved.get("projection")), bool(saved.get("append_eos")))


def check_layout(pooling: str, has_projection: bool, append_eos: bool) -> None:
    if pooling not in ONNX_POOLINGS:
        raise ConfigError(
            f"pooling {pooling!r} cannot travel with an ONNX export: TEI and Transformers.js pool "
            f"{', '.join(ONNX_POOLINGS)} only"
        )
    if has_projection:
        raise ConfigError(
            "the encoder has a projection after pooling (2_Dense/), which the ONNX graph does not hold and "
            "TEI / Transformers.js would skip; export the encoder without it"
        )
    if append_eos:
        raise ConfigError(
            "the encoder appends an eos token before pooling (append_eos), which ONNX loaders, tokenizing "
            "on their own, would not do"
        )


class TokenStates(torch.nn.Module):
    """The graph's function: ``(input_ids, attention_mask) -> last_hidden_state``, positions from the mask
    (0, 1, 2, ... over real tokens; right or left padding alike)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state


def export_graph(backbone: torch.nn.Module, path: Path) -> None:
    """Trace ``backbone`` (float32, CPU) into ``path``. The example batch is padded, so the explicit-mask
    path is traced: an all-ones mask then runs through the same ops, with no data-dependent shortcut."""
    module = TokenStates(backbone).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_graph(source: Path, target: Path) -> None:
    """int8 weights per output channel, dynamic uint8 activations (ONNX Runtime's MatMulInteger, VNNI/AMX
    kernels) for the linear layers, leaving those named in ``KEEP_FLOAT`` in float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    # only the linear layers (a MatMul by a stored weight), as in the torch path: attention's QK^T and AV
    # multiply two activations, and stay float
    keep = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and (any(k in n.name for k in KEEP_FLOAT) or not weights & set(n.input))
    ]
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep,
    )


def session(path: Path, threads: int | None = None):
    ort = onnxruntime_or_error()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_states(sess, input_ids, attention_mask) -> np.ndarray:
    feeds = {
        "input_ids": np.asarray(input_ids, np.int64),
        "attention_mask": np.asarray(attention_mask, np.int64),
    }
    return sess.run(["last_hidden_state"], feeds)[0]


def verify_onnx_attention(
    sess, config, expect_bidirectional: bool, special_ids: set[int] = frozenset()
) -> AttentionCheck:
    """``backbone.bidirectional``'s probe on the exported graph: change only the last token; token 0's state
    must move in a bidirectional graph (unpadded and padded) and must not in a causal one."""
    padded, mask = probe_inputs(config, special_ids)
    shift = first_token_shift(run_states(sess, padded[:, :-1], mask[:, :-1]))
    shift_padded = first_token_shift(run_states(sess, padded, mask))
    check = AttentionCheck(expect_bidirectional, shift, shift_padded)
    if expect_bidirectional and min(shift, shift_padded) <= CAUSAL_TOLERANCE:
        raise BidirectionalityError(f"the exported ONNX graph attends causally: {check.describe()}")
    if not expect_bidirectional and max(shift, shift_padded) > CAUSAL_TOLERANCE:
        raise BidirectionalityError(f"the exported ONNX graph sees future tokens: {check.describe()}")
    return check


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    files: list[str]
    attention: AttentionCheck
    min_cosine: float  # of the fp32 graph's vectors to the PyTorch encoder's, on the check texts


CHECK_TEXTS = [
    "A man is playing a guitar on the stage.",
    "The quarterly report shows revenue growing by four percent.",
    "Photosynthesis converts light into chemical energy.",
    "short",
]


def onnx_pooled(encoder, sess, texts: list[str]) -> np.ndarray:
    """The encoder's pooled vectors computed from the graph's token states (the encoder's own tokenization
    and pooling, so only the forward differs)."""
    from decoder2vec.encoding.pooling import pool

    batch = encoder.builder.collate(encoder.builder.build(texts, None), "right")
    hidden = torch.from_numpy(run_states(sess, batch.input_ids, batch.attention_mask))
    return pool(hidden, batch.pool_mask, batch.attention_mask, encoder.pooling).numpy()


def export_onnx(encoder, out: Path, *, quantize: bool = False) -> OnnxExport:
    """Write ``encoder`` (float32, CPU) as a saved encoder plus ``onnx/``, into the new folder ``out``,
    atomically: built in a temporary sibling, checked (attention probe, vectors against PyTorch), then
    renamed into place."""
    from decoder2vec.io import publish_folder

    check_layout(encoder.pooling, encoder.projection is not None, encoder.append_eos)
    if out.exists() or out.is_symlink():
        raise OutputExistsError(f"OUT {out} already exists; export onnx writes a new folder, choose another")
    special = set(encoder.tokenizer.all_special_ids)
    result = {}

    def build(folder: Path) -> None:
        encoder.write_files(folder)
        (folder / ONNX_FOLDER).mkdir()
        graph = folder / ONNX_FOLDER / ONNX_MODEL
        export_graph(encoder.model, graph)
        sess = session(graph)
        result["attention"] = verify_onnx_attention(
            sess, encoder.model.config, encoder.bidirectional, special
        )
        want = encoder.encode(CHECK_TEXTS)
        got = onnx_pooled(encoder, sess, CHECK_TEXTS)
        cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
        result["cosine"] = float(cos.min())
        if result["cosine"] < MIN_COSINE:
            raise ModelLoadError(
                f"the exported graph's vectors differ from the PyTorch encoder's (min cosine "
                f"{result['cosine']:.6f} < {MIN_COSINE}); the export is not written"
            )
        if quantize:
            quantize_graph(graph, folder / ONNX_FOLDER / ONNX_QINT8)
        result["files"] = sorted(str(p.relative_to(folder)) for p in (folder / ONNX_FOLDER).iterdir())

    if publish_folder(out, build) and not result:
        raise OutputExistsError(f"OUT {out} appeared while exporting; nothing was written")
    return OnnxExport(out, result["files"], result["attention"], result["cosine"])
