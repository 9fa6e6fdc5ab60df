"""xlm_fast.added_tokens: the split of text around added tokens and their saved records."""
import pytest

from xlm_fast.added_tokens import AddedToken, AddedVocabulary, as_added_token, parse_added_tokens_decoder

transformers = pytest.importorskip("transformers")


def test_split_takes_the_leftmost_then_longest_token_like_transformers_trie():
    vocabulary, trie = AddedVocabulary(), transformers.tokenization_python.Trie()
    for index, token in enumerate(["<s>", "<s>x", "ab", "b<s>", "[x]"]):
        vocabulary.add(index, AddedToken(token))
        trie.add(token)
    for text in ["a<s>xb", "<s><s>x", "ab<s>", "zzb<s>x", "[x][x]", "", "plain text", "a[x"]:
        pieces = [added if added is not None else piece for added, piece in vocabulary.split(text)]
        assert pieces == [piece for piece in trie.split(text) if piece], text
        assert "".join(pieces) == text
    assert list(AddedVocabulary().split("text")) == [(None, "text")]
    assert vocabulary.encoder["b<s>"] == 3 and vocabulary.decoder[3].content == "b<s>"


def test_records_round_trip_and_bad_ones_are_refused():
    record = AddedToken("<ent>", special=True, normalized=False).to_json()
    assert record == {"content": "<ent>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
    parsed = parse_added_tokens_decoder({"7": record, 8: "<plain>", 9: transformers.AddedToken("<t>", special=True)})
    assert parsed == {7: AddedToken("<ent>", True, False), 8: AddedToken("<plain>", False, True),
                      9: AddedToken("<t>", True, False)}
    assert str(parsed[7]) == "<ent>"
    for bad in ({"x": "<a>"}, {-1: "<a>"}, {1: {"special": True}}, {1: 5}, ["<a>"]):
        with pytest.raises(TypeError, match="added_tokens_decoder"):
            parse_added_tokens_decoder(bad)
    with pytest.raises(ValueError, match="rstrip"):
        as_added_token(transformers.AddedToken("<a>", rstrip=True), "new_tokens")
    assert as_added_token("<a>", "new_tokens") == ("<a>", None, None)
