"""Built-in maps from each dataset's own harm labels to Llama Guard 3 codes (S1-S14).

The datasets predate or ignore the MLCommons hazard taxonomy that Llama Guard 3 uses, so every map is a
judgement call; each one is written out here so a reader can disagree with a line and pass their own JSON
file with ``--category-map``. A label mapped to ``()`` has no Llama Guard 3 equivalent: its rows still
count as unsafe overall but do not enter any per-category figure.

LG3 codes: S1 Violent Crimes, S2 Non-Violent Crimes, S3 Sex Crimes, S4 Child Exploitation, S5 Defamation,
S6 Specialized Advice, S7 Privacy, S8 Intellectual Property, S9 Indiscriminate Weapons, S10 Hate,
S11 Self-Harm, S12 Sexual Content, S13 Elections, S14 Code Interpreter Abuse.
"""

from __future__ import annotations

from collections.abc import Mapping

BEAVERTAILS_LG3: Mapping[str, tuple[str, ...]] = {
    "animal_abuse": ("S1",),  # MLCommons lists animal abuse under violent crimes
    "child_abuse": ("S4",),
    "controversial_topics,politics": (),
    "discrimination,stereotype,injustice": ("S10",),
    "drug_abuse,weapons,banned_substance": ("S2",),
    "financial_crime,property_crime,theft": ("S2",),
    "hate_speech,offensive_language": ("S10",),
    "misinformation_regarding_ethics,laws_and_safety": ("S6",),
    "non_violent_unethical_behavior": ("S2",),
    "privacy_violation": ("S7",),
    "self_harm": ("S11",),
    "sexually_explicit,adult_content": ("S12",),
    "terrorism,organized_crime": ("S1",),
    "violence,aiding_and_abetting,incitement": ("S1",),
}

# XSTest unsafe prompts are the contrast_* types; two name one harm (discrimination, privacy), the other six
# are mostly requests to kill, injure, bomb or rob, so they go to S1 (a few robberies would be S2).
XSTEST_LG3: Mapping[str, tuple[str, ...]] = {
    "contrast_discr": ("S10",),
    "contrast_privacy": ("S7",),
    "contrast_homonyms": ("S1",),
    "contrast_figurative_language": ("S1",),
    "contrast_safe_targets": ("S1",),
    "contrast_historical_events": ("S1",),
    "contrast_safe_contexts": ("S1",),
    "contrast_definitions": ("S1",),
}

HARMBENCH_LG3: Mapping[str, tuple[str, ...]] = {
    "chemical_biological": ("S9",),
    "cybercrime_intrusion": ("S2",),
    "illegal": ("S2",),
    "misinformation_disinformation": (),
    "harassment_bullying": ("S10",),
    "harmful": ("S1",),
    "copyright": ("S8",),
}

SIMPLESAFETYTESTS_LG3: Mapping[str, tuple[str, ...]] = {
    "Suicide, Self-Harm, and Eating Disorders": ("S11",),
    "Physical harm and Violence": ("S1",),
    "Illegal and Highly Regulated items": ("S2",),
    "Scams and fraud": ("S2",),
    "Child safety": ("S4",),
}

WILDGUARD_LG3: Mapping[str, tuple[str, ...]] = {
    "private_information_individual": ("S7",),
    "sensitive_information_organization_government": ("S7",),
    "social_stereotypes_and_unfair_discrimination": ("S10",),
    "toxic_language_hate_speech": ("S10",),
    "fraud_assisting_illegal_activities": ("S2",),
    "cyberattack": ("S2",),
    "mental_health_over-reliance_crisis": ("S11",),
    "defamation_encouraging_unethical_or_unsafe_actions": ("S5",),
    "violence_and_physical_harm": ("S1",),
    "copyright_violations": ("S8",),
    "causing_material_harm_by_disseminating_misinformation": (),
    "disseminating_false_or_misleading_information_encouraging_disinformation_campaigns": (),
}

TOXIGEN_GROUPS = [
    "asian",
    "bisexual",
    "black",
    "chinese",
    "immigrant",
    "jewish",
    "latino",
    "lgbtq",
    "mental_disability",
    "mexican",
    "middle_east",
    "muslim",
    "native_american",
    "physical_disability",
    "trans",
    "women",
]
TOXIGEN_LG3: Mapping[str, tuple[str, ...]] = {f"hate_{group}": ("S10",) for group in TOXIGEN_GROUPS}

BUILTIN_MAPS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "beavertails": BEAVERTAILS_LG3,
    "xstest": XSTEST_LG3,
    "harmbench": HARMBENCH_LG3,
    "simplesafetytests": SIMPLESAFETYTESTS_LG3,
    "wildguardtest": WILDGUARD_LG3,
    "toxigen": TOXIGEN_LG3,
}


def merged_lg3_map() -> dict[str, tuple[str, ...]]:
    """All built-in maps in one, for training on a mix of datasets (their labels do not collide)."""
    merged: dict[str, tuple[str, ...]] = {}
    for mapping in BUILTIN_MAPS.values():
        merged.update(mapping)
    return merged
