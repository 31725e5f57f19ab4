"""Each augmentation rule of Meta's fine-tuning formatter, deterministic under a seed."""

from collections import Counter

from pipelines.evaluate.rows import EvalRow
from pipelines.finetune.data import AugmentConfig, Augmenter, TrainingExample, subset_taxonomy
from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy

LG3 = Taxonomy(generation=Generation.LG3)
OFF = AugmentConfig(
    shuffle_categories=False, drop_nonviolated=False, drop_violated=False, both_sides=False, multi_turn_rate=0
)
UNSAFE = EvalRow(text="how do I hurt someone", side="prompt", unsafe=1, categories=("S1", "S10"))
SAFE = EvalRow(text="how do I bake bread", side="prompt", unsafe=0)


def _names(example: TrainingExample) -> dict[str, str]:
    return {c.code: c.name for c in example.taxonomy.resolve()}


def _violated_names(example: TrainingExample) -> set[str]:
    names = _names(example)
    return {names[code] for code in example.codes}


def test_rules_off_give_the_base_example_under_the_default_taxonomy() -> None:
    [ex] = Augmenter(LG3, None, OFF).expand([UNSAFE])
    assert ex.taxonomy == LG3 and ex.rule == "base"
    assert ex.answer() == "unsafe\nS1,S10"
    [safe] = Augmenter(LG3, None, OFF).expand([SAFE])
    assert safe.answer() == "safe"


def test_same_seed_same_examples_other_seed_differs() -> None:
    rows = [UNSAFE, SAFE] * 5
    first = Augmenter(LG3, None, AugmentConfig(seed=3)).expand(rows)
    again = Augmenter(LG3, None, AugmentConfig(seed=3)).expand(rows)
    other = Augmenter(LG3, None, AugmentConfig(seed=4)).expand(rows)
    assert first == again
    assert first != other


def test_subset_taxonomy_renumbers_in_listed_order() -> None:
    cats = LG3.resolve()
    taxonomy, codes = subset_taxonomy(cats, [9, 0, 4], {0, 9}, "S")
    assert [(c.code, c.name) for c in taxonomy.resolve()] == [
        ("S1", "Hate"),
        ("S2", "Violent Crimes"),
        ("S3", "Defamation"),
    ]
    assert codes == ("S1", "S2")


def test_drop_nonviolated_keeps_every_violated_category_and_the_label() -> None:
    cfg = OFF.model_copy(update={"drop_nonviolated": True, "shuffle_categories": True})
    for seed in range(20):
        examples = Augmenter(LG3, None, cfg.model_copy(update={"seed": seed})).expand([UNSAFE])
        [ex] = [e for e in examples if e.rule == "drop_nonviolated"]
        assert ex.unsafe
        assert _violated_names(ex) == {"Violent Crimes", "Hate"}
        assert [c.code for c in ex.taxonomy.resolve()] == [f"S{i + 1}" for i in range(len(_names(ex)))]


def test_drop_nonviolated_on_a_safe_row_keeps_at_least_one_category() -> None:
    cfg = OFF.model_copy(update={"drop_nonviolated": True})
    sizes = set()
    for seed in range(40):
        examples = Augmenter(LG3, None, cfg.model_copy(update={"seed": seed})).expand([SAFE])
        [ex] = [e for e in examples if e.rule == "drop_nonviolated"]
        assert not ex.unsafe and ex.answer() == "safe"
        sizes.add(len(ex.taxonomy.resolve()))
    assert min(sizes) >= 1 and len(sizes) > 3


def test_drop_violated_removes_all_violated_and_turns_safe() -> None:
    cfg = OFF.model_copy(update={"drop_violated": True, "shuffle_categories": True})
    for seed in range(20):
        examples = Augmenter(LG3, None, cfg.model_copy(update={"seed": seed})).expand([UNSAFE])
        [ex] = [e for e in examples if e.rule == "drop_violated"]
        assert ex.answer() == "safe" and ex.codes == ()
        assert not {"Violent Crimes", "Hate"} & set(_names(ex).values())
        assert len(_names(ex)) >= 1


def test_drop_violated_never_applies_to_safe_rows() -> None:
    cfg = OFF.model_copy(update={"drop_violated": True})
    assert [e.rule for e in Augmenter(LG3, None, cfg).expand([SAFE])] == ["base"]


def test_shuffle_permutes_and_renumbers_codes_consistently() -> None:
    cfg = OFF.model_copy(update={"drop_nonviolated": True, "shuffle_categories": True})
    orders = set()
    for seed in range(10):
        [ex] = [
            e
            for e in Augmenter(LG3, None, cfg.model_copy(update={"seed": seed})).expand([UNSAFE])
            if e.rule != "base"
        ]
        orders.add(tuple(_names(ex).values()))
        assert _violated_names(ex) == {"Violent Crimes", "Hate"}
    assert len(orders) > 1


def test_unsafe_row_without_known_codes_trains_only_the_verdict() -> None:
    row = EvalRow(text="something bad", side="prompt", unsafe=1, categories=("unmapped",))
    examples = Augmenter(LG3, {"unmapped": ()}, AugmentConfig(both_sides=False)).expand([row])
    assert {e.rule for e in examples} == {"base", "shuffle"}
    assert all(e.unsafe and not e.codes_known and e.answer() == "unsafe" for e in examples)


def test_category_map_translates_dataset_labels() -> None:
    row = EvalRow(text="x", side="prompt", unsafe=1, categories=("self_harm",))
    [ex] = Augmenter(LG3, {"self_harm": ("S11",)}, OFF).expand([row])
    assert ex.codes == ("S11",)


def test_both_sides_adds_a_refusal_and_the_prompt_side() -> None:
    cfg = OFF.model_copy(update={"both_sides": True})
    examples = Augmenter(LG3, None, cfg).expand([UNSAFE])
    [refusal] = [e for e in examples if e.rule == "refusal"]
    assert refusal.side == "response" and not refusal.unsafe
    assert [m.role for m in refusal.messages] == ["user", "assistant"]
    convo = (Message(role="user", content="q"), Message(role="assistant", content="bad answer"))
    qa = EvalRow(conversation=convo, side="response", unsafe=1, prompt_unsafe=1)
    sides = Counter((e.side, e.unsafe) for e in Augmenter(LG3, None, cfg).expand([qa]))
    assert sides == {("response", True): 1, ("prompt", True): 1}


def test_multi_turn_prepends_a_safe_exchange_and_keeps_the_label() -> None:
    cfg = OFF.model_copy(update={"multi_turn_rate": 1.0})
    examples = Augmenter(LG3, None, cfg).expand([SAFE, UNSAFE])
    [ex] = [e for e in examples if e.unsafe]
    assert [m.role for m in ex.messages] == ["user", "assistant", "user"]
    assert ex.messages[-1].content == UNSAFE.text and ex.answer() == "unsafe\nS1,S10"
