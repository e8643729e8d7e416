"""Natural photographs that Python and Debian packages ship, split into train and held-out.

Sources (licences in NOTICE): scikit-image's bundled data, scikit-learn's sample images,
PyWavelets' images, matplotlib's sample photo, and the example photos of Debian's
``opencv-doc`` package (``apt-get download opencv-doc && dpkg-deb -x opencv-doc*.deb DIR``);
for the larger sets, the photographs of Debian's plasma-workspace-wallpapers, tuxpaint-data
(its templates), palapeli-data (its puzzle collection) and gcompris-qt-data (its activities'
photographs, inside Qt resource bundles), unpacked by models/fetch_photos.sh.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .qt_resources import read_rcc

# Held out from training: used only to evaluate the prior and DIIP (issue 3, 5).
HELD_OUT = (
    "skimage/chelsea",
    "skimage/coffee",
    "skimage/rocket",
    "sklearn/china",
    "opencv/baboon",
    "opencv/fruits",
    "opencv/building",
    "opencv/butterfly",
    "opencv/messi5",
    "opencv/home",
)

_SKIMAGE = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "motorcycle_left",
    "motorcycle_right",
    "rocket",
    "hubble_deep_field",
    "retina",
)
# opencv-doc examples/data: photographs only (no logos, text, charts, calibration boards).
_OPENCV = (
    "aero1",
    "aero3",
    "aloeL",
    "aloeR",
    "apple",
    "baboon",
    "basketball1",
    "board",
    "building",
    "butterfly",
    "chicky_512",
    "fruits",
    "graf1",
    "graf3",
    "HappyFish",
    "home",
    "leuvenA",
    "leuvenB",
    "lena",
    "messi5",
    "orange",
    "pic1",
    "pic2",
    "pic3",
    "pic4",
    "pic5",
    "pic6",
    "rubberwhale1",
    "smarties",
    "squirrel_cls",
    "starry_night",
    "stuff",
    "box_in_scene",
    "ela_original",
    "Blender_Suzanne1",
    "blox",
)

# plasma-workspace-wallpapers: the photographs only (no renders, paintings or abstract art);
# the wide photo set adds them to training, never to the held-out split.
_PLASMA = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "Volna",
    "summer_1am",
)
# tuxpaint-data's templates: Bill Kendrick's photographs (GPL-2+); mossy_bark is left out
# for its letterbox bars.  palapeli-data's puzzle collection: Wikimedia Commons photographs
# (public domain or GFDL, per each puzzle's .desktop file).  Training only, like _PLASMA.
_TUXPAINT = (
    "burnt_bark",
    "cliff",
    "corn_maze",
    "jellyfish",
    "lighthouse",
    "mossy_log",
    "mudstone",
    "ocean_splash",
    "ocean_waves",
    "redwoods_above",
    "rocks",
    "sheep",
    "spiders_web",
    "sun_behind_clouds",
    "sun_behind_leaves",
    "trees_above",
    "trees_at_dusk",
    "wool_mill_machine",
)
_PALAPELI = ("castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee", "panther-chameleon-female")
# gcompris-qt-data's activities: the photographs inside their Qt resource bundles (the word
# pictures of "lang" and the paintings of "details" are drawings or art, left out).  Strong
# webp compression, so they enter at half size (_GCOMPRIS_SCALE), where box-averaging hides
# most of it.  Training only, like _PLASMA.
_GCOMPRIS = {
    "erase": (
        "alpaca bee butterfly calf camels caterpillar chamaeleon cheetah crab dolphin flying_fox gibbon giraffe "
        "goat gorilla gosling heron horse kingfisher kitten long_nosed_monkey macaque meerkats northern_harrier "
        "nubian_ibex penguin pika red_panda rhinoceros spoonbills squirrel swans toucan"
    ).split(),
    "explore_monuments": (
        "ajantaCave arlesAmphitheater aulaPalatina bentPyramid berlinCathedral brandenburgGate cabrillo "
        "canyondeChelly castillodeSanMarcos castleClinton charminar chateaudeChambord chateaudeChenonceau "
        "chichenItza christTheRedeemer citedeCarcassonne colosseum eiffelTower fortSumter gatewayofIndia "
        "georgeWashingtonBirthplace goldenTemple greatPyramidOfGiza greatStupa greatWallofChina hawaMahal "
        "konarkSunTemple lincolnMemorial machuPicchu meidumPyramid montStMichel mountRushmore mysorePalace navajo "
        "neuschwansteinCastle palaisdesPapes petra pontduGard qutubMinar rangGhar redPyramid reimsCathedral "
        "rocamadour schwerinPalace statueofLiberty tajMahal trierImperialBaths victoriaMemorial wormsCathedral"
    ).split(),
    "explore_world_animals": (
        "bison chameleon crocodile dragon giraffe hedgehog jaguar kangaroo koala lemur moose narwhal panda "
        "polar_bear scarlet_macaw"
    ).split(),
    "explore_farm_animals": "cat chicken cow dog duck horse owl pig sheep".split(),
    "explore_world_music": "africa america australia ireland italy japan mexico middleeast orchestra".split(),
    "clickgame": "sea1 sea2 sea3 sea4 sea5 sea6".split(),
}
_GCOMPRIS_SCALE = 2

# Photo sets that diip-train can use: "default" is what models/default was trained on;
# "wide" adds the packaged wallpaper photographs (models/fetch_photos.sh --wide); "all"
# adds tuxpaint's and palapeli's photographs too (models/fetch_photos.sh --all); "more"
# adds GCompris' photographs to those (models/fetch_photos.sh --more).
PHOTO_SETS = ("default", "wide", "all", "more")

REPO_CACHE = Path(__file__).resolve().parents[2] / "cache" / "opencv-doc"  # models/fetch_photos.sh
OPENCV_DOC_DIRS = (str(REPO_CACHE), "/usr/share/doc/opencv-doc/examples/data")
# (folder under cache/ that models/fetch_photos.sh unpacks a package into, the photos'
# folder inside the package's tree, a path inside that folder that says it is there)
PACKAGE_PHOTO_DIRS = {
    "plasma": ("plasma-wallpapers", "usr/share/wallpapers", "Path/contents/images"),
    "tuxpaint": ("tuxpaint-data", "usr/share/tuxpaint/templates", "sheep.jpg"),
    "palapeli": ("palapeli-data", "usr/share/palapeli/collection", "citrus-fruits.jpg"),
    "gcompris": ("gcompris-qt-data", "usr/share/gcompris-qt/rcc", "erase.rcc"),
}


def _to_rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
    return np.repeat(a[..., None], 3, axis=2)


def find_opencv_doc(explicit: Optional[str] = None) -> Optional[Path]:
    """Locate opencv-doc's example data, unpacked or installed."""
    candidates = [explicit, os.environ.get("DIIP_OPENCV_DOC")] + list(OPENCV_DOC_DIRS)
    for c in candidates:
        if not c:
            continue
        p = Path(c)
        for sub in (p, p / "usr/share/doc/opencv-doc/examples/data"):
            if (sub / "baboon.jpg").exists():
                return sub
    return None


