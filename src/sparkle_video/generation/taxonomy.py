"""The scene taxonomy that stage 2 draws instructions from: 4 themes, 22 subthemes, 100 scenes.

Written for this library (the paper's taxonomy is not public). Each subtheme carries a *look* (sky,
horizon and ground colours, a skyline kind, and the kinds of background motion it implies) that the
reference backends render procedurally; each scene carries the motion phrase that makes the instruction
ask for a lively background. ``chosen_keyword`` is ``"subtheme: scene"``, as in the published metadata.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..data.layout import parse_chosen_keyword

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """How a subtheme looks and moves, for procedural rendering."""

    sky: RGB
    horizon: RGB
    ground: RGB
    skyline: str  # "city", "hills", "trees", "dunes", "sea", "peaks", "interior", "flat"
    motion: tuple[str, ...]  # from MOTION_KINDS
    brightness: float = 1.0
    style: str = ""  # "", "noir", "sepia", "neon", "paint", "ink", "pixel"


MOTION_KINDS = ("drift", "sway", "ripple", "snow", "rain", "petals", "leaves", "embers", "flicker", "fog")


@dataclass(frozen=True)
class Scene:
    text: str  # the scene as it appears in chosen_keyword
    motion: str  # the clause describing what moves


def _s(*pairs: tuple[str, str]) -> tuple[Scene, ...]:
    return tuple(Scene(text, motion) for text, motion in pairs)


#: theme -> subtheme -> (look, scenes)
TAXONOMY: dict[str, dict[str, tuple[Look, tuple[Scene, ...]]]] = {
    "location": {
        "urban": (
            Look((92, 128, 178), (200, 190, 180), (70, 72, 78), "city", ("drift", "flicker")),
            _s(
                ("rooftop overlooking skyline", "clouds sliding past the towers and window lights blinking"),
                ("busy night market", "lanterns swinging and stall lights flickering"),
                ("tram stop on a wide avenue", "traffic lights cycling and banners fluttering"),
                ("plaza with a splashing fountain", "water jets rising and pigeons circling"),
                ("narrow alley with hanging laundry", "washing lines swaying in a breeze"),
            ),
        ),
        "coastal": (
            Look((110, 170, 220), (200, 225, 235), (60, 120, 160), "sea", ("ripple", "drift")),
            _s(
                ("sandy beach at low tide", "waves rolling in and foam spreading over the sand"),
                ("rocky harbour with moored boats", "boats bobbing and gulls wheeling overhead"),
                ("cliff path above the ocean", "surf breaking against the rocks below"),
                ("wooden pier over turquoise water", "ripples glinting and flags snapping in the wind"),
                ("lighthouse on a windy headland", "grass whipping and the beam sweeping"),
            ),
        ),
        "mountain": (
            Look((120, 160, 210), (215, 225, 235), (90, 100, 90), "peaks", ("drift", "fog")),
            _s(
                ("alpine meadow below snowy peaks", "clouds racing over the summits"),
                ("high pass with prayer flags", "flags rippling hard in the wind"),
                ("canyon rim at midday", "heat haze shimmering above the rock"),
                ("glacier valley with a braided river", "meltwater rushing between stones"),
                ("volcanic ridge with steaming vents", "steam plumes billowing from the rock"),
            ),
        ),
        "forest": (
            Look((120, 170, 140), (170, 200, 150), (50, 80, 40), "trees", ("sway", "leaves")),
            _s(
                ("pine forest clearing", "branches swaying and needles drifting down"),
                ("bamboo grove", "tall stems bending and rustling in the breeze"),
                ("rainforest with hanging vines", "mist curling and leaves dripping"),
                ("birch wood with dappled light", "light patches dancing across the floor"),
                ("mossy ravine with a creek", "water tumbling over mossy stones"),
            ),
        ),
        "desert": (
            Look((150, 185, 220), (235, 210, 170), (205, 165, 110), "dunes", ("drift", "fog")),
            _s(
                ("rolling sand dunes", "sand streaming off the crests in the wind"),
                ("salt flat under a huge sky", "heat shimmer rippling on the horizon"),
                ("red rock mesa", "dust devils spinning in the distance"),
                ("oasis with palm trees", "palm fronds swaying and the pool glittering"),
            ),
        ),
        "rural": (
            Look((130, 180, 225), (220, 225, 200), (110, 140, 60), "hills", ("sway", "drift")),
            _s(
                ("vineyard rows with rustling leaves", "vine leaves trembling in a warm breeze"),
                ("wheat field before harvest", "golden stalks rolling in waves"),
                ("farmyard beside a red barn", "a windmill turning and hens pecking about"),
                ("open prairie under a vast sky", "tall grass swaying and clouds drifting"),
                ("lavender hills", "purple rows bending as the wind passes"),
            ),
        ),
        "waterside": (
            Look((140, 185, 215), (200, 215, 215), (70, 110, 120), "trees", ("ripple", "sway")),
            _s(
                ("lakeshore with a wooden dock", "small waves lapping at the posts"),
                ("river bank with weeping willows", "willow strands swaying over the current"),
                ("waterfall pool", "spray drifting and water pouring down"),
                ("canal lined with old houses", "reflections wobbling on the water"),
            ),
        ),
    },
    "season": {
        "spring": (
            Look((150, 195, 235), (230, 225, 235), (110, 170, 80), "trees", ("petals", "sway")),
            _s(
                ("orchard with falling blossoms", "petals drifting down on the breeze"),
                ("cherry blossom park", "pink petals swirling through the air"),
                ("meadow of fresh wildflowers", "flowers nodding in a light wind"),
                ("garden after a spring shower", "drops falling from the leaves"),
                ("tulip fields in bloom", "rows of tulips swaying together"),
                ("riverside with melting ice", "thin ice drifting downstream"),
            ),
        ),
        "summer": (
            Look((90, 160, 235), (210, 230, 240), (90, 160, 60), "hills", ("sway", "drift")),
            _s(
                ("sunflower field at noon", "sunflowers swaying in the heat"),
                ("beach boardwalk in high summer", "umbrellas flapping and waves breaking"),
                ("lush green park", "leaves shimmering and sprinklers spraying"),
                ("mountain lake in summer", "sun sparkles rippling on the water"),
                ("festival lawn with bunting", "bunting fluttering above the crowd"),
            ),
        ),
        "autumn": (
            Look((160, 170, 190), (230, 190, 140), (150, 90, 40), "trees", ("leaves", "sway")),
            _s(
                ("maple forest in full colour", "red leaves spinning down"),
                ("park path covered in leaves", "leaves skittering across the path"),
                ("misty pumpkin patch", "fog drifting low over the field"),
                ("vineyard after harvest", "amber leaves fluttering on the vines"),
                ("windy hillside with golden grass", "grass and leaves tossed by gusts"),
            ),
        ),
        "winter": (
            Look((175, 190, 210), (225, 230, 240), (235, 240, 245), "trees", ("snow", "drift")),
            _s(
                ("snowy pine forest in a blizzard", "snow driving sideways through the trees"),
                ("frozen lake with skaters", "fine snow swirling over the ice"),
                ("village square with falling snow", "flakes falling past glowing windows"),
                ("mountain cabin in deep snow", "smoke curling from the chimney as snow falls"),
                ("icy coastline", "grey waves breaking against the ice"),
            ),
        ),
    },
    "time": {
        "dawn": (
            Look((120, 130, 180), (245, 190, 160), (70, 70, 90), "hills", ("drift", "fog")),
            _s(
                ("valley at first light", "mist lifting off the fields"),
                ("quiet harbour at sunrise", "boats rocking as the light grows"),
                ("city waking at dawn", "clouds glowing and drifting over the roofs"),
                ("misty forest at daybreak", "fog rolling slowly between the trunks"),
            ),
        ),
        "midday": (
            Look((80, 150, 235), (200, 225, 245), (120, 150, 90), "hills", ("drift", "sway")),
            _s(
                ("bright plaza at noon", "flags fluttering under a high sun"),
                ("open countryside at midday", "cloud shadows sweeping across the fields"),
                ("seaside promenade at noon", "waves sparkling and palm leaves swaying"),
                ("busy street in full sun", "awnings flapping and traffic passing"),
            ),
        ),
        "golden hour": (
            Look((200, 150, 120), (250, 200, 130), (120, 90, 60), "hills", ("sway", "drift"), 0.95),
            _s(
                ("hillside at golden hour", "long grass glowing and swaying"),
                ("city rooftops in late sun", "warm clouds sliding past"),
                ("beach at the golden hour", "golden waves rolling onto the sand"),
                ("country road before sunset", "dust motes floating in the light"),
            ),
        ),
        "dusk": (
            Look((70, 70, 130), (240, 140, 100), (50, 40, 60), "city", ("drift", "flicker"), 0.8),
            _s(
                ("harbour at sunset with drifting clouds", "clouds drifting and water glinting"),
                ("twilight landscape with silhouetted trees", "trees swaying against an orange sky"),
                ("boulevard as the street lamps come on", "lamps flickering to life one by one"),
                ("desert at dusk", "the last light fading as clouds stream by"),
                ("lake at twilight", "ripples catching the pink sky"),
            ),
        ),
        "night": (
            Look((15, 20, 45), (40, 50, 90), (25, 25, 35), "city", ("flicker", "rain"), 0.55),
            _s(
                ("neon street in the rain", "rain streaking through the neon glow"),
                ("starry sky over a campsite", "the campfire flickering under turning stars"),
                ("city skyline at midnight", "window lights blinking across the towers"),
                ("moonlit beach", "moonlight shimmering on the waves"),
                ("night carnival", "ride lights spinning and flashing"),
            ),
        ),
    },
    "style": {
        "cinematic": (
            Look((60, 70, 80), (150, 150, 150), (40, 40, 45), "city", ("fog", "rain"), 0.8, "noir"),
            _s(
                ("film noir alley with swirling fog", "fog swirling under a single street lamp"),
                ("epic battlefield at dawn", "smoke drifting and banners whipping"),
                ("spaceship bridge", "console lights pulsing and stars streaming past"),
                ("thriller rooftop in the rain", "rain lashing and lights strobing"),
            ),
        ),
        "vintage": (
            Look(
                (170, 150, 120), (220, 200, 160), (120, 100, 70), "city", ("drift", "flicker"), 0.9, "sepia"
            ),
            _s(
                ("1920s jazz club street", "marquee bulbs chasing and smoke drifting"),
                ("old western town", "tumbleweeds rolling and dust blowing"),
                ("victorian street with gas lamps", "lamp flames flickering in the fog"),
                ("1950s diner parking lot", "neon sign buzzing and flickering"),
            ),
        ),
        "cyberpunk": (
            Look((30, 10, 60), (200, 40, 160), (20, 20, 40), "city", ("rain", "flicker"), 0.7, "neon"),
            _s(
                ("neon megacity street", "holograms flickering and rain falling"),
                ("rain-soaked rooftop with holograms", "ads glitching and drones passing"),
                ("industrial wasteland with glowing smelters", "smoke rising and embers floating"),
                ("underground market with lanterns", "lantern light pulsing and steam rising"),
            ),
        ),
        "painting": (
            Look((140, 180, 220), (240, 225, 190), (120, 160, 100), "hills", ("sway", "drift"), 1.0, "paint"),
            _s(
                ("watercolour village with flowing river", "the painted river flowing and clouds drifting"),
                ("impressionist garden", "brushstroke flowers nodding in the wind"),
                ("swirling starry night sky", "painted stars swirling slowly"),
                ("oil-painted harbour", "painted boats rocking on brushstroke waves"),
            ),
        ),
        "fantasy": (
            Look((90, 60, 140), (200, 160, 220), (60, 90, 70), "trees", ("embers", "drift"), 0.85),
            _s(
                ("enchanted forest with glowing spores", "spores floating and glowing"),
                ("floating islands above the clouds", "clouds drifting under the islands"),
                ("medieval village by torchlight", "torches flickering and embers rising"),
                ("crystal cavern", "light glinting as crystals shimmer"),
            ),
        ),
        "graphic": (
            Look((250, 240, 200), (250, 200, 80), (60, 60, 60), "city", ("drift", "flicker"), 1.0, "ink"),
            _s(
                ("comic book city", "speed lines streaking and panels flashing"),
                ("pixel art landscape", "pixel clouds scrolling across the sky"),
                ("paper cut-out forest", "layers of paper trees sliding past each other"),
                ("ink wash mountains", "ink mist spreading across the peaks"),
            ),
        ),
    },
}

#: Sentence openers per theme (the verb that asks for a new background).
OPENERS: dict[str, tuple[str, ...]] = {
    "location": ("Move the subject to", "Place the subject in", "Replace the background with"),
    "season": (
        "Change the season so the background becomes",
        "Put the subject in",
        "Turn the surroundings into",
    ),
    "time": ("Set the scene in", "Change the time of day to show", "Place the subject in"),
    "style": ("Restyle the background as", "Transform the surroundings into", "Set the subject in"),
    "openve3m": ("Replace the background with",),
}

THEMES: tuple[str, ...] = tuple(TAXONOMY)


def subthemes(theme: str) -> list[str]:
    return list(TAXONOMY[theme])


def scenes(theme: str) -> list[str]:
    """Every ``"subtheme: scene"`` keyword of ``theme``, in taxonomy order."""
    return [f"{sub}: {scene.text}" for sub, (_, items) in TAXONOMY[theme].items() for scene in items]


def count() -> tuple[int, int, int]:
    """(themes, subthemes, scenes)."""
    subs = sum(len(t) for t in TAXONOMY.values())
    return len(TAXONOMY), subs, sum(len(scenes(t)) for t in TAXONOMY)


def stable_hash(*parts: object) -> int:
    """A hash that is the same in every process (Python's ``hash`` of str is salted per process)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


def check_themes(themes: object) -> tuple[str, ...]:
    """``themes`` as a tuple of taxonomy themes; an unknown or empty selection is refused by name."""
    chosen = tuple(themes) if themes else ()
    if not chosen:
        raise ValueError("at least one theme is needed")
    for theme in chosen:
        if theme not in TAXONOMY:
            raise ValueError(f"unknown theme {theme!r}; the taxonomy has {', '.join(TAXONOMY)}")
    return chosen


def options_text(themes: tuple[str, ...] | list[str]) -> str:
    """The allowed choices as a VLM reads them: one line per subtheme, ``theme / subtheme: scene; ...``."""
    lines = []
    for theme in check_themes(themes):
        for sub, (_, items) in TAXONOMY[theme].items():
            lines.append(f"{theme} / {sub}: " + "; ".join(scene.text for scene in items))
    return "\n".join(lines)


def _norm(text: object) -> str:
    return " ".join(str(text).strip().strip(".").lower().split()) if isinstance(text, str) else ""


def resolve_choice(
    theme: object, subtheme: object, scene: object, themes: tuple[str, ...] | list[str]
) -> tuple[str, str] | None:
    """``(theme, "subtheme: scene")`` when the three name one scene of the allowed ``themes``
    (case and spacing aside), else ``None``: a choice outside the taxonomy is not a choice."""
    t, sub, sc = _norm(theme), _norm(subtheme), _norm(scene)
    if t not in themes or t not in TAXONOMY:
        return None
    for name, (_, items) in TAXONOMY[t].items():
        if name == sub:
            for item in items:
                if item.text == sc:
                    return t, f"{name}: {item.text}"
    return None


def lookup(chosen_keyword: str) -> tuple[str, Look, Scene] | None:
    """(theme, look, scene) for a keyword of the taxonomy, or ``None``."""
    kw = parse_chosen_keyword(chosen_keyword)
    if kw is None:
        return None
    for theme, subs in TAXONOMY.items():
        if kw.subtheme in subs:
            look, items = subs[kw.subtheme]
            for scene in items:
                if scene.text == kw.scene:
                    return theme, look, scene
    return None


def find_in_prompt(prompt: str) -> tuple[str, str, Look, Scene] | None:
    """The taxonomy scene an instruction names (the longest match), as (theme, subtheme, look, scene)."""
    text = prompt.lower()
    best = None
    for theme, subs in TAXONOMY.items():
        for sub, (look, items) in subs.items():
            for scene in items:
                if scene.text in text and (best is None or len(scene.text) > len(best[3].text)):
                    best = (theme, sub, look, scene)
    return best


def compose_prompt(theme: str, chosen_keyword: str, seed: int = 0) -> str:
    """The instruction for a keyword: an opener, the scene, its motion, and a lighting clause."""
    found = lookup(chosen_keyword)
    if found is None:
        raise ValueError(f"{chosen_keyword!r} is not a scene of the taxonomy")
    _, look, scene = found
    openers = OPENERS.get(theme, OPENERS["openve3m"])
    opener = openers[stable_hash(seed, chosen_keyword) % len(openers)]
    article = "an" if scene.text[0] in "aeiou" else "a"
    light = (
        "dim, moody light" if look.brightness < 0.75 else "natural light that matches the new surroundings"
    )
    return (
        f"{opener} {article} {scene.text}, with {scene.motion} in the background, "
        f"and relight the subject with {light}."
    )
