"""The PyTorch path against transformers' XLM in fp32 (relative error < 1e-5), for every
head and forward argument, plus head_mask against an independent oracle and the
decoding cache against the full forward."""

import json
import warnings

import pytest
import torch
import transformers

import xlm_fast
from xlm_fast.configuration_xlm import SUMMARY_ACTIVATIONS

from conftest import CONFIGS, make_twins, random_batch, relative_error

TOLERANCE = 1e-5


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < TOLERANCE


def compare_outputs(hf_out, our_out, fields):
    for field in fields:
        expected, actual = getattr(hf_out, field), getattr(our_out, field)
        if isinstance(expected, tuple):
            assert len(actual) == len(expected)
            for a, e in zip(actual, expected):
                assert_close(a, e)
        elif expected is None:
            assert actual is None, field
        elif expected.dtype in (torch.long, torch.int):
            assert torch.equal(actual, expected), field
        else:
            assert_close(actual, expected)


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_base_model_matches_transformers(config_name):
    hf_model, ours = make_twins("XLMModel", config_name)
    ids, mask = random_batch(config_name)
    kwargs = dict(attention_mask=mask, output_hidden_states=True, output_attentions=True)
    if CONFIGS[config_name].get("n_langs", 1) > 1:
        kwargs["langs"] = torch.randint(0, CONFIGS[config_name]["n_langs"], ids.shape)
    compare_outputs(hf_model(ids, **kwargs), ours(ids, **kwargs), ["last_hidden_state", "hidden_states", "attentions"])


@pytest.mark.parametrize(
    "arguments",
    ["lengths", "token_type_ids", "position_ids", "inputs_embeds", "no_mask", "langs", "batch_one", "fully_padded"],
)
def test_forward_arguments_match_transformers(arguments):
    config_name = "multilingual"
    hf_model, ours = make_twins("XLMModel", config_name)
    ids, mask = random_batch(config_name, seq=11)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if arguments == "lengths":
        kwargs = {"input_ids": ids, "lengths": torch.tensor([11, 8, 5])}
    elif arguments == "token_type_ids":
        kwargs["token_type_ids"] = torch.randint(0, 2, ids.shape)
    elif arguments == "position_ids":
        kwargs["position_ids"] = torch.randint(0, 40, ids.shape)
    elif arguments == "inputs_embeds":
        kwargs = {"inputs_embeds": torch.randn(3, 11, 32), "attention_mask": mask}
    elif arguments == "no_mask":
        kwargs = {"input_ids": ids}  # lengths come from the pad id
    elif arguments == "langs":
        kwargs["langs"] = torch.randint(0, 3, ids.shape)
    elif arguments == "batch_one":
        kwargs = {"input_ids": ids[:1], "attention_mask": mask[:1]}
    elif arguments == "fully_padded":
        mask[2] = 0
    compare_outputs(hf_model(**kwargs), ours(**kwargs), ["last_hidden_state"])


def test_return_dict_false_gives_the_same_tuple():
    hf_model, ours = make_twins("XLMModel")
    ids, mask = random_batch()
    expected = hf_model(ids, attention_mask=mask, output_hidden_states=True, return_dict=False)
    actual = ours(ids, attention_mask=mask, output_hidden_states=True, return_dict=False)
    assert isinstance(actual, tuple) and len(actual) == len(expected) == 2
    assert_close(actual[0], expected[0])


@pytest.mark.parametrize("config_name", ["base", "causal"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_lm_head_matches_transformers(config_name, with_labels):
    hf_model, ours = make_twins("XLMWithLMHeadModel", config_name)
    assert ours.pred_layer.proj.weight is ours.transformer.embeddings.weight
    ids, mask = random_batch(config_name)
    labels = ids.masked_fill(mask == 0, -100) if with_labels else None
    compare_outputs(hf_model(ids, attention_mask=mask, labels=labels),
                    ours(ids, attention_mask=mask, labels=labels), ["loss", "logits"])
    tuple_out = ours(ids, attention_mask=mask, labels=labels, return_dict=False)
    assert len(tuple_out) == (2 if with_labels else 1)


def test_adaptive_softmax_lm_head_matches_transformers():
    hf_model, ours = make_twins("XLMWithLMHeadModel", asm=True, asm_cutoffs=[20, 60], asm_div_value=2.0)
    ids, mask = random_batch()
    labels = ids.clone()
    # transformers' adaptive softmax fails on (batch, seq, dim) inputs: feed it 2-D rows.
    hidden = hf_model.transformer(ids, attention_mask=mask).last_hidden_state.reshape(-1, 32)
    expected_loss, expected_scores = hf_model.pred_layer(hidden, labels.reshape(-1))
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.loss, expected_loss)
    assert_close(out.logits.reshape(-1, 101), expected_scores)
    logits = ours(ids, attention_mask=mask).logits
    assert logits.shape == (3, 9, 101)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(3, 9), atol=1e-5)  # log-probabilities


@pytest.mark.parametrize(
    "num_labels,problem_type,label_kind",
    [(1, None, "float"), (3, None, "long"), (3, None, "multi"), (4, "multi_label_classification", "multi")],
)
@pytest.mark.parametrize("summary_type", ["first", "last", "mean", "cls_index"])
def test_sequence_classification_matches_transformers(num_labels, problem_type, label_kind, summary_type):
    hf_model, ours = make_twins(
        "XLMForSequenceClassification", num_labels=num_labels, problem_type=problem_type,
        summary_type=summary_type, summary_activation="tanh", summary_first_dropout=0.2,
    )
    ids, mask = random_batch()
    labels = {
        "float": torch.randn(3),
        "long": torch.randint(0, num_labels, (3,)),
        "multi": torch.randint(0, 2, (3, num_labels)).float(),
    }[label_kind]
    hf_out = hf_model(ids, attention_mask=mask, labels=labels)
    our_out = ours(ids, attention_mask=mask, labels=labels)
    compare_outputs(hf_out, our_out, ["loss", "logits"])
    assert ours.config.problem_type == hf_model.config.problem_type


