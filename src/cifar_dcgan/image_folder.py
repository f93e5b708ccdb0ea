"""A user's folder of images as uint8 arrays for training: `scan` lists what is usable, with
labels and a train/test split; `load_image` decodes one file into a square
(resolution, resolution, channels) array; `content_digest` fingerprints the files for provenance.

Layout under the root folder:

    root/                        root/                       root/
      a.png b.jpg ...              cat/ dog/ ...               train/ test/
      (unlabeled)                  (one class per folder)      (each flat, or both with
                                                                the same class folders)

Without train/ and test/ the whole folder is one pool and a file is held out for testing by a
hash of its relative path, so adding files never moves the existing ones between splits. Two or
more class folders make the images labeled; a single class folder counts as unlabeled. Hidden
files and folders (name starting with '.') are ignored; anything else unusable is skipped and
reported with its reason, and only a folder that cannot be used as a whole is an error.
"""

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar_dcgan.errors import PipelineError, clip

MAX_CLASSES = 256  # labels are stored as uint8
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# The only decoders Pillow may try, whatever a file's bytes claim to be: a ".png" that is
# really PostScript must not reach Ghostscript. ("JPEG" also opens multi-picture MPO files.)
PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP or TIFF"
SPLITS = ("train", "test")
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
WHITE = (255, 255, 255, 255)
DIGEST_CHUNK = 1 << 20  # bytes read at a time when hashing a file


@dataclass(frozen=True)
class Entry:
    path: Path  # root / relative path, as scanned (not resolved)
    label: int  # index into Scan.class_names; 0 when unlabeled
    split: str  # "train" | "test"


@dataclass(frozen=True)
class Scan:
    entries: list[Entry]  # sorted by relative path
    class_names: list[str]  # empty when unlabeled
    skipped: list[dict]  # {"path": path relative to root, "reason": why it is not used}


class SkipImage(Exception):
    """One file cannot be used; the message is the reason, for the skipped report."""


@dataclass
class _Folder:
    """One folder's usable contents: image files and sub-folders, as paths relative to root."""

    images: list[str]
    folders: list[str]


