"""Data reading and checking: bad rows named by number, splits, the prompt / completion split."""

import json

import pytest

from ohlora_cli.errors import DataError
from ohlora_cli.llm import data
from ohlora_cli.llm.config import LlmData

TEMPLATE = "{input} (answer start) ### answer: {output} (answer end)"


def cfg(path, **kw):
    return LlmData(path=str(path), template=TEMPLATE, **kw)


def test_bad_csv_rows_are_reported_together_as_file_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("data_type,input_data,output_data\n"
                    "train,hi,hello\n"
                    "train,,empty input\n"
                    "test,hey,bad split\n"
                    "valid,ok,\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        data.read_rows(cfg(path))
    message = str(info.value)
    assert "3 bad rows" in message
    assert f"{path}:3: input_data is empty" in message  # file:line, as the GAN's CSV errors
    assert f"{path}:4: data_type is 'test'; expected 'train' or 'valid'" in message
    assert f"{path}:5: output_data is empty" in message


def test_missing_column_names_recipe_key_and_file_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nhi,hello\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        data.read_rows(cfg(path))
    message = str(info.value)
    assert "'input_data'" in message and "data.input_column" in message and "question, answer" in message


def test_jsonl_non_text_and_bad_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"input_data": "hi", "output_data": 3}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        data.read_rows(cfg(path))
    assert f"{path}:2: not valid JSON" in str(info.value)
    path.write_text(json.dumps({"input_data": "hi", "output_data": 3}) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        data.read_rows(cfg(path))
    assert f"{path}:1: output_data is int 3, not text" in str(info.value)


def test_valid_fraction_when_there_is_no_split_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n" for i in range(20)), encoding="utf-8")
    c = cfg(path, input_column="q", output_column="a", valid_fraction=0.25)
    train, valid = data.split_rows(data.read_rows(c), c, seed=0)
    assert len(train) == 15 and len(valid) == 5
    assert not {r.number for r in train} & {r.number for r in valid}
    assert data.split_rows(data.read_rows(c), c, seed=0) == (train, valid)  # seeded


def test_template_splits_into_prompt_and_completion_at_a_token_boundary():
    c = LlmData(path="x.csv")  # Oh-LoRA's own template
    prompt, completion = data.prompt_and_completion("안녕", "반가워", c)
    assert prompt == "안녕 (답변 시작) ### 답변:"
    assert completion == " 반가워 (답변 종료)"
    assert c.resolved_end_marker == "(답변 종료)"
    assert LlmData(path="x", template="Q: {input}\nA: {output}").resolved_end_marker is None


def test_template_needs_both_placeholders():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LlmData(path="x", template="{input} only")


def test_over_long_rows_are_reported(tmp_path):
    from ohlora_cli.llm.tiny import build_tokenizer

    path = tmp_path / "d.csv"
    path.write_text("input_data,output_data\nhi,hello\nhey," + "word " * 60 + "\n", encoding="utf-8")
    c = cfg(path, max_length=32)
    rows = data.read_rows(c)
    tokenizer = build_tokenizer(rows, c)
    with pytest.raises(DataError) as info:
        data.check_tokens(rows, c, tokenizer, str(path))
    assert f"{path}:3:" in str(info.value) and "over data.max_length 32" in str(info.value)
    assert f"{path}:2:" not in str(info.value)


def test_shipped_demo_data_reads():
    c = LlmData(path="package:llm-demo-dialogue.csv", template=TEMPLATE)
    train, valid = data.split_rows(data.read_rows(c), c, seed=0)
    assert len(train) >= 40 and len(valid) >= 5


def test_packaged_recipes_validate():
    from ohlora_cli import recipes

    demo = recipes.load("llm-demo", expect_kind="llm")
    assert demo.model.tiny == "gpt-neox" and demo.data.path.startswith("package:")
    oh = recipes.load("llm-polyglot-lora", expect_kind="llm")
    assert oh.model.path == "EleutherAI/polyglot-ko-1.3b"
    assert (oh.lora.r, oh.lora.alpha, oh.lora.dropout, oh.lora.target_modules) == (128, 16, 0.05, ["query_key_value"])
    assert (oh.train.batch_size, oh.train.epochs, oh.train.learning_rate) == (4, 80, 2e-4)
    assert oh.data.resolved_end_marker == "(답변 종료)"