def test_sequence_summary_without_projection():
    hf_model, ours = make_twins("XLMForSequenceClassification", summary_use_proj=False, summary_type="mean")
    ids, mask = random_batch()
    compare_outputs(hf_model(ids, attention_mask=mask), ours(ids, attention_mask=mask), ["logits"])


def test_token_classification_matches_transformers():
    hf_model, ours = make_twins("XLMForTokenClassification", num_labels=5)
    ids, mask = random_batch()
    labels = torch.randint(0, 5, ids.shape)
    compare_outputs(hf_model(ids, attention_mask=mask, labels=labels),
                    ours(ids, attention_mask=mask, labels=labels), ["loss", "logits"])


def test_multiple_choice_matches_transformers():
    hf_model, ours = make_twins("XLMForMultipleChoice", "multilingual", num_labels=1)
    ids = torch.randint(4, 120, (2, 3, 7))
    mask = torch.ones_like(ids)
    mask[1, 2, 4:] = 0
    langs = torch.randint(0, 3, ids.shape)
    labels = torch.tensor([0, 2])
    kwargs = dict(attention_mask=mask, langs=langs, token_type_ids=torch.randint(0, 2, ids.shape), labels=labels)
    compare_outputs(hf_model(ids, **kwargs), ours(ids, **kwargs), ["loss", "logits"])
    embeds = torch.randn(2, 3, 7, 32)
    compare_outputs(hf_model(inputs_embeds=embeds), ours(inputs_embeds=embeds), ["logits"])


def test_multiple_choice_rejects_lengths():
    _, ours = make_twins("XLMForMultipleChoice")
    with pytest.raises(ValueError, match="lengths"):
        ours(torch.randint(4, 90, (1, 2, 5)), lengths=torch.tensor([5, 5]))


@pytest.mark.parametrize("positions", ["inside", "outside"])
def test_question_answering_simple_matches_transformers(positions):
    hf_model, ours = make_twins("XLMForQuestionAnsweringSimple")
    ids, mask = random_batch()
    start = torch.tensor([1, 2, 3]) if positions == "inside" else torch.tensor([1, 50, 3])
    end = torch.tensor([[4], [5], [6]])
    compare_outputs(hf_model(ids, attention_mask=mask, start_positions=start, end_positions=end),
                    ours(ids, attention_mask=mask, start_positions=start, end_positions=end),
                    ["loss", "start_logits", "end_logits"])


@pytest.mark.parametrize("with_p_mask", [False, True])
@pytest.mark.parametrize("with_cls_index", [False, True])
def test_squad_head_inference_matches_transformers(with_p_mask, with_cls_index):
    hf_model, ours = make_twins("XLMForQuestionAnswering", start_n_top=3, end_n_top=2)
    ids, mask = random_batch()
    p_mask = (torch.rand(ids.shape) < 0.3).float() if with_p_mask else None
    cls_index = torch.tensor([0, 3, 8]) if with_cls_index else None
    fields = ["start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index", "cls_logits"]
    compare_outputs(hf_model(ids, attention_mask=mask, p_mask=p_mask, cls_index=cls_index),
                    ours(ids, attention_mask=mask, p_mask=p_mask, cls_index=cls_index), fields)
    assert len(ours(ids, attention_mask=mask, return_dict=False)) == 5


@pytest.mark.parametrize("with_answerability", [False, True])
def test_squad_head_loss_matches_transformers(with_answerability):
    hf_model, ours = make_twins("XLMForQuestionAnswering")
    ids, mask = random_batch()
    kwargs = dict(attention_mask=mask, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([4, 5, 6]))
    if with_answerability:
        kwargs.update(cls_index=torch.tensor([0, 0, 1]), is_impossible=torch.tensor([0.0, 1.0, 0.0]))
    compare_outputs(hf_model(ids, **kwargs), ours(ids, **kwargs), ["loss"])


def head_mask_oracle(hf_model, head_mask, *args, **kwargs):
    """transformers 5 has no head_mask: scale each head's context, the input of out_lin,
    with forward pre-hooks, which is what head_mask means."""
    n_heads = hf_model.config.n_heads
    handles = []
    for layer, attention in enumerate(hf_model.attentions):
        def scale(module, inputs, layer=layer):
            (context,) = inputs
            bs, qlen, dim = context.shape
            scaled = context.view(bs, qlen, n_heads, dim // n_heads) * head_mask[layer].view(1, 1, -1, 1)
            return (scaled.view(bs, qlen, dim),)

        handles.append(attention.out_lin.register_forward_pre_hook(scale))
    try:
        return hf_model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("shape", ["per_head", "per_layer"])
@pytest.mark.parametrize("config_name", ["base", "causal", "sinusoidal"])
def test_head_mask_matches_independent_oracle(shape, config_name):
    hf_model, ours = make_twins("XLMModel", config_name)
    n_layers, n_heads = CONFIGS[config_name]["n_layers"], CONFIGS[config_name]["n_heads"]
    full = torch.rand(n_layers, n_heads)
    full[0, 0] = 0.0
    head_mask = full[0] if shape == "per_head" else full
    expanded = full[0].expand(n_layers, n_heads) if shape == "per_head" else full
    ids, mask = random_batch(config_name)
    expected = head_mask_oracle(hf_model, expanded, ids, attention_mask=mask).last_hidden_state
    actual = ours(ids, attention_mask=mask, head_mask=head_mask).last_hidden_state
    assert_close(actual, expected)
    assert relative_error(actual, ours(ids, attention_mask=mask).last_hidden_state) > 1e-3


def test_head_mask_of_ones_changes_nothing_and_scales_attentions():
    _, ours = make_twins("XLMModel")
    ids, mask = random_batch()
    plain = ours(ids, attention_mask=mask, output_attentions=True)
    ones = ours(ids, attention_mask=mask, head_mask=torch.ones(4), output_attentions=True)
    assert torch.equal(plain.last_hidden_state, ones.last_hidden_state)
    half = ours(ids, attention_mask=mask, head_mask=torch.full((4,), 0.5), output_attentions=True)
    assert torch.allclose(half.attentions[0], plain.attentions[0] * 0.5)


@pytest.mark.parametrize("steps", [[5, 1, 1, 1], [3, 4], [1, 1, 1, 1, 1, 1, 1, 1]])
def test_cache_gives_the_full_forward_hidden_states(steps):
    _, ours = make_twins("XLMModel", "causal")
    total = sum(steps)
    ids = torch.randint(4, 101, (2, total))
    full = ours(ids).last_hidden_state
    cache = {"slen": 0}
    pieces, end = [], 0
    for step in steps:
        end += step
        out = ours(ids[:, :end], cache=cache).last_hidden_state
        assert out.shape == (2, step, 24)
        assert cache["slen"] == end
        pieces.append(out)
    assert_close(torch.cat(pieces, dim=1), full)
    assert set(cache) == {"slen", 0, 1}


def test_cache_accepts_an_empty_dict_and_multilingual_inputs():
    _, ours = make_twins("XLMModel", "multilingual", causal=True)
    ids = torch.randint(4, 120, (2, 6))
    langs = torch.randint(0, 3, (2, 6))
    full = ours(ids, langs=langs).last_hidden_state
    cache = {}
    first = ours(ids[:, :4], langs=langs[:, :4], cache=cache).last_hidden_state
    second = ours(ids, langs=langs, cache=cache).last_hidden_state
    assert_close(torch.cat([first, second], dim=1), full)


def test_output_fields_behave_like_model_output():
    _, ours = make_twins("XLMForSequenceClassification", num_labels=3)
    ids, mask = random_batch()
    out = ours(ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]), output_hidden_states=True)
    assert out[0] is out.loss is out["loss"]
    assert out[1] is out.logits
    assert list(out.keys()) == ["loss", "logits", "hidden_states"]
    assert len(out.to_tuple()) == 3
    with pytest.raises(KeyError):
        out["attentions"]
    assert out.attentions is None


