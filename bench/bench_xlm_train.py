"""One training step (forward + backward + AdamW) of XLMWithLMHeadModel with MLM labels
and of XLMForSequenceClassification: xlm_fast ("ours") vs transformers eager
("hf_eager") and torch.compile of it ("hf_compile"), in the same run.

Script: `python bench/bench_xlm_train.py [--out-dir DIR] [--cases ...] [--no-compile]
[--compile-cases ...] [--warmup N] [--steps N] [--dropout P] [--stem NAME]` writes
xlm_train.json / .md (rewritten after every implementation, so an interrupted run keeps
what it measured). `--device cpu --tiny` runs the same code on a tiny config (2 layers,
dim 64, batch 2 x 16, fp32, no autocast) to check the script's logic without a GPU.

Each case starts from one random state dict (en-2048 shapes), loaded into each
implementation in turn; fp32 parameters, forward + loss under bf16 autocast (CUDA),
torch.optim.AdamW (fused on CUDA) and zero_grad(set_to_none=True), model.train() with
the config's dropout unless --dropout. Nothing chooses xlm_fast's path: backend.py
decides per call, and the row records what it chose (ours_path). Inputs carry an
attention_mask, as a tokenizer gives one; the *-var case has lengths uniform in
seq/4..seq (padding ids and -100 labels after each row's length).
Per row: median ms per step (CUDA events, after the warm-up steps, which include
torch.compile's compilation), tokens/s (batch * seq positions), peak GPU memory of the
timed steps (max_memory_allocated after reset_peak_memory_stats; includes the weights,
AdamW's state and gradients), the memory allocated before them (weights + AdamW
state) and the floor any implementation reaches at its optimizer step (16 bytes per
parameter: fp32 weight, gradient, two moments), our speed-up and memory ratio against
each baseline, and the loss of each implementation's first step (same weights, batch
and torch seed) with its relative difference to hf_eager's: bf16-close without dropout;
with dropout the masks differ (other RNG streams in the fused or compiled code), so
only roughly.
Each implementation is freed (models, optimizer, compile caches) before the next is
built, so each peak is its own.
"""
import argparse
import gc
import statistics
import time

import torch
from bench_xlm_model import MODEL_CONFIGS, PAD_ID

from common import RESULTS_DIR, cpu_description, device_description, patched, require_cuda_or_exit, write_results

TINY_CONFIG = dict(vocab_size=1000, emb_dim=64, n_layers=2, n_heads=4, max_position_embeddings=64)
# name -> (head: "mlm" or "cls", batch, seq, whether lengths are uniform in seq/4..seq)
CASES = {"mlm-16x256": ("mlm", 16, 256, False), "cls-32x128": ("cls", 32, 128, False),
         "mlm-16x256-var": ("mlm", 16, 256, True)}
HEADLINE_CASES = ["mlm-16x256", "cls-32x128"]
TINY_SHAPE = (2, 16)  # (batch, seq) of every case under --tiny
IMPLEMENTATIONS = ["ours", "hf_eager", "hf_compile"]
BASELINES = ["hf_eager", "hf_compile"]
MLM_PROBABILITY = 0.15
NUM_LABELS = 3


def model_config(base, head, dropout):
    config = dict(base, num_labels=NUM_LABELS) if head == "cls" else dict(base)
    if dropout is not None:  # else the config's defaults (0.1, as the XLM checkpoints)
        config.update(dropout=dropout, attention_dropout=dropout, summary_first_dropout=dropout)
    return config


def model_class(library, head):
    return library.XLMWithLMHeadModel if head == "mlm" else library.XLMForSequenceClassification


def initial_state(head, config, device):
    """(random weights of transformers' model, kept on the CPU off the GPU peaks; its number
    of parameters, tied ones once)."""
    import transformers

    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(transformers, head)(transformers.XLMConfig(**config))
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return state, sum(parameter.numel() for parameter in model.parameters())


