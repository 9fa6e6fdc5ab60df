"""Activation memory of training: the bytes autograd keeps for the backward of one
XLMModel forward in train mode, per token and layer, for xlm_fast's fused path ("ours",
XLM_FAST_BACKEND=triton), its PyTorch path ("ours_torch") and transformers' XLMModel
("hf_eager"), from one random state dict, in the same run.

Script: `python bench/saved_bytes_xlm_train.py [--device cpu|cuda] [--emb-dim N]
[--batch N] [--seq N] [--dropout P] [--autocast] [--out-dir DIR]` writes
saved_bytes_xlm_train.json / .md. Without CUDA the fused path runs in Triton's CPU
interpreter (TRITON_INTERPRET=1 is set before triton is imported), so the default shapes
are small; the count does not depend on the device, only on the shapes and dtypes.

Counted: every tensor that a saved_tensors_hooks pack hook sees, once per storage,
parameters excluded (they are there whether or not anything is saved). A layer's share
is the count with two layers minus the count with one (embeddings and the LayerNorm
after them cancel out), reported as bytes per token and as values of the model's
dtype per token in units of emb_dim (XLM's feed-forward is 4 * emb_dim wide, attention
probabilities are heads * seq per token). Not a time, so nothing is repeated.
"""
import argparse
import os

import torch

from common import RESULTS_DIR, cpu_description, device_description, write_results

IMPLEMENTATIONS = {"ours": "triton", "ours_torch": "torch", "hf_eager": None}


def build(implementation, config_kwargs, state, device):
    if implementation == "hf_eager":
        import transformers
        model = transformers.XLMModel(transformers.XLMConfig(**config_kwargs))
    else:
        import xlm_fast
        model = xlm_fast.XLMModel(xlm_fast.XLMConfig(**config_kwargs))
    model.load_state_dict(state)
    return model.to(device).train()


def saved_bytes(model, inputs, autocast):
    """Bytes of the distinct non-parameter storages autograd saves in one forward."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(inputs["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast):
            model(**inputs)
    # after the forward: the fused path builds its fused QKV weight block lazily
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--emb-dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout and attention_dropout (XLM's 0.1)")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast around the forward")
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")

    import xlm_fast
    tokens = args.batch * args.seq
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1000, (args.batch, args.seq), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, args.seq // 2:] = 0  # one padded row, as a tokenizer's batch has
    inputs = dict(input_ids=ids.to(args.device), attention_mask=mask.to(args.device))
    value_bytes = 2 if args.autocast else 4
    description = device_description() if args.device == "cuda" else dict(device=cpu_description(),
                                                                           torch=torch.__version__)
    rows = []
    for implementation, backend in IMPLEMENTATIONS.items():
        counts = {}
        for n_layers in (1, 2):
            config_kwargs = dict(vocab_size=1000, emb_dim=args.emb_dim, n_layers=n_layers, n_heads=args.heads,
                                 max_position_embeddings=max(512, args.seq), dropout=args.dropout,
                                 attention_dropout=args.dropout)
            torch.manual_seed(0)
            state = xlm_fast.XLMModel(xlm_fast.XLMConfig(**config_kwargs)).state_dict()
            model = build(implementation, config_kwargs, state, args.device)
            if backend is not None:
                os.environ["XLM_FAST_BACKEND"] = backend
            counts[n_layers] = saved_bytes(model, inputs, args.autocast)
        per_layer = counts[2] - counts[1]
        rows.append(dict(description, implementation=implementation, emb_dim=args.emb_dim,
                         heads=args.heads, batch=args.batch, seq=args.seq, dropout=args.dropout,
                         autocast=args.autocast, one_layer_bytes=counts[1], per_layer_bytes=per_layer,
                         bytes_per_token_layer=per_layer / tokens,
                         emb_dim_values_per_token_layer=per_layer / tokens / args.emb_dim / value_bytes))
    reference = rows[-1]["per_layer_bytes"]
    for row in rows:
        row["ratio_to_hf_eager"] = row["per_layer_bytes"] / reference
    columns = ["implementation", "emb_dim", "heads", "batch", "seq", "dropout", "autocast", "one_layer_bytes",
               "per_layer_bytes", "bytes_per_token_layer", "emb_dim_values_per_token_layer", "ratio_to_hf_eager"]
    write_results(args.out_dir, "saved_bytes_xlm_train", rows, columns,
                  "Bytes saved for backward per layer, one XLMModel training forward")


if __name__ == "__main__":
    main()
