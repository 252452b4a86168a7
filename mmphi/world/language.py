"""Words about scenes: captions (several paraphrases) and questions with exact answers.

Every question is built so that its answer is unambiguous: an object is named by its shape
only when that shape is unique in the scene, by its colour only when that colour is unique,
and otherwise by colour and shape (unique by construction) or by its slot.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mmphi.common.questions import EXACT_TYPES, QUESTION_TYPES
from mmphi.world.scenes import COLOURS, POSITIONS, SHAPES, Obj, Scene

NUMBERS = ("zero", "one", "two", "three", "four", "five")
PLACE = {"left": "on the left", "right": "on the right", "top": "at the top",
         "bottom": "at the bottom", "centre": "in the centre"}
PLACE_ALT = {"left": "on the left side", "right": "on the right side", "top": "near the top",
             "bottom": "near the bottom", "centre": "in the middle"}
PLURAL = {s: s + "s" for s in SHAPES}


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def a(word: str) -> str:
    """The indefinite article for ``word`` ("an orange circle")."""
    return "an" if word[0] in "aeiou" else "a"


def phrase(o: Obj, with_size: bool = True) -> str:
    return f"a {o.size} {o.colour} {o.shape}" if with_size else f"{a(o.colour)} {o.colour} {o.shape}"


def join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(scene: Scene) -> str:
    """The canonical description: every object with size, colour, shape and place, in reading order."""
    text = join([f"{phrase(o)} {PLACE[o.position]}" for o in scene.ordered()])
    return text[0].upper() + text[1:] + "."


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five COCO-style paraphrases; the first is the canonical description."""
    objs = list(scene.objects)
    order = [objs[i] for i in rng.permutation(len(objs))]
    n = len(objs)
    shapes_word = "shape" if n == 1 else "shapes"
    return [
        describe(scene),
        "There is " + join([f"{phrase(o)} {PLACE[o.position]}" for o in order]) + ".",
        f"{NUMBERS[n].capitalize()} {shapes_word}: " + join([phrase(o, False) for o in order]) + ".",
        "An image with " + join([f"{phrase(o)} {PLACE_ALT[o.position]}" for o in order]) + ".",
        join([f"{PLACE[o.position]}, {phrase(o)}" for o in order]).capitalize() + ".",
    ]


def full_captions(caps: list[str]) -> list[str]:
    """Captions that state every attribute (the count-only paraphrase is left out)."""
    return [c for i, c in enumerate(caps) if i != 2]


def _name(o: Obj, scene: Scene, rng: np.random.Generator) -> str:
    """The shortest unambiguous name for ``o``: "the circle", "the red object", "the red circle"."""
    shapes = Counter(x.shape for x in scene.objects)
    colours = Counter(x.colour for x in scene.objects)
    options = [f"the {o.colour} {o.shape}"]
    if shapes[o.shape] == 1:
        options.append(f"the {o.shape}")
    if colours[o.colour] == 1:
        options.append(f"the {o.colour} shape")
    return _pick(rng, options)


POSITION_FORMS = ("Where is {}?", "Where is {} located?", "In which part of the image is {}?")