def test_dropout_is_active_in_training_and_gradients_flow():
    _, ours = make_twins("XLMForSequenceClassification", num_labels=3)
    ids, mask = random_batch()
    ours.train()
    first = ours(ids, attention_mask=mask).logits
    second = ours(ids, attention_mask=mask).logits
    assert not torch.equal(first, second)
    out = ours(ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert ours.transformer.attentions[0].q_lin.weight.grad is not None


def test_chunked_feed_forward_matches_unchunked():
    _, ours = make_twins("XLMModel")
    ids, mask = random_batch(seq=13)
    expected = ours(ids, attention_mask=mask).last_hidden_state
    ours.config.chunk_size_feed_forward = 4
    for ffn in ours.ffns:
        ffn.chunk_size_feed_forward = 4
    assert_close(ours(ids, attention_mask=mask).last_hidden_state, expected)


def test_weight_initialisation_follows_transformers_scheme():
    config = xlm_fast.XLMConfig(**dict(CONFIGS["sinusoidal"], init_std=0.05, embed_init_std=0.1, vocab_size=400))
    model = xlm_fast.XLMWithLMHeadModel(config)
    hf_table = transformers_sinusoidal_table(config.max_position_embeddings, config.emb_dim)
    assert torch.equal(model.transformer.position_embeddings.weight, hf_table)
    embeddings = model.transformer.embeddings.weight
    assert torch.all(embeddings[config.pad_index] == 0)
    assert abs(embeddings.std().item() - 0.1) < 0.01
    lin = model.transformer.ffns[0].lin1
    assert abs(lin.weight.std().item() - 0.05) < 0.005 and torch.all(lin.bias == 0)
    norm = model.transformer.layer_norm1[0]
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert model.pred_layer.proj.weight is embeddings


def transformers_sinusoidal_table(n_pos, dim):
    from transformers.models.xlm.modeling_xlm import create_sinusoidal_embeddings

    return create_sinusoidal_embeddings(n_pos, dim, torch.empty(n_pos, dim))


def test_no_gradient_forward_matches_eval_forward():
    _, ours = make_twins("XLMModel")
    ids, mask = random_batch()
    with torch.no_grad():
        expected = ours(ids, attention_mask=mask).last_hidden_state
    assert torch.equal(ours(ids, attention_mask=mask).last_hidden_state, expected)


def bad_input_cases():
    ids = torch.randint(4, 120, (2, 6))
    return [
        (dict(input_ids=torch.tensor([[4, 120]])), ValueError, "input_ids"),
        (dict(input_ids=torch.tensor([[4, -1]])), ValueError, "input_ids"),
        (dict(input_ids=ids.float()), TypeError, "input_ids"),
        (dict(input_ids=ids[0]), ValueError, "input_ids"),
        (dict(input_ids=[[4, 5]]), TypeError, "input_ids"),
        (dict(input_ids=torch.randint(4, 120, (1, 41))), ValueError, "max_position_embeddings"),
        (dict(input_ids=ids, langs=torch.full((2, 6), 3)), ValueError, "langs"),
        (dict(input_ids=ids, langs=torch.zeros(2, 5, dtype=torch.long)), ValueError, "langs"),
        (dict(input_ids=ids, lengths=torch.tensor([7, 3])), ValueError, "lengths"),
        (dict(input_ids=ids, lengths=torch.tensor([6])), ValueError, "lengths"),
        (dict(input_ids=ids, attention_mask=torch.ones(2, 7)), ValueError, "attention_mask"),
        (dict(input_ids=ids, token_type_ids=torch.full((2, 6), 500)), ValueError, "token_type_ids"),
        (dict(input_ids=ids, position_ids=torch.full((2, 6), 40)), ValueError, "position_ids"),
        (dict(input_ids=ids, inputs_embeds=torch.randn(2, 6, 32)), ValueError, "inputs_embeds"),
        (dict(), ValueError, "input_ids"),
        (dict(inputs_embeds=torch.randn(2, 6, 31)), ValueError, "inputs_embeds"),
        (dict(input_ids=ids, head_mask=torch.ones(3)), ValueError, "head_mask"),
        (dict(input_ids=ids, head_mask=torch.ones(2, 4)), ValueError, "head_mask"),
        (dict(input_ids=ids, cache=[]), TypeError, "cache"),
        (dict(input_ids=ids, cache={"slen": 6}), ValueError, "cache"),
        (dict(input_ids=ids, cache={"slen": 0, 0: 5}), ValueError, r"cache\[0\]"),
        (dict(input_ids=ids, cache={"slen": 0, 0: (torch.zeros(2, 4, 3, 8), torch.zeros(2, 4, 3, 8))}), ValueError,
         r"cache\[0\]"),
        (dict(input_ids=torch.zeros(0, 6, dtype=torch.long)), ValueError, "input_ids"),
        (dict(inputs_embeds=torch.randn(0, 6, 32)), ValueError, "inputs_embeds"),
        # dtypes nn.Embedding refuses without naming the argument
        (dict(input_ids=ids.to(torch.int8)), TypeError, "input_ids"),
        (dict(input_ids=ids, langs=torch.zeros(2, 6, dtype=torch.int16)), TypeError, "langs"),
        (dict(input_ids=ids, position_ids=torch.zeros(2, 6, dtype=torch.uint8)), TypeError, "position_ids"),
        (dict(input_ids=ids, token_type_ids=torch.zeros(2, 6, dtype=torch.bool)), TypeError, "token_type_ids"),
        (dict(input_ids=ids, lengths=torch.tensor([6.0, 3.0])), TypeError, "lengths"),
        (dict(input_ids=ids, lengths=torch.tensor([[6], [3]])), ValueError, "lengths"),
        (dict(input_ids=ids, lengths=torch.tensor([6, -1])), ValueError, "lengths"),
        (dict(inputs_embeds=torch.randn(2, 6, 32, dtype=torch.float64)), TypeError, "inputs_embeds"),
        (dict(input_ids=ids, head_mask=[1.0] * 4), TypeError, "head_mask"),
        (dict(input_ids=ids, attention_mask=[[1] * 6] * 2), TypeError, "attention_mask"),
        # tensors on another device than the model (meta stands in for a GPU here)
        (dict(input_ids=ids.to("meta")), ValueError, "input_ids"),
        (dict(input_ids=ids, attention_mask=torch.ones(2, 6, device="meta")), ValueError, "attention_mask"),
        (dict(input_ids=ids, head_mask=torch.ones(4, device="meta")), ValueError, "head_mask"),
        # truthy strings would pass for True
        (dict(input_ids=ids, output_attentions="no"), TypeError, "output_attentions"),
        (dict(input_ids=ids, return_dict="no"), TypeError, "return_dict"),
        # a cache that forward did not fill: missing layers would attend to the new tokens alone
        (dict(input_ids=ids, cache={"slen": 3}), ValueError, r"cache\['slen'\]"),
        (dict(input_ids=ids, cache={"slen": True}), ValueError, r"cache\['slen'\]"),
        (dict(input_ids=ids, cache={"slen": 0, 7: ()}), ValueError, "cache keys"),
        (dict(input_ids=ids, cache={"slen": 2, **{layer: (torch.zeros(1, 4, 2, 8),) * 2 for layer in range(3)}}),
         ValueError, r"cache\[0\]"),
    ]


@pytest.mark.parametrize("case", range(len(bad_input_cases())))
def test_bad_input_is_rejected_naming_the_argument(case):
    kwargs, error, name = bad_input_cases()[case]
    _, ours = make_twins("XLMModel", "multilingual")
    with pytest.raises(error, match=name):
        ours(**kwargs)


@pytest.mark.parametrize("seed", range(8))
def test_random_configurations_match_transformers(seed):
    """Random shapes and options (head counts, causal, languages, activations, padding)."""
    rng = torch.Generator().manual_seed(seed)
    pick = lambda *options: options[int(torch.randint(len(options), (1,), generator=rng))]  # noqa: E731
    n_heads, head_dim = pick(1, 2, 3, 5, 7), pick(4, 6, 8)
    config = dict(vocab_size=pick(50, 97), emb_dim=n_heads * head_dim, n_layers=pick(1, 2, 3), n_heads=n_heads,
                  causal=pick(False, True), n_langs=pick(1, 2, 4), gelu_activation=pick(True, False),
                  sinusoidal_embeddings=pick(False, True), max_position_embeddings=32)
    torch.manual_seed(seed)
    hf_model = transformers.XLMModel(transformers.XLMConfig(**config)).eval()
    ours = xlm_fast.XLMModel(xlm_fast.XLMConfig(**config)).eval()
    ours.load_checkpoint(hf_model.state_dict())
    batch, seq = pick(1, 2, 5), pick(1, 3, 17, 32)
    ids = torch.randint(3, config["vocab_size"], (batch, seq), generator=rng)
    lengths = torch.randint(0, seq + 1, (batch,), generator=rng)
    kwargs = dict(lengths=lengths, output_hidden_states=True)
    if config["n_langs"] > 1:
        kwargs["langs"] = torch.randint(0, config["n_langs"], (batch, seq), generator=rng)
    compare_outputs(hf_model(ids, **kwargs), ours(ids, **kwargs), ["last_hidden_state", "hidden_states"])


@pytest.mark.parametrize("head", ["XLMModel", "XLMWithLMHeadModel", "XLMForTokenClassification",
                                  "XLMForQuestionAnsweringSimple"])
def test_zero_length_sequences_give_an_empty_output_like_transformers(head):
    """Per-token outputs of no tokens are well defined: empty, with transformers' shapes."""
    hf_model, ours = make_twins(head, "multilingual")
    ids = torch.zeros(2, 0, dtype=torch.long)
    expected, actual = hf_model(ids), ours(ids)
    assert list(actual.keys()) == list(expected.keys())
    for key in expected.keys():
        assert actual[key].shape == expected[key].shape, key
    assert ours(inputs_embeds=torch.zeros(2, 0, 32))[0].shape[:2] == (2, 0)


@pytest.mark.parametrize("head", ["XLMForSequenceClassification", "XLMForQuestionAnswering"])
@pytest.mark.parametrize("primary", ["input_ids", "inputs_embeds"])
def test_zero_length_sequences_are_refused_by_heads_that_pool_tokens(head, primary):
    """One output per sequence from no tokens has no meaning (transformers raises an
    IndexError, or gives NaN for summary_type='mean')."""
    _, ours = make_twins(head, "base")
    inputs = torch.zeros(2, 0, dtype=torch.long) if primary == "input_ids" else torch.zeros(2, 0, 32)
    with pytest.raises(ValueError, match=primary):
        ours(**{primary: inputs})


@pytest.mark.parametrize("head", ["XLMWithLMHeadModel", "XLMForSequenceClassification", "XLMForTokenClassification",
                                  "XLMForQuestionAnsweringSimple", "XLMForQuestionAnswering"])
def test_empty_batches_are_refused_by_every_head(head):
    _, ours = make_twins(head, "base")
    with pytest.raises(ValueError, match="input_ids"):
        ours(torch.zeros(0, 9, dtype=torch.long))


def test_pad_token_id_none_means_every_position_is_a_token():
    """transformers fails on `input_ids != None`; with no pad id nothing is padding."""
    _, ours = make_twins("XLMModel", "base")
    ids, _ = random_batch("base")
    unset = xlm_fast.XLMModel(xlm_fast.XLMConfig(**dict(CONFIGS["base"], pad_token_id=None))).eval()
    unset.load_checkpoint(ours.state_dict())
    expected = ours(ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.equal(unset(ids).last_hidden_state, expected)


@pytest.mark.parametrize("head,overrides,kwargs", [
    ("XLMWithLMHeadModel", {}, dict(labels="ids")),
    ("XLMForTokenClassification", dict(num_labels=4), dict(labels=torch.arange(27).view(3, 9) % 4)),
    ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=torch.tensor([2, 0, 1]))),
    ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([4, 5, 6]),
                                         cls_index=torch.tensor([0, 0, 1]))),
])
def test_int32_labels_give_the_int64_loss(head, overrides, kwargs):
    """The losses need int64; int32 ids (which transformers' loss refuses) are converted."""
    _, ours = make_twins(head, "base", **overrides)
    ids, mask = random_batch("base", batch=3, seq=9)
    kwargs = {key: ids if value == "ids" else value for key, value in kwargs.items()}
    narrow = {key: value.int() for key, value in kwargs.items()}
    expected = ours(ids, attention_mask=mask, **kwargs).loss
    assert torch.equal(ours(ids, attention_mask=mask, **narrow).loss, expected)