def scan(root: Path, test_fraction: float) -> Scan:
    """The usable image files under `root` with their labels and splits; `test_fraction` is the
    share held out when there are no train/ and test/ folders (ignored when there are)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], not {test_fraction!r}")
    real_root = _real_root(root)
    skipped: list[dict] = []
    top = _list_folder(root, real_root, "", skipped)
    split_folders = _split_folders(root, top.folders)
    if split_folders:
        for path in top.images + [f for f in top.folders if f not in split_folders.values()]:
            skipped.append({"path": path, "reason": "next to train/ and test/: not used"})
        by_split = {}
        for split in SPLITS:
            listing = _list_folder(root, real_root, split_folders[split], skipped)
            by_split[split] = _classes(root, real_root, split_folders[split], listing, skipped)
        class_names = _matching_classes(root, split_folders, by_split)
        files = {
            rel: (label_name, split)
            for split, classes in by_split.items()
            for label_name, paths in classes.items()
            for rel in paths
        }
    else:
        classes = _classes(root, real_root, "", top, skipped)
        class_names = sorted(classes) if len(classes) >= 2 else []
        files = {
            rel: (label_name, "test" if held_out(rel, test_fraction) else "train")
            for label_name, paths in classes.items()
            for rel in paths
        }
    if not files:
        raise PipelineError(f"{clip(root)}: no usable images{_skip_summary(skipped)}")
    labels = {name: label for label, name in enumerate(class_names)}
    entries = [
        Entry(root / rel, labels.get(label_name, 0), split)
        for rel, (label_name, split) in sorted(files.items())
    ]
    return Scan(entries, class_names, sorted(skipped, key=lambda item: item["path"]))


def held_out(relative_path: str, test_fraction: float) -> bool:
    """Whether a file goes to the test split: decided by its own path alone, so the split of
    the files already there never changes when others are added or removed."""
    digest = hashlib.md5(os.fsencode(relative_path)).hexdigest()
    return int(digest[:8], 16) / 2**32 < test_fraction


def load_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    """The image at `path` upright (EXIF orientation), cropped to its centre square, resized to
    `resolution` with Lanczos filtering: (resolution, resolution, channels) uint8. Transparent
    pixels are composited on white; 16-bit images keep their top 8 bits; an animation gives its
    first frame. Raises SkipImage with the reason for any file that cannot be used."""
    if resolution < 1 or channels not in (1, 3):
        wanted = f"resolution {resolution}, channels {channels}"
        raise ValueError(f"{wanted}: resolution must be >= 1 and channels 1 or 3")
    try:
        info = path.stat()
    except OSError as error:
        raise SkipImage(f"cannot read: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SkipImage("not a regular file")  # a FIFO or a device would block or never end
    if info.st_size == 0:
        raise SkipImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="PIL")  # corrupt-EXIF notices, once per file
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is skipped
        try:
            with Image.open(path, formats=PIL_FORMATS) as image:
                image.draft(None, (2 * resolution, 2 * resolution))  # JPEG: decode at 1/2..1/8
                image.load()
                upright = ImageOps.exif_transpose(image)
                square = _square(_eight_bit(upright), resolution)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise SkipImage(f"too large to decode safely: {error}") from None
        except SkipImage:
            raise
        except UnidentifiedImageError:
            raise SkipImage(f"not a {FORMAT_NAMES} image (or damaged beyond recognition)") from None
        except Exception as error:  # hostile bytes fail anywhere in a decoder: skip, never crash
            raise SkipImage(f"cannot decode ({type(error).__name__}: {clip(error)})") from None
    target = square.convert("L" if channels == 1 else "RGB")
    return np.asarray(target, dtype=np.uint8).reshape(resolution, resolution, channels)


def content_digest(root: Path) -> str:
    """md5 over the sorted (relative path, md5 of the bytes) of every image file `scan` uses:
    it changes when an image is added, removed, renamed or edited, and only then."""
    total = hashlib.md5()
    for entry in scan(root, 0.0).entries:
        relative = entry.path.relative_to(root).as_posix()
        total.update(os.fsencode(relative) + b"\0" + _file_md5(entry.path).encode() + b"\n")
    return total.hexdigest()


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(DIGEST_CHUNK):
                digest.update(chunk)
    except OSError as error:
        return f"unreadable: {error.strerror or error}"  # load_image will skip it too
    return digest.hexdigest()


def _real_root(root: Path) -> Path:
    if not root.exists():
        raise PipelineError(f"{clip(root)}: no such folder: set the path of your image folder")
    if not root.is_dir():
        raise PipelineError(f"{clip(root)}: not a folder: give the folder that holds the images")
    return Path(os.path.realpath(root))


def _list_folder(root: Path, real_root: Path, rel: str, skipped: list[dict]) -> _Folder:
    """The images and sub-folders of root/rel; hidden names are ignored, and links out of root,
    non-image files and anything unreadable are added to `skipped`."""
    folder = _Folder([], [])
    try:
        with os.scandir(root / rel) as listing:
            names = sorted(item.name for item in listing)
    except OSError as error:
        if not rel:
            problem = error.strerror or error
            message = f"{clip(root)}: cannot list it ({problem}): check its permissions"
            raise PipelineError(message) from None
        reason = f"cannot list the folder: {error.strerror or error}"
        skipped.append({"path": rel, "reason": reason})
        return folder
    for name in names:
        if name.startswith("."):
            continue
        child = f"{rel}/{name}" if rel else name
        reason = _unusable(root / child, real_root)
        if reason:
            skipped.append({"path": child, "reason": reason})
        elif (root / child).is_dir():
            folder.folders.append(child)
        elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            folder.images.append(child)
        else:
            suffix = Path(name).suffix
            skipped.append(
                {"path": child, "reason": f"not an image extension ({clip(suffix, 20) or 'none'})"}
            )
    return folder


def _unusable(path: Path, real_root: Path) -> str | None:
    """Why `path` cannot be used at all (a link out of root, a broken link, not a file or
    folder), or None."""
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(real_root):
        return f"symlink leading out of the folder (to {clip(real)})"
    try:
        mode = real.stat().st_mode
    except OSError as error:
        problem = error.strerror or str(error)
        return f"broken symlink ({problem})" if path.is_symlink() else f"cannot read: {problem}"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file"
    return None


def _split_folders(root: Path, folders: list[str]) -> dict[str, str]:
    """ "train"/"test" -> the folder name that holds it (any letter case); both or neither."""
    found: dict[str, str] = {}
    for name in folders:
        split = name.lower()
        if split in SPLITS:
            if split in found:  # train/ and Train/ side by side
                raise PipelineError(
                    f"{clip(root)}: has both {clip(found[split])}/ and {clip(name)}/: keep one"
                )
            found[split] = name
    if len(found) == 1:
        (present,) = found.values()
        missing = next(split for split in SPLITS if split not in found)
        raise PipelineError(
            f"{clip(root)}: has {clip(present)}/ but no {missing}/: add {missing}/ with the same "
            f"layout, or move {clip(present)}/'s contents up so prepare.test_fraction holds "
            "test images out"
        )
    return found


def _classes(
    root: Path, real_root: Path, rel: str, folder: _Folder, skipped: list[dict]
) -> dict[str, list[str]]:
    """Class name -> image paths for root/rel, listed as `folder`: its class folders that hold
    images, or {"": its images} when it holds images directly."""
    if folder.images and folder.folders:
        raise PipelineError(
            f"{clip(root / rel)}: holds both images ({len(folder.images)}) and folders (such as "
            f"{clip(Path(folder.folders[0]).name)}/): move every image into a class folder, "
            "or remove the folders"
        )
    if folder.images:
        return {"": folder.images}
    classes: dict[str, list[str]] = {}
    for class_rel in folder.folders:
        inside = _list_folder(root, real_root, class_rel, skipped)
        for nested in inside.folders:  # class folders hold images only: no deeper labels
            skipped.append({"path": nested, "reason": "folder inside a class folder: not used"})
        if inside.images:
            classes[Path(class_rel).name] = inside.images
        else:
            skipped.append({"path": class_rel, "reason": "class folder with no images: not used"})
    if len(classes) > MAX_CLASSES:
        raise PipelineError(
            f"{clip(root / rel)}: {len(classes)} class folders, more than the {MAX_CLASSES} "
            "supported: merge classes, or put the images directly in the folder (unlabeled)"
        )
    return classes


def _matching_classes(
    root: Path, split_folders: dict[str, str], by_split: dict[str, dict[str, list[str]]]
) -> list[str]:
    """The class names shared by train/ and test/ (empty when unlabeled); a class in only one
    of them is an error, since its label would mean nothing in the other."""
    names = {split: set(classes) for split, classes in by_split.items()}
    if len(names["train"]) < 2 and len(names["test"]) < 2:
        return []  # both unlabeled: a single class folder is just a folder of images
    pairs = [
        (split, other, clip(root / split_folders[split]), clip(root / split_folders[other]))
        for split, other in (("train", "test"), ("test", "train"))
    ]
    for split, _, here, there in pairs:
        if "" in names[split]:  # this side holds images directly, the other class folders
            raise PipelineError(
                f"{here}: holds images directly but {there} holds class folders: "
                "give train/ and test/ the same class folders"
            )
    for split, other, here, there in pairs:
        extra = sorted(names[split] - names[other])
        if extra:
            raise PipelineError(
                f"{here}: class folder {clip(extra[0])}/ has no counterpart in {there}: "
                "give train/ and test/ the same class folders (with images in each)"
            )
    return sorted(names["train"])


def _skip_summary(skipped: list[dict]) -> str:
    if not skipped:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        return f": add images ({extensions}) directly or in one folder per class"
    first = skipped[0]
    return (
        f"; {len(skipped)} files or folders skipped, such as {clip(first['path'])} "
        f"({first['reason']}): add usable images"
    )


def _eight_bit(image: Image.Image) -> Image.Image:
    """`image` as "L" or "RGB": transparency composited on white, 16 bits cut to 8."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)  # "I" is int32 but holds 16-bit samples
        return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")
    if image.mode == "F":
        raise SkipImage("32-bit float image: its value range is unknown; save it as 8-bit")
    if image.has_transparency_data:
        # white, not the colour hidden under transparent pixels (often black)
        white = Image.new("RGBA", image.size, WHITE)
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode in ("1", "L", "RGB"):
        return image.convert("L") if image.mode == "1" else image
    return image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, I;16 variants already handled


def _square(image: Image.Image, resolution: int) -> Image.Image:
    """The centre square of `image` (cut on the long edge) resized to `resolution`."""
    width, height = image.size
    if width == 0 or height == 0:
        raise SkipImage(f"empty image ({width}x{height} pixels)")
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # crop first: resize(box=...) would let the filter reach past the square's edges
    square = image.crop((left, top, left + side, top + side))
    return square.resize((resolution, resolution), Image.LANCZOS)
