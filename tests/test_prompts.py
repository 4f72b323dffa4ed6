"""Prompt templates and record normalization for both field schemes, plus the chat-template path."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from data_utils.prompts import TEMPLATE_NO_INPUT, TEMPLATE_WITH_INPUT, build_prompt, normalize_record

WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\n"
)
NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName a colour.\n\n### Response:\n"
)


def test_instruct_schema_templates() -> None:
    rec = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour", "category": "mt"}
    assert build_prompt(rec) == WITH_INPUT
    assert build_prompt({"instruction": "Name a colour.", "input": "", "output": "red"}) == NO_INPUT
    assert build_prompt({"instruction": "Name a colour.", "output": "red"}) == NO_INPUT  # input is optional
    assert TEMPLATE_WITH_INPUT.format(instruction="Translate to French.", input="Good morning") == WITH_INPUT
    assert TEMPLATE_NO_INPUT.format(instruction="Name a colour.") == NO_INPUT


def test_dolly_schema_maps_fields() -> None:
    rec = {"instruction": "Translate to French.", "context": "Good morning", "response": "Bonjour",
           "category": "open_qa"}
    norm = normalize_record(rec)
    assert norm == {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour",
                    "category": "open_qa", "references": ["Bonjour"]}
    assert build_prompt(rec) == WITH_INPUT
    assert build_prompt({"instruction": "Name a colour.", "context": "", "response": "red"}) == NO_INPUT


def test_text_cleanup() -> None:
    rec = {"instruction": "Line one\r\nline two  \r\n", "input": "x\r\ny \t\n", "output": "  a\r\nb  ",
           "category": "c"}
    norm = normalize_record(rec)
    assert norm["instruction"] == "Line one\nline two"
    assert norm["input"] == "x\ny"
    assert norm["output"] == "  a\nb  "  # the target keeps its own spacing; only line endings change
    assert norm["references"] == ["  a\nb  "]
    assert normalize_record({"instruction": "cafe\u0301", "output": "e\u0301"})["output"] == "\u00e9"  # NFC
    assert normalize_record(norm) == norm  # idempotent


def test_references_kept_and_checked() -> None:
    norm = normalize_record({"instruction": "i", "output": "a", "references": ["a", "b\r\n"]})
    assert norm["references"] == ["a", "b\n"]
    with pytest.raises(ValueError, match="references"):
        normalize_record({"instruction": "i", "output": "a", "references": "a"})


@pytest.mark.parametrize(
    "rec, pattern",
    [
        ({"instruction": "i", "answer": "a"}, r"missing fields \['output'\]"),
        ({"output": "a"}, "missing field 'instruction'"),
        ({"prompt": "p"}, r"missing fields \['instruction', 'output'\]"),
        ({"instruction": "i", "output": 3}, "'output' must be a string"),
        ({"instruction": ["i"], "response": "a"}, "'instruction' must be a string"),
        ({"instruction": "i", "output": "a", "category": 5}, "'category' must be a string"),
    ],
)
def test_bad_records_name_the_field(rec: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        normalize_record(rec)


def test_chat_template(tiny_models: dict[str, dict[str, Path]]) -> None:
    qwen = AutoTokenizer.from_pretrained(tiny_models["qwen2"]["student"])
    rec = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    expected = "<|im_start|>user\nTranslate to French.\n\nGood morning<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompt(rec, qwen, chat_template=True) == expected
    no_input = build_prompt({"instruction": "Name a colour.", "output": "red"}, qwen, chat_template=True)
    assert no_input == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompt(rec, qwen) == WITH_INPUT  # the template is only used on request

    with pytest.raises(ValueError, match="needs a tokenizer"):
        build_prompt(rec, None, chat_template=True)
    gpt2 = AutoTokenizer.from_pretrained(tiny_models["gpt2"]["teacher"])
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompt(rec, gpt2, chat_template=True)