def find_package_photos(source: str) -> Optional[Path]:
    """Locate a PACKAGE_PHOTO_DIRS source's photo folder, unpacked into cache/ or installed."""
    unpacked, inside, marker = PACKAGE_PHOTO_DIRS[source]
    for root in (REPO_CACHE.parent / unpacked, Path("/")):
        if (root / inside / marker).exists():
            return root / inside
    return None


def _largest_image(folder: Path) -> Optional[Path]:
    """A wallpaper ships one picture at several sizes: the largest is the photograph."""
    images = [p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return max(images, key=lambda p: p.stat().st_size) if images else None


def load_photos(opencv_doc: Optional[str] = None, photo_set: str = "default") -> Dict[str, np.ndarray]:
    """All available photos of ``photo_set`` as HxWx3 float32 arrays in [0, 1], keyed 'source/name'."""
    if photo_set not in PHOTO_SETS:
        raise ValueError(f"unknown photo set {photo_set!r}; choose from {', '.join(PHOTO_SETS)}")
    photos: Dict[str, np.ndarray] = {}
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    for name in _SKIMAGE:
        for ext in (".png", ".jpg"):
            if (sk / (name + ext)).exists():
                photos[f"skimage/{name}"] = _to_rgb(Image.open(sk / (name + ext)))
    try:
        import sklearn

        for f in sorted((Path(sklearn.__file__).parent / "datasets/images").glob("*.jpg")):
            photos[f"sklearn/{f.stem}"] = _to_rgb(Image.open(f))
    except ImportError:
        pass
    try:
        import pywt

        for name in ("ascent", "aero"):
            photos[f"pywt/{name}"] = _gray_to_rgb(np.load(Path(pywt.__file__).parent / "data" / f"{name}.npz")["data"])
    except ImportError:
        pass
    try:
        import matplotlib

        hop = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hop.exists():
            photos["matplotlib/grace_hopper"] = _to_rgb(Image.open(hop))
    except ImportError:
        pass
    ocv = find_opencv_doc(opencv_doc)
    if ocv is not None:
        for name in _OPENCV:
            for ext in (".jpg", ".png"):
                if (ocv / (name + ext)).exists():
                    photos[f"opencv/{name}"] = _to_rgb(Image.open(ocv / (name + ext)))
                    break
    if photo_set == "default":
        return photos
    plasma = _package_folder("plasma", photo_set)
    for name in _PLASMA:
        best = _largest_image(plasma / name / "contents" / "images")
        if best is not None:
            photos[f"plasma/{name}"] = _to_rgb(Image.open(best))
    if photo_set in ("all", "more"):
        for source, names in (("tuxpaint", _TUXPAINT), ("palapeli", _PALAPELI)):
            folder = _package_folder(source, photo_set)
            for name in names:
                photos[f"{source}/{name}"] = _to_rgb(Image.open(folder / f"{name}.jpg"))
    if photo_set == "more":
        photos.update(_gcompris_photos())
    return photos


def _package_folder(source: str, photo_set: str) -> Path:
    """``find_package_photos(source)``, or the one-line error that says how to unpack it."""
    folder = find_package_photos(source)
    if folder is None:
        raise FileNotFoundError(
            f"the {photo_set} photo set needs {source}'s photos: run models/fetch_photos.sh --{photo_set}"
        )
    return folder


def _gcompris_photos() -> Dict[str, np.ndarray]:
    """_GCOMPRIS's photographs, read from the activities' resource bundles, at half size."""
    folder = _package_folder("gcompris", "more")
    photos: Dict[str, np.ndarray] = {}
    for activity, names in _GCOMPRIS.items():
        files = read_rcc(folder / f"{activity}.rcc")
        by_stem: Dict[str, List[str]] = {}
        for path in files:
            stem, _, ext = path.rsplit("/", 1)[-1].rpartition(".")
            if ext.lower() in ("webp", "jpg", "jpeg", "png"):
                by_stem.setdefault(stem, []).append(path)
        for name in names:
            found = by_stem.get(name, [])
            if len(found) != 1:
                raise FileNotFoundError(f"GCompris' {activity} bundle holds {len(found)} pictures called {name}, not 1")
            img = Image.open(io.BytesIO(files[found[0]])).convert("RGB")
            w, h = img.size
            img = img.resize((w // _GCOMPRIS_SCALE, h // _GCOMPRIS_SCALE), Image.Resampling.BOX)
            photos[f"gcompris/{activity}/{name}"] = _to_rgb(img)
    return photos


def split(photos: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(train, held_out) by the fixed HELD_OUT list."""
    train = {k: v for k, v in photos.items() if k not in HELD_OUT}
    held = {k: v for k, v in photos.items() if k in HELD_OUT}
    return train, held


@functools.lru_cache(maxsize=2)
def default_split(opencv_doc: Optional[str] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """``split(load_photos(opencv_doc))`` of the default set, decoded once per process for
    the benchmarks that cut crops from it several times; its arrays are read-only."""
    train, held = split(load_photos(opencv_doc))
    for img in (*train.values(), *held.values()):
        img.flags.writeable = False
    return train, held


def training_photos(names: List[str]) -> Dict[str, np.ndarray]:
    """The training photos called ``names``; a held-out or unknown name is an error,
    since benchmarks that choose defaults must choose on training photos only."""
    train, _ = default_split()
    for n in names:
        if n not in train:
            raise SystemExit(f"{n} is not a training photo: choose on training photos only")
    return {n: train[n] for n in names}


def center_crop(img: np.ndarray, size: int, scale: float = 1.0) -> np.ndarray:
    """Downscale by ``scale`` (area) then take the centre size x size crop."""
    if scale != 1.0:
        h, w = img.shape[:2]
        pil = Image.fromarray((img * 255).round().astype(np.uint8))
        pil = pil.resize((max(size, int(w * scale)), max(size, int(h * scale))), Image.Resampling.BOX)
        img = np.asarray(pil, dtype=np.float32) / 255.0
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def held_out_crops(
    size: int = 64, opencv_doc: Optional[str] = None, scale: float = 0.25
) -> List[Tuple[str, np.ndarray]]:
    """The evaluation set: a centre crop of each held-out photo, downscaled so a
    size x size crop shows a scene rather than a flat patch."""
    _, held = split(load_photos(opencv_doc))
    return [(k, center_crop(v, size, scale)) for k, v in sorted(held.items())]
