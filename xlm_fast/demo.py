"""End-to-end demo on an embedded default: the package's demo vocabulary and a small
randomly initialised XLM checkpoint that it builds and saves itself (nothing is
downloaded). Tokenizes multilingual text, runs the model, and reports what ran."""

import importlib.util
import os
import tempfile
import time

import torch

from . import backend
from .configuration_xlm import XLMConfig
from .modeling_xlm import XLMWithLMHeadModel
from .tokenization_xlm import XLMTokenizer

# In the languages and scripts of the sample corpus the demo vocabulary was learned on.
SAMPLES = [
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("fr", "L'homme qu'il a vu hier n'est pas là."),
    ("de", "Früh erschrecken einfach sehr Fenster Wissen können."),
    ("ro", "Știința și învățământul românesc."),
    ("ru", "Тысяча очко добиться число зеленый."),
    ("el", "Ναι των εντολές."),
    ("zh", "這個 (重要) : 183,441 « 密碼 » — 客戶?!"),
    ("th", "อุปโภคเยาวชนแซงเอิดติดนุ่น ซ่อมเบิ่งสดดูควรยึด"),
]

# Languages whose word segmenter is an optional extra (`pip install xlm_fast[zh,th]`).
SEGMENTERS = {"zh": "rjieba", "th": "pythainlp"}


def available_samples():
    """SAMPLES less the languages whose segmenter is not installed."""
    return [(lang, text) for lang, text in SAMPLES
            if lang not in SEGMENTERS or importlib.util.find_spec(SEGMENTERS[lang]) is not None]


def build_demo_checkpoint(directory, tokenizer, seed=0):
    """Saves a 2-layer, 128-dim XLM LM with one language embedding per demo language."""
    config = XLMConfig(
        vocab_size=tokenizer.vocab_size, emb_dim=128, n_layers=2, n_heads=4, max_position_embeddings=256,
        n_langs=len(tokenizer.lang2id), lang2id=tokenizer.lang2id, causal=True, init_std=0.1,
    )
    torch.manual_seed(seed)
    XLMWithLMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def run_demo(device=None, out=print):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = XLMTokenizer.from_demo()
    out(f"tokenizer: {tokenizer!r}")
    with tempfile.TemporaryDirectory() as directory:
        build_demo_checkpoint(directory, tokenizer)
        out(f"built a random demo checkpoint in {directory}: {sorted(os.listdir(directory))}")
        model = XLMWithLMHeadModel.from_pretrained(directory).to(device)
    config = model.config
    out(f"model: XLMWithLMHeadModel, {config.n_layers} layers, dim {config.emb_dim}, {config.n_heads} heads, "
        f"{model.num_parameters():,} parameters, causal={config.causal}, on {device}")

    samples = available_samples()
    for lang in sorted({lang for lang, _ in SAMPLES} - {lang for lang, _ in samples}):
        out(f"  [{lang}] skipped: its word segmenter {SEGMENTERS[lang]} is not installed "
            f"(pip install xlm_fast[{lang}])")
    texts = [text for _, text in samples]
    rows = [tokenizer(text, lang=lang)["input_ids"] for lang, text in samples]
    for (lang, text), ids in zip(samples, rows):
        out(f"  [{lang}] {text}\n       {len(ids)} ids: {tokenizer.convert_ids_to_tokens(ids)}")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    langs = torch.tensor([[tokenizer.lang2id[lang]] * batch["input_ids"].size(1) for lang, _ in samples])
    batch = {key: value.to(device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
    path = backend.select_backend(
        device, dtype=torch.float32, output_attentions=False, uses_cache=False, dropout=0.0
    )
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(**batch, langs=langs.to(device)).logits
    elapsed = time.perf_counter() - start
    out(f"forward: input_ids {tuple(batch['input_ids'].shape)} -> logits {tuple(logits.shape)} "
        f"in {elapsed * 1e3:.1f} ms on the {path} path ({backend.BACKEND_ENV}={backend.requested_backend()})")

    prompt = torch.tensor([tokenizer.encode(SAMPLES[0][1])[:6]], device=device)
    generated = model.generate(prompt, max_new_tokens=8, lang_id=tokenizer.lang2id["en"])
    out(f"greedy generate (random weights, so the words are noise): "
        f"{tokenizer.decode(generated[0].tolist(), skip_special_tokens=True)!r}")
    return logits