def position_by_colour(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """A position question naming its object by colour alone ("Where is the red shape?"), or None when
    the scene has one object or no colour of its own. The answer needs colour bound to place through
    the shape word between them in a description, which a small LM learns last."""
    colours = Counter(x.colour for x in scene.objects)
    objs = [o for o in scene.objects if colours[o.colour] == 1]
    if len(scene.objects) < 2 or not objs:
        return None
    o = _pick(rng, objs)
    return _pick(rng, list(POSITION_FORMS)).format(f"the {o.colour} shape"), o.position


def question(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One (question, answer) pair of the given type about ``scene``."""
    objs = list(scene.objects)
    o = _pick(rng, objs)
    if kind == "colour":
        shapes = Counter(x.shape for x in objs)
        target = f"the {o.shape}" if shapes[o.shape] == 1 else f"the {o.shape} {PLACE[o.position]}"
        form = _pick(rng, ["What colour is {}?", "What color is {}?", "Which colour is {}?"])
        return form.format(target), o.colour
    if kind == "shape":
        colours = Counter(x.colour for x in objs)
        if colours[o.colour] == 1 and rng.random() < 0.6:
            q = _pick(rng, ["What shape is the {} object?", "Which shape is {}?", "What is the {} shape?"])
            return q.format(o.colour), o.shape
        return _pick(rng, ["What shape is {}?", "Which shape is {}?"]).format(PLACE[o.position]), o.shape
    if kind == "count":
        mode = int(rng.integers(3))
        if mode == 0:
            q = _pick(rng, ["How many shapes are there?", "How many objects are in the image?",
                            "How many shapes can you see?"])
            return q, NUMBERS[len(objs)]
        if mode == 1:
            colour = o.colour if rng.random() < 0.7 else _pick(rng, list(COLOURS))
            return f"How many {colour} shapes are there?", NUMBERS[sum(x.colour == colour for x in objs)]
        shape = o.shape if rng.random() < 0.7 else _pick(rng, list(SHAPES))
        return f"How many {PLURAL[shape]} are there?", NUMBERS[sum(x.shape == shape for x in objs)]
    if kind == "position":
        return _pick(rng, list(POSITION_FORMS)).format(_name(o, scene, rng)), o.position
    if kind == "yesno":
        return _yes_no(scene, o, rng)
    if kind == "describe":
        q = _pick(rng, ["Describe the image.", "What do you see in this picture?",
                        "Describe the scene in detail.", "What is in the image?"])
        return q, describe(scene)
    raise ValueError(f"unknown question type {kind!r}")


def _yes_no(scene: Scene, o: Obj, rng: np.random.Generator) -> tuple[str, str]:
    pairs = {(x.colour, x.shape) for x in scene.objects}
    if rng.random() < 0.5:  # about an attribute pair
        colour, shape = o.colour, o.shape
        if rng.random() < 0.5:  # a hard negative: one attribute changed
            if rng.random() < 0.5:
                colour = _pick(rng, [c for c in COLOURS if (c, shape) not in pairs])
            else:
                others = [s for s in SHAPES if (colour, s) not in pairs]
                shape = _pick(rng, others) if others else shape
        q = _pick(rng, ["Is there {} {}?", "Is there {} {} in the image?", "Can you see {} {}?"])
        return q.format(f"{a(colour)} {colour}", shape), "yes" if (colour, shape) in pairs else "no"
    # about a place
    place = o.position if rng.random() < 0.5 else _pick(rng, list(POSITIONS))
    here = [x for x in scene.objects if x.position == place]
    shape = o.shape if rng.random() < 0.5 else _pick(rng, list(SHAPES))
    answer = "yes" if here and here[0].shape == shape else "no"
    return f"Is there a {shape} {PLACE[place]}?", answer


def conversation(scene: Scene, rng: np.random.Generator, turns: int,
                 describe: bool = True) -> list[tuple[str, str, str]]:
    """``turns`` (type, question, answer) triples with no question asked twice and at most one "describe".

    Up to six turns, every question type at most once; beyond that, the exact-answer types repeat
    (about other objects or attributes), which gives more answers to learn from per scene.
    """
    kinds = [str(k) for k in rng.permutation(QUESTION_TYPES if describe else EXACT_TYPES)][:turns]
    kinds += [EXACT_TYPES[int(rng.integers(len(EXACT_TYPES)))] for _ in range(turns - len(kinds))]
    out: list[tuple[str, str, str]] = []
    seen: set[tuple] = set()
    for kind in kinds:
        for _ in range(8):
            q, a = question(kind, scene, rng)
            meaning = meaning_of(kind, q)
            if meaning not in seen:
                break
        else:
            continue  # this scene has no new question of that type left
        seen.add(meaning)
        out.append((kind, q, a))
    return out


_CONTENT = set(COLOURS) | set(SHAPES) | set(PLURAL.values()) | set(POSITIONS)


def meaning_of(kind: str, q: str) -> tuple:
    """What a question asks, whatever its wording: "What color is the square?" repeats "Which colour
    is the square?", so a later round would only copy an earlier answer."""
    words = q.lower().rstrip("?").split()
    return (kind, *sorted(w for w in words if w in _CONTENT))
