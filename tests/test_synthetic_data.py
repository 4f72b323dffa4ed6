"""Tests for tools/make_synthetic_data.py: determinism, format, held-out validation prompts and answer correctness."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "make_synthetic_data.py"


def _load_tool():
    """Import the CLI module from its path (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("make_synthetic_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


msd = _load_tool()
NUM_TRAIN, NUM_VALID = 2000, 400


@pytest.fixture(scope="module")
def splits() -> tuple[list[dict], list[dict]]:
    return msd.generate(NUM_TRAIN, NUM_VALID, seed=7)


@pytest.fixture(scope="module")
def world():
    w = msd.build_world()
    return {"by_name": {c.name: c for c in w}, "by_capital": {c.capital: c for c in w}, "all": w}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def _words(text: str) -> list[str]:
    return text.split()


def _find(names, text: str) -> list[str]:
    return [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]


# ------------------------------------------------------------------------------------------------ CLI and determinism


def test_cli_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    outs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        res = _run_cli("--out-dir", str(tmp_path / name), "--num-train", "200", "--num-valid", "60", "--seed", seed)
        assert res.returncode == 0, res.stderr
        assert "fact_lookup" in res.stdout and "total" in res.stdout  # the summary table was printed
        outs[name] = {s: (tmp_path / name / f"{s}.jsonl").read_bytes() for s in ("train", "valid")}
        assert not [p for p in (tmp_path / name).iterdir() if p.name.endswith(".tmp")]  # no temp files left
    assert outs["a"] == outs["b"]
    assert outs["a"]["train"] != outs["c"]["train"]
    assert outs["a"]["valid"] != outs["c"]["valid"]
    lines = outs["a"]["train"].decode("ascii").splitlines()
    assert len(lines) == 200 and len(outs["a"]["valid"].decode("ascii").splitlines()) == 60
    assert list(json.loads(lines[0])) == list(msd.FIELDS)


@pytest.mark.parametrize("args, flag", [
    (["--num-train", "0"], "--num-train"),
    (["--num-train", "-5"], "--num-train"),
    (["--num-valid", "0"], "--num-valid"),
    (["--num-train", "many"], "--num-train"),
    (["--seed", "x"], "--seed"),
    (["--noise-frac", "1"], "--noise-frac"),
    (["--noise-frac", "-0.1"], "--noise-frac"),
    (["--noise-frac", "nan"], "--noise-frac"),
    (["--noise-frac", "lots"], "--noise-frac"),
])
def test_cli_bad_input_is_one_line_error_exit_2(tmp_path: Path, args: list[str], flag: str) -> None:
    out = tmp_path / "out"
    res = _run_cli("--out-dir", str(out), *args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert flag in res.stderr and "error" in res.stderr
    assert not out.exists()  # failed before writing anything


@pytest.mark.parametrize("sub", ["", "below"])
def test_cli_out_dir_that_is_or_is_under_a_file_is_rejected(tmp_path: Path, sub: str) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = _run_cli("--out-dir", str(f / sub) if sub else str(f), "--num-train", "20", "--num-valid", "20")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--out-dir" in res.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("num_train, num_valid", [(0, 10), (10, -1), (10, 2.5), (True, 10)])
def test_generate_rejects_bad_sizes(num_train, num_valid) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        msd.generate(num_train, num_valid, seed=1)


def test_generate_is_deterministic_and_ignores_global_rng() -> None:
    random.seed(0)
    a = msd.generate(120, 40, seed=5)
    random.seed(12345)
    b = msd.generate(120, 40, seed=5)
    assert a == b
    assert msd.generate(120, 40, seed=6) != a


# ------------------------------------------------------------------------------------------------ label noise


def test_label_noise_corrupts_the_asked_fraction_of_train_only_and_marks_it(splits) -> None:
    train, valid = splits
    noisy_train, noisy_valid = msd.generate(NUM_TRAIN, NUM_VALID, seed=7, noise_frac=0.2)
    assert noisy_valid == valid  # validation is never corrupted
    marked = [i for i, r in enumerate(noisy_train) if r.get("noisy")]
    assert len(marked) == round(0.2 * NUM_TRAIN)
    clean_outputs = {r["category"]: set() for r in train}
    for r in train:
        clean_outputs[r["category"]].add(r["output"])
    for i, (clean, noisy) in enumerate(zip(train, noisy_train)):
        if i not in set(marked):
            assert noisy == clean  # untouched records are exactly the default data's
            continue
        assert noisy["noisy"] is True and noisy["references"] == [noisy["output"]]
        assert {k: v for k, v in noisy.items() if k not in ("output", "references", "noisy")} == \
            {k: v for k, v in clean.items() if k not in ("output", "references")}
        assert noisy["output"] not in clean["references"]  # every marked label is wrong
        # the wrong answer is a real answer of another category (a mismatched response), not invented text
        assert any(noisy["output"] in outs for cat, outs in clean_outputs.items() if cat != clean["category"])
    # corrupted records spread over the categories rather than hitting one
    assert len({noisy_train[i]["category"] for i in marked}) == len(msd.TASKS)


def test_label_noise_is_deterministic_and_zero_is_the_default(splits) -> None:
    a = msd.generate(300, 40, seed=3, noise_frac=0.3)
    assert a == msd.generate(300, 40, seed=3, noise_frac=0.3)
    assert a != msd.generate(300, 40, seed=4, noise_frac=0.3)
    assert msd.generate(300, 40, seed=3, noise_frac=0.0) == msd.generate(300, 40, seed=3)
    assert not any("noisy" in r for r in msd.generate(300, 40, seed=3)[0])


@pytest.mark.parametrize("frac", [1.0, -0.01, True, "0.2"])
def test_label_noise_rejects_bad_fractions(frac) -> None:
    with pytest.raises(ValueError, match="noise_frac"):
        msd.generate(50, 10, seed=1, noise_frac=frac)


def test_cli_noise_frac_prints_the_count_and_keeps_valid_clean(tmp_path: Path) -> None:
    args = ["--num-train", "200", "--num-valid", "60", "--seed", "3"]
    res = _run_cli("--out-dir", str(tmp_path / "n"), *args, "--noise-frac", "0.25")
    assert res.returncode == 0, res.stderr
    assert "label noise: 50 of 200" in res.stdout
    assert _run_cli("--out-dir", str(tmp_path / "c"), *args).returncode == 0
    assert (tmp_path / "n" / "valid.jsonl").read_bytes() == (tmp_path / "c" / "valid.jsonl").read_bytes()
    train = [json.loads(line) for line in (tmp_path / "n" / "train.jsonl").read_text().splitlines()]
    assert sum(bool(r.get("noisy")) for r in train) == 50


# ------------------------------------------------------------------------------------------------ format and mix


def test_fields_types_and_lengths(splits) -> None:
    for split in splits:
        for r in split:
            assert list(r) == list(msd.FIELDS)
            assert isinstance(r["instruction"], str) and r["instruction"].strip()
            assert isinstance(r["input"], str) and isinstance(r["output"], str) and isinstance(r["category"], str)
            assert type(r["difficulty"]) is int and 1 <= r["difficulty"] <= 5
            refs = r["references"]
            assert isinstance(refs, list) and all(isinstance(x, str) for x in refs)
            assert r["output"] in refs and 1 <= len(refs) <= msd.MAX_REFERENCES and len(set(refs)) == len(refs)
            for text in refs:
                assert 1 <= len(_words(text)) <= 60, (r["category"], text)
            assert len(_words(r["instruction"] + " " + r["input"])) <= 40, r
            assert json.dumps(r).isascii()


def test_categories_mix_and_difficulty_range(splits) -> None:
    train, valid = splits
    ctr, cva = Counter(r["category"] for r in train), Counter(r["category"] for r in valid)
    assert len(ctr) >= 10 and len(cva) >= 10
    assert set(ctr) == set(cva) == set(msd.TASKS)
    assert dict(ctr) == msd.category_quotas(NUM_TRAIN) and dict(cva) == msd.category_quotas(NUM_VALID)
    # Roughly balanced, knowledge tasks a bit heavier: no category above 2x or below 0.5x the mean.
    mean = NUM_TRAIN / len(ctr)
    assert all(0.5 * mean <= n <= 2 * mean for n in ctr.values())
    assert min(ctr[c] for c in msd.KNOWLEDGE_CATEGORIES) >= max(ctr["copy"], ctr["addition"])
    assert {r["difficulty"] for r in train} == {1, 2, 3, 4, 5}


def test_multi_answer_tasks_sample_outputs_from_their_references(splits) -> None:
    train, _ = splits
    by_cat = defaultdict(list)
    for r in train:
        by_cat[r["category"]].append(r)
    for cat in ("synonyms", "name_things", "story", "describe_entity", "name_countries"):
        assert min(len(r["references"]) for r in by_cat[cat]) >= 2, cat
        # the sampled output is not always the first reference: the soft target carries real information
        assert any(r["output"] != r["references"][0] for r in by_cat[cat]), cat
    for cat in ("copy", "addition", "sort_numbers", "fact_lookup", "two_hop"):
        assert all(len(r["references"]) == 1 for r in by_cat[cat]), cat


def test_no_train_valid_prompt_overlap(splits) -> None:
    train, valid = splits
    train_keys = {(r["instruction"], r["input"]) for r in train}
    assert not [r for r in valid if (r["instruction"], r["input"]) in train_keys]
    # algorithmic tasks hold out whole inputs, not just phrasings
    for cat in ("copy", "reverse_words", "sort_numbers", "filter_list", "compose", "count_items"):
        train_inputs = {r["input"] for r in train if r["category"] == cat}
        assert not [r for r in valid if r["category"] == cat and r["input"] in train_inputs], cat


# ------------------------------------------------------------------------------------------------ correctness


def test_algorithmic_answers_are_correct(splits) -> None:
    checked = Counter()
    for r in splits[0] + splits[1]:
        cat, ins, inp, out = r["category"], r["instruction"], r["input"], r["output"]
        if cat == "copy":
            assert out == inp
        elif cat == "uppercase":
            assert out == inp.upper() and out != inp
        elif cat == "reverse_words":
            assert out.split() == inp.split()[::-1]
        elif cat == "count_items":
            assert int(out) == len(inp.split(", "))
        elif cat == "sort_numbers":
            nums = [int(x) for x in inp.split()]
            desc = any(k in ins for k in ("largest to smallest", "descending", "decreasing"))
            assert [int(x) for x in out.split()] == sorted(nums, reverse=desc)
        elif cat == "addition":
            a, b = map(int, re.findall(r"\d+", ins))
            assert int(out) == a + b
            assert r["difficulty"] == (4 if a % 10 + b % 10 >= 10 else 3)
        elif cat == "filter_list":
            if "animals" in ins:
                items, kept = inp.split(", "), out.split(", ")
                assert kept == [x for x in items if x in msd.ANIMAL_WORDS]
            else:
                items, kept = [int(x) for x in inp.split()], [int(x) for x in out.split()]
                keep = (lambda n: n % 2 == 0) if "even" in ins else (lambda n: n % 2 == 1) if "odd" in ins \
                    else (lambda n: n > 50)
                assert kept == [n for n in items if keep(n)]
            assert 0 < len(kept) < len(items)
        elif cat == "compose":
            if "capital letters" in ins:
                assert out == " ".join(inp.split()[::-1]).upper()
            elif "animals" in ins:
                assert int(out) == sum(w in msd.ANIMAL_WORDS for w in inp.split(", "))
            elif "two" in ins:
                assert int(out) == sum(sorted(int(x) for x in inp.split())[-2:])
            else:
                assert out.split() == [x for x in inp.split()[::-1] if int(x) % 2 == 0]
        else:
            continue
        checked[cat] += 1
    assert len(checked) == 8 and min(checked.values()) > 0


def test_synonym_and_name_things_answers_are_correct(splits) -> None:
    kinds = dict(msd.KINDS)
    for r in splits[0] + splits[1]:
        if r["category"] == "synonyms":
            word = r["instruction"].rstrip(".?").split()[-1]
            group = next(g for g in msd.SYNONYM_GROUPS if word in g)
            assert set(r["references"]) == set(group) - {word}
        elif r["category"] == "name_things":
            kind = next(k for k in kinds if r["instruction"].rstrip(".?").endswith(k))
            n = {"two": 2, "three": 3, "four": 4}[next(w for w in ("two", "three", "four") if f" {w} " in r["instruction"])]
            for ref in r["references"]:
                items = ref.split(", ")
                assert len(items) == n and items == sorted(items) and set(items) <= set(kinds[kind])
            assert len(r["references"]) == min(msd.MAX_REFERENCES, len(msd._combinations(kinds[kind], n)))


def _fact_attr(instruction: str, capitals: list[str]) -> str:
    if capitals:
        return "country"
    for key, words in (("language", ("language",)), ("currency", ("currency", "money")),
                       ("animal", ("animal", "symbol", "represents")), ("colour", ("flag", "colour"))):
        if any(w in instruction for w in words):
            return key
    assert "capital" in instruction
    return "capital"


def test_knowledge_answers_match_the_world(splits, world) -> None:
    names, capitals = list(world["by_name"]), list(world["by_capital"])
    checked = Counter()
    for r in splits[0] + splits[1]:
        cat, ins, out = r["category"], r["instruction"], r["output"]
        if cat == "fact_lookup":
            caps = _find(capitals, ins)
            attr = _fact_attr(ins, caps)
            if attr == "country":
                assert out == world["by_capital"][caps[0]].name + "."
            else:
                (country,) = _find(names, ins)
                value = world["by_name"][country].attr(attr)
                assert out.rstrip(".").split()[-1].lower() == value.lower(), r
        elif cat == "two_hop":
            (cap,) = _find(capitals, ins)
            c = world["by_capital"][cap]
            assert out.startswith(f"In {c.name}, ")
            attr = _fact_attr(ins.replace("capital", ""), [])
            assert out.rstrip(".").split()[-1] == c.attr(attr)
        elif cat == "describe_entity":
            (country,) = _find(names, ins)
            c = world["by_name"][country]
            for ref in r["references"]:
                assert 20 <= len(_words(ref)) <= 40
                for value in (c.name, c.capital, c.language, c.currency, c.animal, c.colour):
                    assert re.search(rf"\b{value}\b", ref), (value, ref)
        elif cat == "name_countries":
            value = next(v for v in {x for c in world["all"] for x in (c.language, c.currency, c.animal, c.colour)}
                         if re.search(rf"\b{v}\b", ins))
            expected = {c.name + "." for c in world["all"]
                        if value in (c.language, c.currency, c.animal, c.colour)}
            assert set(r["references"]) == expected and len(expected) >= 2
        elif cat == "story":
            for ref in r["references"]:
                assert 30 <= len(_words(ref)) <= 60
            name = next(n for n in msd.STORY_NAMES if re.search(rf"\b{n}\b", ins))
            deed = next(d for d in msd.STORY_DEEDS if d in ins)
            assert all(name in ref and deed in ref for ref in r["references"])
        else:
            continue
        checked[cat] += 1
    assert len(checked) == 5


def test_valid_knowledge_is_about_facts_seen_in_training(splits, world) -> None:
    train, valid = splits
    train_text = [r["instruction"] + " " + r["output"] for r in train]
    names = list(world["by_name"])
    checked = 0
    for r in valid:
        if r["category"] != "fact_lookup" or _find(list(world["by_capital"]), r["instruction"]):
            continue
        checked += 1
        (country,) = _find(names, r["instruction"])
        value = r["output"].rstrip(".").split()[-1]
        assert any(country in t and re.search(rf"\b{value}\b", t, re.IGNORECASE) for t in train_text), r
        # ... but the exact question was never asked in training
        assert r["instruction"] not in {t["instruction"] for t in train}
    assert checked >= 10


# ------------------------------------------------------------------------------------------------ the fixed world


def test_world_is_fixed_and_independent_of_seed(world) -> None:
    random.seed(1)
    w1 = msd.build_world()
    random.seed(2)
    assert msd.build_world() == w1 == world["all"]
    assert len(w1) == msd.NUM_COUNTRIES
    for attr in ("name", "capital"):
        values = [getattr(c, attr) for c in w1]
        assert len(set(values)) == len(values) and all(v.isalpha() and v.isascii() for v in values)
    # the same question gets the same answer under different data seeds
    answers: dict[str, str] = {}
    repeats = 0
    for seed in (1, 2):
        for r in msd.generate(1500, 10, seed=seed)[0]:
            if r["category"] in ("fact_lookup", "two_hop"):
                repeats += r["instruction"] in answers
                assert answers.setdefault(r["instruction"], r["output"]) == r["output"]
    assert repeats >= 20