def make_batch(head, batch, seq, variable_lengths, vocab_size, device, seed=0):
    """input_ids, attention_mask (batch, seq) and labels: MLM, the token id at ~15% of the
    valid positions (at least one per row) and -100 elsewhere; classification, (batch,)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, seq), device=device, generator=generator)
    if variable_lengths:
        lengths = torch.randint(max(1, seq // 4), seq + 1, (batch,), device=device, generator=generator)
    else:
        lengths = torch.full((batch,), seq, device=device)
    valid = torch.arange(seq, device=device)[None, :] < lengths[:, None]
    input_ids = input_ids.masked_fill(~valid, PAD_ID)
    if head == "mlm":
        chosen = (torch.rand((batch, seq), device=device, generator=generator) < MLM_PROBABILITY) & valid
        chosen[:, 0] = True
        labels = input_ids.masked_fill(~chosen, -100)
    else:
        labels = torch.randint(0, NUM_LABELS, (batch,), device=device, generator=generator)
    return dict(input_ids=input_ids, attention_mask=valid.long(), labels=labels)


def build(implementation, head, config, state, device):
    """(model to call, optimizer) for one implementation, loaded with `state`, in train mode."""
    import transformers

    import xlm_fast

    library = xlm_fast if implementation == "ours" else transformers
    with torch.device(device):
        model = model_class(library, head)(library.XLMConfig(**config))
    model.load_state_dict(state)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    return (torch.compile(model) if implementation == "hf_compile" else model), optimizer


def train_step(model, optimizer, batch, autocast):
    """Forward + loss (under CUDA bf16 autocast when `autocast`), backward, AdamW; the loss."""
    with torch.autocast("cuda" if autocast else "cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def timed_ms(step, steps, device):
    """Each step's time in ms: CUDA events (no synchronisation between steps) or the CPU clock."""
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for start, end in events:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def measure(implementation, head, config, state, batch, device, autocast, warmup, steps):
    """{ms, peak_gb, static_gb, first_loss[, path]} of one implementation's training step."""
    import xlm_fast

    model, optimizer = build(implementation, head, config, state, device)
    result = {}
    paths = []
    select_backend = xlm_fast.backend.select_backend

    def recording_select_backend(*args, **kwargs):  # observes backend.py's choice, changes nothing
        paths.append(select_backend(*args, **kwargs))
        return paths[-1]

    torch.manual_seed(0)  # the same dropout stream for every implementation's first step
    with patched(xlm_fast.backend, "select_backend", recording_select_backend):
        result["first_loss"] = train_step(model, optimizer, batch, autocast).item()
    if implementation == "ours":
        result["path"] = "+".join(sorted(set(paths)))
    for _ in range(warmup):  # torch.compile compiles here; AdamW's state is allocated by now
        train_step(model, optimizer, batch, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result["static_gb"] = torch.cuda.memory_allocated() / 2**30
    result["ms"] = statistics.median(timed_ms(lambda: train_step(model, optimizer, batch, autocast), steps, device))
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def free_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_case(case_name, args, device, on_update):
    head, batch_size, seq, variable = CASES[case_name]
    if args.tiny:
        batch_size, seq = TINY_SHAPE
    config = model_config(TINY_CONFIG if args.tiny else MODEL_CONFIGS["en-2048"], head, args.dropout)
    autocast = device.type == "cuda"
    implementations = [name for name in IMPLEMENTATIONS
                       if name != "hf_compile" or (not args.no_compile and case_name in args.compile_cases)]
    description = device_description() if device.type == "cuda" else dict(device=cpu_description(),
                                                                           torch=torch.__version__)
    row = dict(description, model="tiny" if args.tiny else "en-2048", case=case_name, head=head,
               dtype="fp32 params, bf16 autocast" if autocast else "fp32", batch=batch_size, seq=seq,
               variable_lengths=variable, dropout=config.get("dropout", "config default (0.1)"), warmup=args.warmup,
               steps=args.steps)
    state, n_parameters = initial_state(head, config, device)
    free_memory(device)
    # fp32 weights, gradients and AdamW's two moments: what any implementation holds at its optimizer step
    row.update(parameters=n_parameters, state_floor_gb=n_parameters * 16 / 2**30)
    batch = make_batch(head, batch_size, seq, variable, config["vocab_size"], device)
    for name in implementations:
        try:
            result = measure(name, head, config, state, batch, device, autocast, args.warmup, args.steps)
        except Exception as error:  # noqa: BLE001 - recorded in the table, the other implementations go on
            result = dict(error=f"{type(error).__name__}: {str(error)[:120]}")
        if name == "hf_compile":
            torch._dynamo.reset()  # drops the compiled graphs before the next build
        free_memory(device)
        row.update({f"{name}_{key}": value for key, value in result.items()})
        update_ratios(row, batch_size * seq)
        on_update(row)
    del state
    free_memory(device)


def update_ratios(row, tokens):
    ours_ms, ours_peak = row.get("ours_ms"), row.get("ours_peak_gb")
    if ours_ms is not None:
        row["tokens_per_s"] = tokens / (ours_ms / 1e3)
    reference_loss = row.get("hf_eager_first_loss")
    for name in IMPLEMENTATIONS:
        if reference_loss is not None and f"{name}_first_loss" in row and name != "hf_eager":
            row[f"{name}_loss_rel_diff"] = abs(row[f"{name}_first_loss"] - reference_loss) / abs(reference_loss)
    for name in BASELINES:
        if ours_ms is not None and f"{name}_ms" in row:
            row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / ours_ms
        if ours_peak is not None and f"{name}_peak_gb" in row:
            row[f"memory_ratio_vs_{name}"] = ours_peak / row[f"{name}_peak_gb"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--compile-cases", nargs="+", choices=list(CASES), default=HEADLINE_CASES,
                        help="cases that also time torch.compile of transformers (each compiles anew, ~1 min)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (loss) step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout, attention_dropout and summary_first_dropout (default: the config's, 0.1)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: checks the script's logic (fp32, no autocast), measures nothing of interest")
    parser.add_argument("--tiny", action="store_true", help=f"tiny config {TINY_CONFIG}, batch x seq {TINY_SHAPE}")
    parser.add_argument("--stem", default=None, help="output file name stem (default xlm_train, xlm_train_tiny)")
    args = parser.parse_args()
    if args.device == "cuda":
        require_cuda_or_exit("bench_xlm_train.py")
    device = torch.device(args.device)
    stem = args.stem or ("xlm_train_tiny" if args.tiny else "xlm_train")

    rows = []
    columns = ["case", "batch", "seq", "dtype", "ours_path", "ours_ms", "tokens_per_s", "ours_peak_gb", "hf_eager_ms",
               "hf_eager_peak_gb", "hf_compile_ms", "hf_compile_peak_gb", "speedup_vs_hf_eager",
               "speedup_vs_hf_compile", "memory_ratio_vs_hf_eager", "memory_ratio_vs_hf_compile", "ours_static_gb",
               "state_floor_gb",
               "hf_eager_first_loss", "ours_loss_rel_diff", "hf_compile_loss_rel_diff", "dropout",
               "ours_error", "hf_eager_error", "hf_compile_error"]

    def on_update(row):  # the row is updated in place after each implementation
        if not rows or rows[-1] is not row:
            rows.append(row)
        write_results(args.out_dir, stem, rows, columns, "XLM training step: xlm_fast vs baselines")

    for case_name in args.cases:
        bench_case(case_name, args, device, on_update)


if __name__ == "__main__":
    main()
