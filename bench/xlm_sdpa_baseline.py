"""Baseline, not product code: the plain XLM encoder forward written with torch
scaled_dot_product_attention over the same HF-named weights (a state dict of
XLMModel), run eager or under torch.compile by bench/bench_xlm_model.py.

Non-causal, no langs / token types / head_mask: exactly what the benchmark feeds.
Rows with no valid key would get NaN from SDPA's boolean mask (XLM averages V); the
benchmark has none.
"""
import torch.nn.functional as F


def sdpa_xlm_forward(weights, config, input_ids, attention_mask):
    """weights: XLMModel state dict (HF names); input_ids, attention_mask: (batch, seq)."""
    batch, seq = input_ids.shape
    dim, heads, eps = config.emb_dim, config.n_heads, config.layer_norm_eps
    act = F.gelu if config.gelu_activation else F.relu
    row_mask = attention_mask.to(weights["embeddings.weight"].dtype)[..., None]
    key_mask = attention_mask.bool()[:, None, None, :]

    def linear(x, name):
        return F.linear(x, weights[f"{name}.weight"], weights[f"{name}.bias"])

    def norm(x, name):
        return F.layer_norm(x, (dim,), weights[f"{name}.weight"], weights[f"{name}.bias"], eps)

    x = F.embedding(input_ids, weights["embeddings.weight"]) + weights["position_embeddings.weight"][:seq]
    x = norm(x, "layer_norm_emb") * row_mask
    for i in range(config.n_layers):
        q, k, v = (linear(x, f"attentions.{i}.{n}").view(batch, seq, heads, -1).transpose(1, 2)
                   for n in ("q_lin", "k_lin", "v_lin"))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = norm(x + linear(context.transpose(1, 2).reshape(batch, seq, dim), f"attentions.{i}.out_lin"),
                 f"layer_norm1.{i}")
        x = norm(x + linear(act(linear(x, f"ffns.{i}.lin1")), f"ffns.{i}.lin2"), f"layer_norm2.{i}") * row_mask
    return x
