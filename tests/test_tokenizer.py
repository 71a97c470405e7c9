import random

from transformers import AutoTokenizer

from tsq.data.synthetic import SyntheticWorld, vocabulary
from tsq.models.tiny import build_word_tokenizer


def test_round_trip_through_a_saved_hf_tokenizer(tmp_path):
    build_word_tokenizer(vocabulary()).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    world = SyntheticWorld(split_sizes={"test": 5, "dev": 1, "train": 1})
    rng = random.Random(1)
    for p in world.split("test"):
        text = p.prompt + " " + world.teacher_response(p, rng)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert len(ids) == len(text.split())  # one id per word
        assert tok.decode(ids) == text
    assert tok.padding_side == "left" and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"


def test_unknown_word_maps_to_unk():
    tok = build_word_tokenizer(vocabulary())
    assert tok("3 banana", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id