def bad_label_cases():
    """(head, extra config, forward arguments beside input_ids (3, 9), error, argument named)."""
    long = torch.long
    return [
        ("XLMWithLMHeadModel", {}, dict(labels=torch.full((3, 9), 101)), ValueError, "labels"),
        ("XLMWithLMHeadModel", {}, dict(labels=torch.zeros(3, 8, dtype=long)), ValueError, "labels"),
        ("XLMWithLMHeadModel", {}, dict(labels=torch.zeros(3, 9)), TypeError, "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=torch.tensor([0, 3, 1])), ValueError,
         "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=torch.tensor([0, 1])), ValueError, "labels"),
        ("XLMForSequenceClassification", dict(num_labels=1), dict(labels=torch.tensor([0, 1, 1])), TypeError, "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3, problem_type="multi_label_classification"),
         dict(labels=torch.zeros(3, 2)), ValueError, "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=[0, 1, 2]), TypeError, "labels"),
        ("XLMForTokenClassification", dict(num_labels=4), dict(labels=torch.full((3, 9), 4)), ValueError, "labels"),
        ("XLMForTokenClassification", dict(num_labels=4), dict(labels=torch.zeros(3, 10, dtype=long)), ValueError,
         "labels"),
        ("XLMForQuestionAnsweringSimple", {}, dict(start_positions=torch.zeros(3), end_positions=torch.zeros(3)),
         TypeError, "start_positions"),
        ("XLMForQuestionAnsweringSimple", {}, dict(start_positions=torch.zeros(3, 2, dtype=long),
                                                   end_positions=torch.zeros(3, dtype=long)),
         ValueError, "start_positions"),
        ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([0, 9, 1]),
                                             end_positions=torch.tensor([1, 2, 3])), ValueError, "start_positions"),
        ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([0, 1, 1]),
                                             end_positions=torch.tensor([1, 2, 3]),
                                             cls_index=torch.tensor([0, 0, 12]), is_impossible=torch.zeros(3)),
         ValueError, "cls_index"),
        ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([0, 1, 1]),
                                             end_positions=torch.tensor([1, 2, 3]),
                                             cls_index=torch.tensor([0, 0, 1]), is_impossible=torch.zeros(2)),
         ValueError, "is_impossible"),
        # shapes with the right number of values but the wrong layout
        ("XLMWithLMHeadModel", {}, dict(labels=torch.zeros(27, dtype=long)), ValueError, "labels"),
        ("XLMForTokenClassification", dict(num_labels=4), dict(labels=torch.zeros(9, 3, dtype=long)), ValueError,
         "labels"),
        ("XLMForSequenceClassification", dict(num_labels=2, problem_type="regression"), dict(labels=torch.zeros(6)),
         ValueError, "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=torch.tensor([[0, 1, 2]])), ValueError,
         "labels"),
        ("XLMForSequenceClassification", dict(num_labels=3), dict(labels=torch.tensor([0, 1, 2], dtype=torch.int8)),
         TypeError, "labels"),  # inferred multi-label, as transformers infers it from the dtype
        # one position alone would silently give no loss
        ("XLMForQuestionAnsweringSimple", {}, dict(start_positions=torch.tensor([0, 1, 2])), ValueError,
         "start_positions and end_positions"),
        ("XLMForQuestionAnswering", {}, dict(end_positions=torch.tensor([0, 1, 2])), ValueError,
         "start_positions and end_positions"),
        # the beam head gathers at start_positions and cls_index: -100 is no index there
        ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([-100, 1, 1]),
                                             end_positions=torch.tensor([1, 2, 3])), ValueError, "start_positions"),
        ("XLMForQuestionAnswering", {}, dict(start_positions=torch.tensor([0, 1, 1]),
                                             end_positions=torch.tensor([1, 2, 3]), is_impossible=torch.zeros(3)),
         ValueError, "is_impossible needs cls_index"),
        ("XLMForQuestionAnswering", {}, dict(cls_index=torch.zeros(3)), TypeError, "cls_index"),
        ("XLMForQuestionAnswering", {}, dict(cls_index=torch.tensor([0, 9, 1])), ValueError, "cls_index"),
        ("XLMForQuestionAnswering", {}, dict(p_mask=torch.zeros(3, 8)), ValueError, "p_mask"),
        ("XLMForQuestionAnswering", {}, dict(p_mask=torch.zeros(3, 9, dtype=torch.bool)), TypeError, "p_mask"),
        ("XLMForQuestionAnswering", dict(start_n_top=10), {}, ValueError, "start_n_top"),
        ("XLMForQuestionAnswering", dict(end_n_top=12), {}, ValueError, "end_n_top"),
    ]


