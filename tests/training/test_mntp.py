import torch

from decoder2vec.backbone.loading import load_backbone
from decoder2vec.encoding.tokenization import tokenize_batch
from decoder2vec.training import run_mntp
from decoder2vec.training.config import LoraSettings, MNTPConfig
from decoder2vec.training.modules import Embedder, MNTPModel, add_lora, embed
from decoder2vec.training.recipes.common import save_adapter
from decoder2vec.training.recipes.mntp import Masker
from tests.training.reference import mntp_accuracy, mntp_loss

from .conftest import SENTENCES, build_model


def test_masked_rows_only_head_equals_full_logits(tiny_word_llama):
    lm, tok = load_backbone(tiny_word_llama, with_lm_head=True)
    model = MNTPModel(lm.get_decoder(), lm.get_output_embeddings())
    blocks = torch.tensor(
        [tok(" ".join(SENTENCES[:3]))["input_ids"][:12], tok(" ".join(SENTENCES[3:6]))["input_ids"][:12]]
    )
    batch = Masker(tok, MNTPConfig(mask_probability=0.4), mask_token_id=4)(
        blocks, torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        out = model(**batch)
        logits = lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).logits
    assert int(out["count"]) == int((batch["labels"] != -100).sum()) > 0
    assert torch.allclose(out["loss"], mntp_loss(logits, batch["labels"]), atol=1e-6)
    assert (int(out["correct"]), int(out["count"])) == mntp_accuracy(logits, batch["labels"])


def test_merged_and_unmerged_adapter_agree(tiny_word_llama, tmp_path):
    base, tok = load_backbone(tiny_word_llama)
    peft_model = add_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter actually change the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    embedder = Embedder(peft_model).eval()
    batch = tokenize_batch(tok, SENTENCES[:5], max_length=32)
    with torch.no_grad():
        unmerged = embed(embedder, batch, torch.device("cpu"))
        with peft_model.disable_adapter():
            plain = embed(embedder, batch, torch.device("cpu"))
    adapter = save_adapter(peft_model, tmp_path / "adapter")
    merged_model, _ = load_backbone(tiny_word_llama, adapters=[adapter])
    with torch.no_grad():
        merged = embed(Embedder(merged_model).eval(), batch, torch.device("cpu"))
    assert not torch.allclose(unmerged, plain, atol=1e-3)  # the adapter matters...
    assert torch.allclose(unmerged, merged, atol=1e-5)  # ...and merging it changes nothing


def test_mntp_run_learns_and_writes_outputs(tiny_word_llama, text_corpus, tmp_path):
    cfg = MNTPConfig(
        model=str(tiny_word_llama),
        data=str(text_corpus),
        max_seq_length=16,
        batch_size=8,
        max_steps=40,
        learning_rate=2e-2,
        eval_fraction=0.2,
        eval_every=0,
        log_every=40,
        save_every=100,
        merge=True,
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
    )
    result = run_mntp(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert result.metrics["step"] == 40 and result.metrics["eval_masked_tokens"] > 0
    assert (result.adapter / "adapter_config.json").is_file() and (result.merged / "config.json").is_file()

    # held-out loss of the trained model is below the untrained one
    from decoder2vec.training.data.chunking import chunk_blocks, tokenize_documents, train_eval_split
    from decoder2vec.training.data.corpus import read_texts
    from decoder2vec.training.recipes.mntp import evaluate_mntp

    lm, tok = load_backbone(tiny_word_llama, with_lm_head=True)
    blocks = chunk_blocks(tokenize_documents(tok, read_texts(text_corpus)), 16)
    held = train_eval_split(blocks, 0.2, cfg.seed)[1]
    before = evaluate_mntp(MNTPModel(lm.get_decoder(), lm.lm_head), held, Masker(tok, cfg, 4), 8, 0, "cpu")
    trained, _ = load_backbone(result.merged, with_lm_head=True)
    after = evaluate_mntp(
        MNTPModel(trained.get_decoder(), trained.lm_head), held, Masker(tok, cfg, 4), 8, 0, "cpu"
    )
    assert after["loss"] < before["loss"] - 0.3, (before, after, lines)
    # the adapter (trained on the causal-LM class) applies to the bare model the later stages use
    bare, _ = load_backbone(tiny_word_llama, adapters=[result.adapter])
    ids = tok(SENTENCES[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = bare(**ids).last_hidden_state
        b = trained.get_decoder()(**ids).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)


def test_evaluation_without_masked_tokens_reports_no_loss(tiny_word_llama):
    from decoder2vec.training.recipes.mntp import evaluate_mntp

    lm, tok = load_backbone(tiny_word_llama, with_lm_head=True)
    blocks = torch.full((4, 8), tok.eos_token_id)  # special tokens only: nothing can be masked
    got = evaluate_mntp(
        MNTPModel(lm.get_decoder(), lm.lm_head), blocks, Masker(tok, MNTPConfig(), 4), 2, 0, "cpu"
    )
    assert got == {"masked_tokens": 0}


def test_zero_mask_probability_is_an_error_not_the_default(tiny_tokenizer):
    import pytest

    from decoder2vec.training.errors import TrainingError

    masker = Masker(tiny_tokenizer, MNTPConfig(mask_probability=0.0), 4)
    with pytest.raises(TrainingError, match="mask probability"):
        masker(torch.full((2, 8), 10))


def test_new_mask_token_resizes_embeddings(tiny_word_llama, text_corpus, tmp_path):
    cfg = MNTPConfig(
        model=str(tiny_word_llama),
        data=str(text_corpus),
        max_seq_length=16,
        batch_size=4,
        max_steps=2,
        mask_token="new",
        mask_strategy="all_mask",
        merge=True,
        log_every=1,
    )
    result = run_mntp(cfg, tmp_path / "run")
    merged, tok = load_backbone(result.merged, with_lm_head=True)
    assert tok.mask_token == "<mask>"
    assert merged.get_input_embeddings().weight.shape[0] >= len(tok)
    # the adapter stays LoRA-only, so it still applies to the original base model (as the later stages need)
    bare, base_tok = load_backbone(tiny_word_llama, adapters=[result.adapter])
    assert bare.get_input_embeddings().weight.shape[0] == build_model(len(base_tok)).config.vocab_size


def test_bf16_base_trains_fp32_adapters(tiny_word_llama, text_corpus, tmp_path):
    """The GPU setting (bf16 weights) on CPU: finite losses, and LoRA weights kept and saved in fp32."""
    import math

    from safetensors.torch import load_file

    from decoder2vec.training import run_simcse
    from decoder2vec.training.config import SimCSEConfig

    common = {"model": str(tiny_word_llama), "data": str(text_corpus), "max_steps": 2, "dtype": "bfloat16"}
    mntp = run_mntp(
        MNTPConfig(**common, batch_size=2, max_seq_length=16, eval_every=0, merge=False), tmp_path / "m"
    )
    simcse = run_simcse(SimCSEConfig(**common, batch_size=4, max_seq_length=16, merge=False), tmp_path / "s")
    assert math.isfinite(mntp.metrics["loss"]) and math.isfinite(simcse.metrics["loss"])
    for result in (mntp, simcse):
        weights = load_file(str(result.adapter / "adapter_model.safetensors"))
        assert weights and all(w.dtype == torch.float32 for w in weights.values())
