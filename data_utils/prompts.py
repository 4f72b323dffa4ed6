"""Instruction records and prompt templates.

Two raw schemas are accepted and mapped to one normalized record
``{instruction, input, output, category, references}``:

* Dolly: ``instruction``, ``context`` (optional), ``response``, ``category`` (optional)
* instruction-tuning raw format: ``instruction``, ``input`` (optional), ``output``, ``category`` (optional)

Prompts use the standard instruction template of this line of work (:data:`TEMPLATE_WITH_INPUT`,
:data:`TEMPLATE_NO_INPUT`), or the tokenizer's chat template for chat models (Qwen2 style).
"""

from __future__ import annotations

import unicodedata
from typing import Any

TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

# (instruction, input, output) field names per schema; the input field is optional in both.
_SCHEMAS: dict[str, tuple[str, str, str]] = {
    "dolly": ("instruction", "context", "response"),
    "instruct": ("instruction", "input", "output"),
}


def clean_text(text: str) -> str:
    """``\\r\\n`` (and a lone ``\\r``) become ``\\n``; Unicode is put in NFC form.

    NFC because the project's tokenizers NFC-normalise before encoding: with NFC text, ``decode(encode(text))``
    gives the text back exactly, so stored references and decoded token ids always agree.
    """
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def _text(rec: dict, key: str, required: bool) -> str:
    """Field ``key`` passed through :func:`clean_text`; ValueError if missing (when required) or not a string."""
    if key not in rec or (rec[key] is None and not required):
        if required:
            raise ValueError(f"missing field {key!r}")
        return ""
    value = rec[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return clean_text(value)


def _schema_of(rec: dict) -> str:
    if "response" in rec and "output" not in rec:
        return "dolly"
    if "output" in rec:
        return "instruct"
    missing = [k for k in ("instruction", "output") if k not in rec]
    raise ValueError(
        f"unknown record schema (keys {sorted(rec)}): missing fields {missing}; expected "
        f"instruction/input/output or Dolly's instruction/context/response"
    )


def normalize_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Map a raw record of either schema to ``{instruction, input, output, category, references}``.

    Every text field goes through :func:`clean_text` (line endings become ``\\n``, Unicode NFC). Trailing
    whitespace is stripped from the instruction and the input (it would otherwise end up right before the
    template's ``\\n\\n###`` separators). The output is otherwise kept verbatim, since it is the training target
    and the reference for evaluation.
    ``references`` defaults to ``[output]``. Raises ValueError naming the missing or mistyped field.
    """
    if not isinstance(rec, dict):
        raise ValueError(f"record must be a JSON object, got {type(rec).__name__}")
    ins_key, inp_key, out_key = _SCHEMAS[_schema_of(rec)]
    instruction = _text(rec, ins_key, required=True).rstrip()
    inp = _text(rec, inp_key, required=False).rstrip()
    output = _text(rec, out_key, required=True)
    category = rec.get("category", "")
    if category is None:
        category = ""
    if not isinstance(category, str):
        raise ValueError(f"field 'category' must be a string, got {type(category).__name__}")
    refs = rec.get("references")
    if refs is None:
        references = [output]
    else:
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError("field 'references' must be a non-empty list of strings")
        references = [clean_text(r) for r in refs]
    return {
        "instruction": instruction,
        "input": inp,
        "output": output,
        "category": category,
        "references": references,
    }


def user_message(record: dict[str, Any]) -> str:
    """Content of the single user turn in chat-template mode: the instruction, then the input after a blank line."""
    rec = normalize_record(record)
    return rec["instruction"] + ("\n\n" + rec["input"] if rec["input"] else "")


def build_prompt(record: dict[str, Any], tokenizer: Any = None, chat_template: bool = False) -> str:
    """Prompt text for a raw or normalized record; the response is generated (or trained) right after it.

    With ``chat_template=True`` the tokenizer's chat template renders one user turn plus the assistant
    generation header; otherwise the standard instruction template is used (the input section only when the
    input is non-empty).
    """
    rec = normalize_record(record)
    if not chat_template:
        if rec["input"]:
            return TEMPLATE_WITH_INPUT.format(instruction=rec["instruction"], input=rec["input"])
        return TEMPLATE_NO_INPUT.format(instruction=rec["instruction"])
    if tokenizer is None:
        raise ValueError("chat_template=True needs a tokenizer: pass the model's tokenizer")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template: "
            f"drop --chat-template or use a chat model's tokenizer (e.g. the qwen2 family)"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message(rec)}], tokenize=False, add_generation_prompt=True
    )