@pytest.mark.parametrize("case", range(len(bad_label_cases())))
def test_bad_labels_are_rejected_naming_the_argument(case):
    head, overrides, kwargs, error, name = bad_label_cases()[case]
    _, ours = make_twins(head, "base", **overrides)
    ids, mask = random_batch("base", batch=3, seq=9)
    with pytest.raises(error, match=name):
        ours(ids, attention_mask=mask, **kwargs)


def test_adaptive_softmax_labels_have_no_ignored_value():
    config = xlm_fast.XLMConfig(**dict(CONFIGS["base"], asm=True, asm_cutoffs=[30, 60]))
    ids, mask = random_batch("base", batch=3, seq=9)
    with pytest.raises(ValueError, match="labels"):
        xlm_fast.XLMWithLMHeadModel(config)(ids, attention_mask=mask, labels=torch.full((3, 9), -100))


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(labels=torch.tensor([0, 3])), ValueError, "labels"),
    (dict(labels=torch.tensor([[0], [2]])), ValueError, "labels"),  # transformers' loss takes (batch,) only
    (dict(labels=torch.tensor([0.0, 2.0])), TypeError, "labels"),
    # flattened, these have the right number of values and would pass unnoticed
    (dict(attention_mask=torch.ones(3, 2, 5)), ValueError, "attention_mask"),
    (dict(langs=torch.zeros(2, 5, dtype=torch.long)), ValueError, "langs"),
    (dict(position_ids=torch.zeros(6, 5, dtype=torch.long)), ValueError, "position_ids"),
    (dict(token_type_ids=[[0] * 5]), ValueError, "token_type_ids"),
])
def test_multiple_choice_bad_labels_and_inputs_are_rejected(kwargs, error, name):
    _, ours = make_twins("XLMForMultipleChoice", num_labels=1)
    ids = torch.randint(4, 90, (2, 3, 5))
    with pytest.raises(error, match=name):
        ours(ids, **kwargs)


