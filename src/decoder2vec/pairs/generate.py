"""Synthetic queries written by an instruct decoder (InPars / Promptagator), through its chat template.

Prompts are few-shot (three made-up passages with their answers as earlier chat turns): SmolLM2-135M
ignores a bare instruction about half the time and chats about the passage instead; with the examples
most answers are one short line (BENCHMARKS.md, "pairs"). Each template asks for one query; ``k`` queries
per passage are ``k`` samples.

Backends: ``transformers`` (``generate``, batched with left padding) and ``llama.cpp``
(``llama-cpp-python``, one prompt at a time). Sampling is seeded per shard of passages (transformers: the
torch seed before each batch; llama.cpp: a seed per prompt), so a shard generates the same queries
whether the run was interrupted or not.
"""

from __future__ import annotations

import re
from pathlib import Path

from decoder2vec.errors import ConfigError, ModelLoadError

BACKENDS = ("transformers", "llama.cpp")
TEMPLATES = ("question", "keywords", "claim")

SYSTEM = {
    "question": "Write one short question that the passage answers. Reply with the question only.",
    "keywords": "Write a short web search query (2 to 6 keywords) for the passage. Reply with the query only.",
    "claim": "Write one short true statement that the passage supports. Reply with the statement only.",
}
SHOTS = (
    (
        (
            "The Nile is a major north-flowing river in northeastern Africa. It flows into the Mediterranean "
            "Sea and is about 6,650 km long."
        ),
        {
            "question": "How long is the Nile river?",
            "keywords": "nile river length",
            "claim": "The Nile flows into the Mediterranean Sea.",
        },
    ),
    (
        (
            "Mount Everest is Earth's highest mountain above sea level, located in the Himalayas on the border "
            "of Nepal and China. Its height is 8,849 metres."
        ),
        {
            "question": "What is the highest mountain on Earth?",
            "keywords": "highest mountain himalayas",
            "claim": "Mount Everest is 8,849 metres high.",
        },
    ),
    (
        (
            "Photosynthesis is a process used by plants to convert light energy into chemical energy that "
            "fuels their activities."
        ),
        {
            "question": "How do plants turn light into energy?",
            "keywords": "photosynthesis light energy plants",
            "claim": "Plants use photosynthesis to turn light into chemical energy.",
        },
    ),
)
# Passages are cut to this many characters in the prompt: the 135M model loses the format on long inputs.
PROMPT_CHARS = 600


def messages(template: str, passage: str) -> list[dict[str, str]]:
    """The chat of one request: system instruction, the few-shot turns, then the passage."""
    chat = [{"role": "system", "content": SYSTEM[template]}]
    for text, answers in SHOTS:
        chat += [{"role": "user", "content": text}, {"role": "assistant", "content": answers[template]}]
    return chat + [{"role": "user", "content": passage[:PROMPT_CHARS]}]


_PREFIX = re.compile(
    r"^\s*(?:[-*•]|\d+[.)]|(?:question|query|search query|claim|statement|q|a)\s*:)\s*", re.IGNORECASE
)
_QUOTES = "\"'“”‘’`"


def parse_query(raw: str) -> str:
    """The first non-blank line, without a "Question:"-style label, list marker or enclosing quotes;
    "" when nothing is left (counted as unparsable)."""
    for line in raw.strip().splitlines():
        line = line.strip()
        while True:
            stripped = _PREFIX.sub("", line, count=1).strip()
            if stripped == line:
                break
            line = stripped
        if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
            line = line[1:-1].strip()
        if line:
            return " ".join(line.split())
    return ""


def resolve_backend(backend: str, model: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "llama.cpp":
        from decoder2vec.backbone.default_model import DEFAULT_MODEL

        if model != DEFAULT_MODEL and Path(model).expanduser().suffix.lower() != ".gguf":
            raise ConfigError(f"--backend llama.cpp needs a .gguf file or {DEFAULT_MODEL}, got {model!r}")
    return backend


def generator_weights(model: str, backend: str) -> list[Path]:
    """The weight files the generator reads (hashed into the manifest)."""
    from decoder2vec.backbone.default_model import DEFAULT_MODEL, default_model_gguf

    if backend == "llama.cpp":
        return [default_model_gguf() if model == DEFAULT_MODEL else Path(model).expanduser()]
    from decoder2vec.backbone.loading import resolve_model_path

    return weight_files(resolve_model_path(model))


def weight_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))


class TransformersGenerator:
    """``model.generate`` over left-padded batches of chat prompts."""

    def __init__(
        self, model: str, *, batch_size: int = 16, max_new_tokens: int = 48, device: str | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from decoder2vec.backbone.loading import load_tokenizer, resolve_model_path
        from decoder2vec.backbone.model_io import quiet_transformers

        quiet_transformers()
        path = resolve_model_path(model)
        self.tokenizer = load_tokenizer(path)
        self.tokenizer.padding_side = "left"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # bf16 on a GPU (generation is memory-bound there); fp32 on CPU, where bf16 sampling would differ
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        except Exception as exc:
            raise ModelLoadError(f"cannot load {model} as a causal LM for query generation: {exc}") from exc
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        # The chat turn's end marker (SmolLM2: <|im_end|>) stops a reply as well as the model's eos.
        stop = {self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id}
        stop |= {
            self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",) if t in self.tokenizer.vocab
        }
        self.stop = sorted(
            i for s in stop if s is not None for i in (s if isinstance(s, list) else [s]) if i is not None
        )

    def prompt(self, chat: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        # A base model without a chat template (the tests' tiny models): turns as plain lines.
        return "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"

    def generate(self, chats: list[list[dict[str, str]]], seed: int, temperature: float) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(chats), self.batch_size):
            prompts = [self.prompt(c) for c in chats[start : start + self.batch_size]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            torch.manual_seed(seed + start)
            with torch.no_grad():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=0.95 if temperature > 0 else None,
                    top_k=None,
                    eos_token_id=self.stop,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return out


class LlamaCppGenerator:
    """llama.cpp's chat completion (the GGUF's own chat template), one prompt at a time."""

    def __init__(self, model: str, *, threads: int, max_new_tokens: int = 48) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelLoadError(
                "--backend llama.cpp needs llama-cpp-python: pip install 'decoder2vec[llamacpp]'"
            ) from exc
        gguf = generator_weights(model, "llama.cpp")[0]
        # n_batch=1: llama-cpp-python 0.3.16 built on this AVX-512/AMX machine segfaults evaluating a
        # prompt in batches with SmolLM2's Q4_1 GGUF; token by token works (and is what we measured).
        self.llm = Llama(
            str(gguf), n_ctx=2048, n_threads=threads, n_batch=1, n_ubatch=1, seed=0, verbose=False
        )
        self.max_new_tokens = max_new_tokens

    def generate(self, chats: list[list[dict[str, str]]], seed: int, temperature: float) -> list[str]:
        out = []
        for i, chat in enumerate(chats):
            reply = self.llm.create_chat_completion(
                chat, temperature=temperature, top_p=0.95, max_tokens=self.max_new_tokens, seed=seed + i
            )
            out.append(reply["choices"][0]["message"]["content"] or "")
        return out


def load_generator(
    model: str, backend: str, *, threads: int, batch_size: int, max_new_tokens: int, device: str | None = None
):
    if backend == "llama.cpp":
        return LlamaCppGenerator(model, threads=threads, max_new_tokens=max_new_tokens)
    import torch

    torch.set_num_threads(threads)
    return TransformersGenerator(model, batch_size=batch_size, max_new_tokens=max_new_tokens, device=device)
