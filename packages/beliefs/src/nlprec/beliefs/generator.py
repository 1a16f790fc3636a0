"""Seeded generator of bAbI-style worlds: people move, take, drop and pass objects.

The generator simulates a complete world (everybody is somewhere from the start) and narrates a
random subset of its actions in bAbI's phrasing, with questions every few sentences. Labels are
not taken from the simulation but from replaying the narration in the world model, so they say
what the *text* determines; tests check that they never contradict the simulated world.
"""

from __future__ import annotations

import random

from nlprec.beliefs.babi import build_story
from nlprec.beliefs.records import Story
from nlprec.beliefs.world import DROP_VERBS, GIVE_VERBS, MOVE_VERBS, TAKE_VERBS
from pydantic import BaseModel, Field

PERSONS = ("Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Julie", "Jeff")
LOCATIONS = ("kitchen", "garden", "office", "hallway", "bedroom", "bathroom", "park", "cinema")
OBJECTS = ("football", "apple", "milk", "box", "key", "book")


class GeneratorConfig(BaseModel):
    model_config = {"extra": "forbid"}
    n_stories: int = Field(200, ge=1)
    min_sentences: int = Field(4, ge=1)
    max_sentences: int = Field(12, ge=1)
    n_persons: int = Field(4, ge=1, le=len(PERSONS))
    n_locations: int = Field(6, ge=2, le=len(LOCATIONS))
    n_objects: int = Field(3, ge=0, le=len(OBJECTS))
    question_every: int = Field(3, ge=1)
    coreference: float = Field(0.15, ge=0, le=1, description="chance of 'Then she ...' phrasing")
    seed: int = 0


class SimulatedWorld:
    """The complete, hidden world state the narration is drawn from."""

    def __init__(self, rng: random.Random, persons, locations, objects) -> None:
        self.rng = rng
        self.location = {p: rng.choice(locations) for p in persons}
        self.holder: dict[str, str | None] = dict.fromkeys(objects)
        self.object_location = {o: rng.choice(locations) for o in objects}
        self.persons, self.locations, self.objects = persons, locations, objects

    def where_is_object(self, obj: str) -> str:
        holder = self.holder[obj]
        return self.location[holder] if holder else self.object_location[obj]

    def random_action(self, person: str) -> tuple[str, str, str | None]:
        """(kind, argument, recipient) of an action ``person`` can take now."""
        here = self.location[person]
        carried = [o for o, h in self.holder.items() if h == person]
        lying_here = [
            o for o in self.objects if self.holder[o] is None and self.object_location[o] == here
        ]
        companions = [q for q in self.persons if q != person and self.location[q] == here]
        options: list[tuple[str, str, str | None]] = [
            ("move", loc, None) for loc in self.locations if loc != here
        ]
        options += [("take", o, None) for o in lying_here] * 2
        options += [("drop", o, None) for o in carried]
        options += [("give", o, q) for o in carried for q in companions]
        return self.rng.choice(options)

    def apply(self, person: str, kind: str, arg: str, recipient: str | None) -> None:
        if kind == "move":
            self.location[person] = arg
        elif kind == "take":
            self.holder[arg] = person
        elif kind == "drop":
            self.holder[arg] = None
            self.object_location[arg] = self.location[person]
        elif kind == "give":
            self.holder[arg] = recipient


def narrate(kind: str, subject: str, arg: str, recipient: str | None, rng: random.Random) -> str:
    verbs = {"move": MOVE_VERBS, "take": TAKE_VERBS, "drop": DROP_VERBS, "give": GIVE_VERBS}[kind]
    verb = rng.choice(verbs)
    if kind == "give":
        return f"{subject} {verb} the {arg} to {recipient}."
    suffix = " there." if kind == "take" else "."
    return f"{subject} {verb} the {arg}{suffix}"


def _question(world: SimulatedWorld, mentioned: list[str], moved: set[str], held: set[str], rng):
    """A question whose answer the narration so far determines, or None."""
    options = []
    for person in sorted(moved):  # sets iterate in a per-process hash order
        options.append((f"Where is {person}?", world.location[person]))
        loc = rng.choice(world.locations)
        options.append(
            (f"Is {person} in the {loc}?", "yes" if world.location[person] == loc else "no")
        )
    for obj in sorted(held):
        holder = world.holder[obj]
        if holder is None or holder in moved:
            options.append((f"Where is the {obj}?", world.where_is_object(obj)))
    return rng.choice(options) if options else None


def generate_story(story_id: str, cfg: GeneratorConfig, rng: random.Random) -> tuple[Story, list]:
    """One story and the simulated world after each sentence (for consistency checks)."""
    persons = rng.sample(PERSONS, cfg.n_persons)
    locations = rng.sample(LOCATIONS, cfg.n_locations)
    objects = rng.sample(OBJECTS, cfg.n_objects)
    world = SimulatedWorld(rng, persons, locations, objects)
    n_sentences = rng.randint(cfg.min_sentences, max(cfg.min_sentences, cfg.max_sentences))
    items: list[tuple[str, ...]] = []
    worlds: list[dict] = []
    moved: set[str] = set()  # persons whose location the text has stated
    mentioned_objects: set[str] = set()
    previous_subject = None
    for i in range(n_sentences):
        person = rng.choice(persons)
        kind, arg, recipient = world.random_action(person)
        if kind != "move" and person not in moved:
            kind, arg, recipient = (
                "move",
                rng.choice([x for x in locations if x != world.location[person]]),
                None,
            )
        world.apply(person, kind, arg, recipient)
        subject = person
        if person == previous_subject and rng.random() < cfg.coreference:
            subject = "she" if person in ("Mary", "Sandra", "Julie") else "he"
            subject = f"{rng.choice(('Then', 'After that', 'Afterwards'))} {subject}"
        items.append(("s", narrate(kind, subject, arg, recipient, rng)))
        previous_subject = person
        if kind == "move":
            moved.add(person)
        else:
            mentioned_objects.add(arg)
        worlds.append(
            {
                "location": dict(world.location),
                "holder": dict(world.holder),
                "object_location": {o: world.where_is_object(o) for o in objects},
            }
        )
        if (i + 1) % cfg.question_every == 0:
            q = _question(world, persons, moved, mentioned_objects, rng)
            if q is not None:
                items.append(("q", *q))
    story = build_story(story_id, items, {"task": "generated"})
    return story, worlds


def generate_stories(cfg: GeneratorConfig) -> list[Story]:
    """``cfg.n_stories`` stories, deterministic given ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    return [generate_story(f"gen/{cfg.seed}/{n}", cfg, rng)[0] for n in range(cfg.n_stories)]