@pytest.mark.parametrize("shape", [(0, 3, 5), (2, 0, 5), (2, 3, 0)])
def test_multiple_choice_empty_inputs_are_rejected(shape):
    _, ours = make_twins("XLMForMultipleChoice", num_labels=1)
    with pytest.raises(ValueError, match="input_ids"):
        ours(torch.zeros(shape, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids"):
        ours([[[4]]])


def test_simple_question_answering_needs_two_outputs():
    config = xlm_fast.XLMConfig(**dict(CONFIGS["base"], num_labels=3))
    with pytest.raises(ValueError, match="num_labels"):
        xlm_fast.XLMForQuestionAnsweringSimple(config)


def accepted_like_transformers_cases():
    """Inputs transformers accepts on purpose; xlm_fast must accept them and agree."""
    ids, mask = random_batch("base", batch=3, seq=9)
    return [
        # fractional masks: transformers compares with 0 (attend where nonzero)
        ("XLMModel", {}, dict(attention_mask=mask.float() * 0.5)),
        # out-of-range QA positions are clamped to an ignored index (simple head only)
        ("XLMForQuestionAnsweringSimple", {}, dict(attention_mask=mask, start_positions=torch.tensor([0, 40, -3]),
                                                   end_positions=torch.tensor([2, 3, 50]))),
        # -100 marks ignored tokens and rows (transformers' collators pad labels with it)
        ("XLMForTokenClassification", dict(num_labels=4),
         dict(attention_mask=mask, labels=torch.where(mask.bool(), torch.arange(9) % 4, torch.tensor(-100)))),
        ("XLMWithLMHeadModel", {}, dict(attention_mask=mask, labels=torch.where(mask.bool(), ids, torch.tensor(-100)))),
        ("XLMForSequenceClassification", dict(num_labels=3),
         dict(attention_mask=mask, labels=torch.tensor([2, -100, 0]))),
        # (batch, 1) positions are squeezed
        ("XLMForQuestionAnsweringSimple", {}, dict(attention_mask=mask, start_positions=torch.tensor([[1], [2], [3]]),
                                                   end_positions=torch.tensor([[4], [5], [6]]))),
        ("XLMForQuestionAnswering", {}, dict(attention_mask=mask, start_positions=torch.tensor([[1], [2], [3]]),
                                             end_positions=torch.tensor([[4], [5], [6]]))),
        # the beam head's loss ignores end positions of -100 (its start positions index states)
        ("XLMForQuestionAnswering", {}, dict(attention_mask=mask, start_positions=torch.tensor([1, 2, 3]),
                                             end_positions=torch.tensor([4, -100, 6]))),
        # cls_index without is_impossible (SQuAD 1 batches): the loss has no answerability term
        ("XLMForQuestionAnswering", {}, dict(attention_mask=mask, start_positions=torch.tensor([1, 2, 3]),
                                             end_positions=torch.tensor([4, 5, 6]), cls_index=torch.tensor([0, 0, 1]))),
        # int32 ids and bool masks: what nn.Embedding and masked_fill take
        ("XLMModel", {}, dict(input_ids=ids.int(), attention_mask=mask.bool())),
        # half-precision embeddings promote to the fp32 weights
        ("XLMModel", {}, dict(input_ids=None, inputs_embeds=torch.randn(3, 9, 32).half(), attention_mask=mask)),
        # attention_mask wins over lengths when both are given
        ("XLMModel", {}, dict(attention_mask=mask, lengths=torch.tensor([9, 9, 9]))),
        # every summary activation transformers names that XLM's sequence summary supports
        *[("XLMForSequenceClassification", dict(num_labels=3, summary_activation=name), dict(attention_mask=mask))
          for name in SUMMARY_ACTIVATIONS],
    ]


@pytest.mark.parametrize("case", range(len(accepted_like_transformers_cases())))
def test_inputs_transformers_accepts_on_purpose_are_kept(case):
    head, overrides, kwargs = accepted_like_transformers_cases()[case]
    hf_model, ours = make_twins(head, "base", **overrides)
    ids, _ = random_batch("base", batch=3, seq=9)
    kwargs = dict({"input_ids": ids}, **kwargs)
    expected, actual = hf_model(**kwargs), ours(**kwargs)
    for key in expected.keys():
        if torch.is_tensor(expected[key]):
            assert relative_error(actual[key], expected[key]) < 1e-5, key


def test_summary_activation_names_are_the_ones_the_model_builds():
    from xlm_fast.modeling_xlm import SUMMARY_ACTIVATIONS as BUILT

    assert set(BUILT) == set(SUMMARY_ACTIVATIONS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA synchronisations")
def test_input_checks_cost_one_synchronisation_per_argument_group(monkeypatch):
    """Shapes, dtypes and devices are metadata; the value ranges of all the index inputs
    cost one sync together, and those of the labels one more."""
    monkeypatch.setenv("XLM_FAST_BACKEND", "torch")
    _, ours = make_twins("XLMForTokenClassification", "multilingual", num_labels=4)
    ours.cuda()
    ids = torch.randint(4, 120, (2, 6), device="cuda")
    kwargs = dict(langs=torch.zeros_like(ids), token_type_ids=torch.ones_like(ids),
                  position_ids=torch.arange(6, device="cuda").expand(2, 6), lengths=torch.tensor([6, 4], device="cuda"),
                  head_mask=torch.ones(4, device="cuda"))

    def synchronisations(**extra):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                ours(ids, **kwargs, **extra)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing" in str(warning.message) for warning in caught)

    assert synchronisations() == 1
    assert synchronisations(labels=torch.zeros_like(ids)) == 2


# ---- prune_heads ------------------------------------------------------------------------
def prune_by_hand(hf_model, heads_to_prune):
    """transformers 5 has no prune_heads: keep the other heads' rows of q/k/v and columns
    of out_lin in new Linears, and lower n_heads (what transformers 4's prune_heads did)."""
    for layer, heads in heads_to_prune.items():
        attention = hf_model.base_model.attentions[layer]
        head_dim = attention.head_dim
        keep = [head for head in range(attention.n_heads) if head not in heads]
        index = torch.tensor([head * head_dim + i for head in keep for i in range(head_dim)], dtype=torch.long)
        for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
            old = getattr(attention, name)
            rows = name != "out_lin"
            new = torch.nn.Linear(old.in_features if rows else len(index), len(index) if rows else old.out_features)
            with torch.no_grad():
                new.weight.copy_(old.weight[index] if rows else old.weight[:, index])
                new.bias.copy_(old.bias[index] if rows else old.bias)
            setattr(attention, name, new)
        attention.n_heads = len(keep)
    return hf_model


PRUNE = {0: [1, 3], 1: [2]}


@pytest.mark.parametrize("class_name,field", [
    ("XLMModel", "last_hidden_state"), ("XLMWithLMHeadModel", "logits"), ("XLMForSequenceClassification", "logits"),
    ("XLMForTokenClassification", "logits"), ("XLMForQuestionAnsweringSimple", "start_logits"),
    ("XLMForQuestionAnswering", "start_top_log_probs"),
])
def test_prune_heads_matches_transformers_pruned_the_same_way(class_name, field):
    hf_model, ours = make_twins(class_name)
    ours.prune_heads(PRUNE)
    prune_by_hand(hf_model, PRUNE)
    ids, mask = random_batch()
    expected = hf_model(ids, attention_mask=mask, output_attentions=True)
    actual = ours(ids, attention_mask=mask, output_attentions=True)
    assert_close(getattr(actual, field), getattr(expected, field))
    assert [a.shape[1] for a in actual.attentions] == [2, 3]
    compare_outputs(expected, actual, ["attentions"])
    assert ours.base_model.attentions[0].q_lin.weight.shape == (16, 32)
    assert ours.base_model.attentions[0].out_lin.weight.shape == (32, 16)


@pytest.mark.parametrize("config_name", ["base", "causal", "sinusoidal"])
def test_pruning_equals_masking_those_heads(config_name):
    """Independent of transformers: a pruned head contributes what a head_mask of 0 leaves."""
    _, ours = make_twins("XLMModel", config_name)
    n_layers, n_heads = CONFIGS[config_name]["n_layers"], CONFIGS[config_name]["n_heads"]
    ids, mask = random_batch(config_name)
    head_mask = torch.ones(n_layers, n_heads)
    head_mask[0, 1] = head_mask[1, 0] = 0
    expected = ours(ids, attention_mask=mask, head_mask=head_mask).last_hidden_state
    ours.prune_heads({0: [1], 1: [0]})
    assert_close(ours(ids, attention_mask=mask).last_hidden_state, expected)
    # head_mask still indexes the original heads; the pruned ones' entries are unused
    scales = torch.rand(n_layers, n_heads)
    reference = scales * head_mask
    pruned_out = ours(ids, attention_mask=mask, head_mask=scales).last_hidden_state
    ours_full = make_twins("XLMModel", config_name)[1]
    assert_close(pruned_out, ours_full(ids, attention_mask=mask, head_mask=reference).last_hidden_state)


def test_pruning_every_head_of_a_layer_leaves_out_lin_bias():
    _, ours = make_twins("XLMModel")
    ids, mask = random_batch()
    head_mask = torch.ones(2, 4)
    head_mask[1] = 0
    expected = ours(ids, attention_mask=mask, head_mask=head_mask).last_hidden_state
    ours.prune_heads({1: [0, 1, 2, 3]})
    out = ours(ids, attention_mask=mask, output_attentions=True)
    assert_close(out.last_hidden_state, expected)
    assert out.attentions[1].shape == (3, 0, 9, 9) and ours.attentions[1].q_lin.weight.shape == (0, 32)


def test_prune_heads_accumulates_in_config_and_reloads_pruned(tmp_path):
    _, ours = make_twins("XLMWithLMHeadModel")
    ours.prune_heads({0: [1]})
    ours.prune_heads({0: [1, 2], 1: [3]})  # 1 again: skipped
    assert ours.config.pruned_heads == {0: [1, 2], 1: [3]}
    assert ours.transformer.attentions[0].kept_heads == [0, 3] and ours.transformer.attentions[0].n_heads == 2
    ids, mask = random_batch()
    expected = ours(ids, attention_mask=mask).logits
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["pruned_heads"]
    assert saved == {"0": [1, 2], "1": [3]}  # JSON keys are str, as transformers 4 writes them
    back, info = xlm_fast.XLMWithLMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["mismatched_keys"] == []
    assert back.transformer.attentions[0].q_lin.weight.shape == (16, 32)
    assert back.config.pruned_heads == {0: [1, 2], 1: [3]}
    assert torch.equal(back(ids, attention_mask=mask).logits, expected)
    # a pruned checkpoint loaded into a head (base model inside) is pruned too
    head = xlm_fast.XLMForSequenceClassification.from_pretrained(tmp_path)
    assert head.transformer.attentions[1].n_heads == 3


def test_pruned_causal_model_decodes_with_the_cache():
    _, ours = make_twins("XLMWithLMHeadModel", "causal")
    ours.prune_heads({0: [0], 1: [1, 2]})
    ids = torch.randint(4, 101, (2, 7))
    full = ours.transformer(ids).last_hidden_state
    cache = {"slen": 0}
    first = ours.transformer(ids[:, :4], cache=cache).last_hidden_state
    second = ours.transformer(ids, cache=cache).last_hidden_state
    assert cache[1][0].shape == (2, 1, 7, 8)
    assert_close(torch.cat([first, second], dim=1), full)
    assert ours.generate(ids[:, :3], max_new_tokens=2).shape == (2, 5)


@pytest.mark.parametrize("heads_to_prune,error,named", [
    ([0, 1], TypeError, "heads_to_prune"),
    ({2: [0]}, ValueError, "layer 2"),
    ({-1: [0]}, ValueError, "layer -1"),
    ({0: [4]}, ValueError, r"heads_to_prune\[0\]"),
    ({0: "01"}, TypeError, r"heads_to_prune\[0\]"),
    ({0: [True]}, ValueError, r"heads_to_prune\[0\]"),
])
def test_bad_heads_to_prune_are_named(heads_to_prune, error, named):
    _, ours = make_twins("XLMModel")
    with pytest.raises(error, match=named):
        ours.prune_heads(heads_to_prune)
    assert all(attention.n_heads == 4 for attention in ours.attentions)


# ---- gradient checkpointing ---------------------------------------------------------------
def lm_gradients(model, ids, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    model(ids, labels=ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def count_layer_calls(model):
    calls = []
    original = model.transformer._layer_forward
    model.transformer._layer_forward = lambda *args: calls.append(args[0]) or original(*args)
    return calls


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(dropout, use_reentrant):
    _, ours = make_twins("XLMWithLMHeadModel", dropout=dropout, attention_dropout=dropout)
    ours.train()
    ids, _ = random_batch(padded=False)
    expected = lm_gradients(ours, ids)
    assert not ours.is_gradient_checkpointing and ours.supports_gradient_checkpointing
    ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert ours.is_gradient_checkpointing
    calls = count_layer_calls(ours)
    actual = lm_gradients(ours, ids)
    assert sorted(calls) == [0, 0, 1, 1]  # each layer recomputed in the backward pass
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-6, atol=1e-9, msg=name)
    if dropout:  # another seed gives other dropout masks: the comparison above can fail
        assert any(not torch.allclose(lm_gradients(ours, ids, seed=1)[name], expected[name]) for name in expected)


def test_gradient_checkpointing_options_and_disable():
    _, ours = make_twins("XLMWithLMHeadModel", "multilingual")
    ours.train()
    ids, _ = random_batch("multilingual", padded=False)
    expected = lm_gradients(ours, ids)
    ours.gradient_checkpointing_enable(every_n_layers=2, offload=True)  # layers 0 and 2 of 3
    calls = count_layer_calls(ours)
    actual = lm_gradients(ours, ids)
    assert sorted(calls) == [0, 0, 1, 2, 2]
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-6, atol=1e-9, msg=name)
    ours.eval()  # not in training: nothing is recomputed
    calls.clear()
    lm_gradients(ours, ids)
    assert calls == [0, 1, 2]
    ours.train()
    ours.gradient_checkpointing_disable()
    assert not ours.is_gradient_checkpointing
    calls.clear()
    lm_gradients(ours, ids)
    assert calls == [0, 1, 2]
    ours.activation_checkpointing_enable()  # transformers 5's name, which its Trainer calls
    assert ours.is_activation_checkpointing


@pytest.mark.parametrize("kwargs,error,named", [
    (dict(gradient_checkpointing_kwargs=[("use_reentrant", False)]), TypeError, "gradient_checkpointing_kwargs"),
    (dict(every_n_layers=0), ValueError, "every_n_layers"),
    (dict(offload="yes"), TypeError, "offload"),
])
def test_bad_gradient_checkpointing_arguments_are_named(kwargs, error, named):
    _, ours = make_twins("XLMModel")
    with pytest.raises(error, match=named):
        ours.gradient_checkpointing_enable(**kwargs)
    assert not ours.is_gradient_checkpointing


def test_input_require_grads_lets_gradients_reach_layers_behind_frozen_embeddings():
    """PEFT's set-up: frozen embeddings, reentrant checkpointing; the layers still get
    gradients because gradient_checkpointing_enable hooks the embeddings' output."""
    _, ours = make_twins("XLMWithLMHeadModel")
    ours.train()
    for module in (ours.transformer.embeddings, ours.transformer.position_embeddings, ours.transformer.layer_norm_emb):
        module.requires_grad_(False)
    ids, _ = random_batch(padded=False)
    expected = lm_gradients(ours, ids)
    ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when no checkpoint input requires grad
        actual = lm_gradients(ours, ids)
    assert "transformer.attentions.0.q_lin.weight" in actual
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-6, atol=1e-9, msg=name)
    ours.disable_input_require_grads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without_hook = lm_gradients(ours, ids)
    assert "transformer.attentions.0.q_lin.weight" not in without_hook
