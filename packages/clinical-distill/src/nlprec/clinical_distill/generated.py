"""Deterministic generated data: clinical notes, general text and three small tasks shaped like the real ones.

This is the embedded default that lets the demo pipeline run on a machine without ../shared/data.
It measures that the machinery works, not clinical accuracy.
"""

from __future__ import annotations

import random

DISEASES = [
    "type 2 diabetes",
    "hypertension",
    "asthma",
    "pneumonia",
    "atrial fibrillation",
    "breast cancer",
    "chronic kidney disease",
    "migraine",
    "rheumatoid arthritis",
    "colorectal cancer",
    "hypothyroidism",
    "heart failure",
    "sickle cell anemia",
    "cystic fibrosis",
    "epilepsy",
    "osteoporosis",
]
DRUGS = [
    "metformin",
    "lisinopril",
    "albuterol",
    "warfarin",
    "levothyroxine",
    "ibuprofen",
    "insulin",
    "amoxicillin",
    "atorvastatin",
    "prednisone",
]
SYMPTOMS = [
    "chest pain",
    "shortness of breath",
    "fatigue",
    "headache",
    "nausea",
    "fever",
    "cough",
    "dizziness",
    "joint pain",
    "abdominal pain",
]
SECTIONS = {
    "MEDICATIONS": "Doctor: What medicines are you taking?\nPatient: I take {drug} every day.",
    "ALLERGY": "Doctor: Any allergies to medicine?\nPatient: Yes, {drug} gives me a rash.",
    "CC": "Doctor: What brings you in today?\nPatient: I have had {symptom} for {days} days.",
    "PASTMEDICALHX": "Doctor: Any past medical problems?\nPatient: I was told I have {disease}.",
    "FAM/SOCHX": "Doctor: Does anyone in your family have health problems?\nPatient: My {relative} had {disease}.",
}
RELATIVES = ["mother", "father", "sister", "brother", "grandmother"]
GENERAL = [
    "The river runs through the old town and under {n} stone bridges.",
    "The team won the final match after {n} minutes of extra time.",
    "The album was released in {year} and reached number {n} on the charts.",
    "The castle was built in {year} by a local duke.",
    "The railway line opened in {year} with {n} stations.",
]


def clinical_note(rng: random.Random) -> str:
    disease, drug, symptom = rng.choice(DISEASES), rng.choice(DRUGS), rng.choice(SYMPTOMS)
    age = rng.randint(18, 90)
    sex = rng.choice(["male", "female"])
    return (
        f"HISTORY OF PRESENT ILLNESS: The patient is a {age}-year-old {sex} with a history of {disease} "
        f"who presents with {symptom}. MEDICATIONS: {drug} {rng.choice([5, 10, 20, 40])} mg daily. "
        f"ASSESSMENT: {disease.capitalize()}, stable. PLAN: Continue {drug} and follow up in "
        f"{rng.randint(1, 12)} weeks."
    )


def clinical_notes(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [clinical_note(rng) for _ in range(n)]


def general_text(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 10_000)
    return [
        rng.choice(GENERAL).format(n=rng.randint(2, 90), year=rng.randint(1500, 2020))
        for _ in range(n)
    ]


def ner_examples(n: int, seed: int = 0) -> list[dict]:
    """Sentences with disease mentions tagged B-Disease / I-Disease (IOB2), like NCBI-disease."""
    rng = random.Random(seed + 20_000)
    templates = [
        "Patients with {d} were treated with {drug} .",
        "We studied {d} in {k} families .",
        "No link between {d} and {s} was found .",
    ]
    examples = []
    for _ in range(n):
        disease = rng.choice(DISEASES).split()
        words, tags = [], []
        for token in rng.choice(templates).split():
            if token == "{d}":
                words += disease
                tags += ["B-Disease"] + ["I-Disease"] * (len(disease) - 1)
            else:
                text = token.format(
                    drug=rng.choice(DRUGS), k=rng.randint(2, 40), s=rng.choice(SYMPTOMS)
                )
                words += text.split()
                tags += ["O"] * len(text.split())
        examples.append({"tokens": words, "tags": tags})
    return examples


def section_examples(n: int, seed: int = 0) -> list[dict]:
    """Dialogue snippets labelled with their note section, like MTS-Dialog."""
    rng = random.Random(seed + 30_000)
    out = []
    for _ in range(n):
        label = rng.choice(sorted(SECTIONS))
        text = SECTIONS[label].format(
            drug=rng.choice(DRUGS),
            symptom=rng.choice(SYMPTOMS),
            days=rng.randint(1, 30),
            disease=rng.choice(DISEASES),
            relative=rng.choice(RELATIVES),
        )
        out.append({"text": text, "label": label})
    return out


def nli_examples(n: int, seed: int = 0) -> list[dict]:
    """Statement / evidence pairs labelled Entailment or Contradiction, like NLI4CT."""
    rng = random.Random(seed + 40_000)
    out = []
    for _ in range(n):
        disease, drug = rng.choice(DISEASES), rng.choice(DRUGS)
        evidence = (
            f"Inclusion criteria: adults with {disease}. Intervention: {drug} daily for 12 weeks."
        )
        entail = rng.random() < 0.5
        other = rng.choice([d for d in DRUGS if d != drug])
        statement = f"Participants in the trial receive {drug if entail else other}."
        out.append(
            {
                "text": statement,
                "text_pair": evidence,
                "label": "Entailment" if entail else "Contradiction",
            }
        )
    return out
