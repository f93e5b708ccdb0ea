"""cifar_dcgan.image_folder: folder layouts, the stable split, decoding and conversions, and
hostile files that must be skipped with a reason, never a traceback."""

import hashlib
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_dcgan import image_folder
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.image_folder import Entry, SkipImage, content_digest, load_image, scan

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def write_image(path: Path, size=(8, 8), color=RED, mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save)
    return path


def rel_paths(result: image_folder.Scan, root: Path) -> list[str]:
    return [entry.path.relative_to(root).as_posix() for entry in result.entries]


def skip_reasons(result: image_folder.Scan) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in result.skipped}


def load_rejected(path: Path) -> str:
    with pytest.raises(SkipImage) as caught:
        load_image(path, 8, 3)
    return str(caught.value)


# Layouts


def test_flat_folder_is_unlabeled_ignores_hidden_and_reports_other_files(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.gif", "f.webp", "g.tif", "h.TIFF"):
        write_image(tmp_path / name)
    write_image(tmp_path / ".hidden.png")
    write_image(tmp_path / ".thumbnails" / "x.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "README").write_text("hello")
    result = scan(tmp_path, 0.0)
    assert rel_paths(result, tmp_path) == sorted(
        ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.gif", "f.webp", "g.tif", "h.TIFF"]
    )
    assert result.class_names == []
    assert {(entry.label, entry.split) for entry in result.entries} == {(0, "train")}
    assert all(entry.path.parent == tmp_path for entry in result.entries)  # not resolved
    assert skip_reasons(result) == {
        "README": "not an image extension (none)",
        "notes.txt": "not an image extension (.txt)",
    }


def test_class_folders_are_labeled_in_sorted_order(tmp_path):
    for name in ("dog/1.png", "dog/2.png", "cat/1.png", "bird/1.png"):
        write_image(tmp_path / name)
    write_image(tmp_path / "cat" / "nested" / "deep.png")
    (tmp_path / "empty").mkdir()
    result = scan(tmp_path, 0.0)
    assert result.class_names == ["bird", "cat", "dog"]
    assert rel_paths(result, tmp_path) == ["bird/1.png", "cat/1.png", "dog/1.png", "dog/2.png"]
    assert [entry.label for entry in result.entries] == [0, 1, 2, 2]
    assert skip_reasons(result) == {
        "cat/nested": "folder inside a class folder: not used",
        "empty": "class folder with no images: not used",
    }


def test_a_single_class_folder_is_unlabeled(tmp_path):
    write_image(tmp_path / "faces" / "1.png")
    write_image(tmp_path / "faces" / "2.png")
    result = scan(tmp_path, 0.0)
    assert result.class_names == []
    assert rel_paths(result, tmp_path) == ["faces/1.png", "faces/2.png"]
    assert {entry.label for entry in result.entries} == {0}


def test_train_and_test_folders_set_the_split(tmp_path):
    for name in ("train/cat/1.png", "train/dog/1.png", "Test/cat/2.png", "Test/dog/2.png"):
        write_image(tmp_path / name)
    write_image(tmp_path / "stray.png")
    (tmp_path / "other").mkdir()
    result = scan(tmp_path, 0.9)  # ignored: the folders decide
    assert result.class_names == ["cat", "dog"]
    found = [(e.path.relative_to(tmp_path).as_posix(), e.label, e.split) for e in result.entries]
    assert found == [
        ("Test/cat/2.png", 0, "test"),
        ("Test/dog/2.png", 1, "test"),
        ("train/cat/1.png", 0, "train"),
        ("train/dog/1.png", 1, "train"),
    ]
    assert set(skip_reasons(result)) == {"stray.png", "other"}


def test_flat_train_and_test_folders_are_unlabeled(tmp_path):
    write_image(tmp_path / "train" / "a.png")
    write_image(tmp_path / "test" / "b.png")
    result = scan(tmp_path, 0.5)
    assert result.class_names == []
    assert [(e.path.name, e.label, e.split) for e in result.entries] == [
        ("b.png", 0, "test"),
        ("a.png", 0, "train"),
    ]


@pytest.mark.parametrize("present", ["train", "test"])
def test_only_one_of_train_and_test_is_an_error(tmp_path, present):
    write_image(tmp_path / present / "a.png")
    with pytest.raises(PipelineError, match=f"has {present}/ but no"):
        scan(tmp_path, 0.2)


def test_class_folder_missing_from_test_is_an_error(tmp_path):
    for name in ("train/cat/1.png", "train/dog/1.png", "test/cat/1.png", "test/cow/1.png"):
        write_image(tmp_path / name)
    mismatch = r"train: class folder dog/ has no counterpart in .*test"
    with pytest.raises(PipelineError, match=mismatch):
        scan(tmp_path, 0.2)


def test_class_folders_in_train_but_images_directly_in_test_is_an_error(tmp_path):
    for name in ("train/cat/1.png", "train/dog/1.png", "test/1.png"):
        write_image(tmp_path / name)
    with pytest.raises(PipelineError, match=r"test: holds images directly but .*train holds class"):
        scan(tmp_path, 0.2)


def test_images_next_to_class_folders_is_an_error_naming_the_folder(tmp_path):
    write_image(tmp_path / "train" / "cat" / "1.png")
    write_image(tmp_path / "train" / "loose.png")
    write_image(tmp_path / "test" / "1.png")
    with pytest.raises(PipelineError, match=r"train: holds both images \(1\) and folders"):
        scan(tmp_path, 0.2)


def test_more_than_max_classes_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "MAX_CLASSES", 2)
    for name in ("a", "b", "c"):
        write_image(tmp_path / name / "1.png")
    with pytest.raises(PipelineError, match="3 class folders, more than the 2 supported"):
        scan(tmp_path, 0.2)


def test_missing_root_file_root_and_empty_root_are_errors(tmp_path):
    with pytest.raises(PipelineError, match="no such folder"):
        scan(tmp_path / "absent", 0.2)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(PipelineError, match="not a folder"):
        scan(tmp_path / "file.png", 0.2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"empty: no usable images: add images \(\.bmp"):
        scan(tmp_path / "empty", 0.2)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(PipelineError, match=r"1 files or folders skipped, such as notes.txt"):
        scan(tmp_path / "junk", 0.2)


# The split


def test_split_follows_the_hash_of_the_relative_path_and_is_stable(tmp_path):
    for i in range(200):
        (tmp_path / f"{i:03d}.png").write_bytes(b"")  # scan does not decode
    before = {e.path.name: e.split for e in scan(tmp_path, 0.2).entries}
    held = [name for name, split in before.items() if split == "test"]
    assert 0.12 * 200 <= len(held) <= 0.28 * 200
    for name, split in before.items():
        digest = hashlib.md5(name.encode()).hexdigest()
        assert split == ("test" if int(digest[:8], 16) / 2**32 < 0.2 else "train")
    for i in range(200, 400):
        (tmp_path / f"{i:03d}.png").write_bytes(b"")
    (tmp_path / "000.png").unlink()
    after = {e.path.name: e.split for e in scan(tmp_path, 0.2).entries}
    assert {name: after[name] for name in before if name != "000.png"} == {
        name: split for name, split in before.items() if name != "000.png"
    }
    assert {e.split for e in scan(tmp_path, 0.0).entries} == {"train"}
    assert {e.split for e in scan(tmp_path, 1.0).entries} == {"test"}


def test_the_split_hashes_the_class_folder_too(tmp_path):
    write_image(tmp_path / "cat" / "1.png")
    write_image(tmp_path / "dog" / "1.png")
    for i in range(20):
        write_image(tmp_path / "cat" / f"{i}.png")
    for entry in scan(tmp_path, 0.5).entries:
        rel = entry.path.relative_to(tmp_path).as_posix()  # "cat/1.png", not "1.png"
        held = int(hashlib.md5(rel.encode()).hexdigest()[:8], 16) / 2**32 < 0.5
        assert entry.split == ("test" if held else "train")
        assert image_folder.held_out(rel, 0.5) == held


# Decoding


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), WHITE)
    image.paste(RED, (0, 0, 20, 4))  # a red band along the stored top edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif, quality=95, subsampling=0)
    out = load_image(path, 10, 3).astype(int)
    # displayed 10x20, centre square kept: the band is now the right edge
    assert out.shape == (10, 10, 3)
    assert (out[:, -1, 0] > 200).all() and (out[:, -1, 1] < 80).all()
    assert (out[:, 0] > 200).all()  # left edge white: rotated the right way, not 8's way
    assert (out[0, 2:5] > 200).all()  # top stays white: not left unrotated


def palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.paste(1, (0, 0, 8, 4))  # top half green, bottom half red
    if transparent:
        image.info["transparency"] = 1  # the green half is see-through
    return image


CONVERSIONS = {  # name -> (image, file suffix, expected top-left and bottom-right RGB)
    "palette": (palette_image(False), ".png", GREEN, RED),
    "palette with transparency": (palette_image(True), ".gif", WHITE, RED),
    "RGBA": (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), ".png", WHITE, WHITE),
    "LA": (Image.new("LA", (8, 8), (0, 0)), ".png", WHITE, WHITE),
    "grey": (Image.new("L", (8, 8), 100), ".png", (100,) * 3, (100,) * 3),
    "bilevel": (Image.new("1", (8, 8), 1), ".bmp", WHITE, WHITE),
    "CMYK": (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), ".tif", RED, RED),
    "16-bit": (Image.fromarray(np.full((8, 8), 0x8000, np.uint16)), ".png", (128,) * 3, (128,) * 3),
    "32-bit int": (Image.fromarray(np.full((8, 8), 0xFFFF, np.int32)), ".tif", WHITE, WHITE),
}


@pytest.mark.parametrize("name", CONVERSIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_modes_convert_to_rgb_and_grey(tmp_path, name, channels):
    image, suffix, top_left, bottom_right = CONVERSIONS[name]
    path = tmp_path / f"image{suffix}"
    image.save(path)
    out = load_image(path, 8, channels)
    assert out.shape == (8, 8, channels) and out.dtype == np.uint8
    for pixel, rgb in ((out[0, 0], top_left), (out[-1, -1], bottom_right)):
        luma = round((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000)  # Pillow's "L"
        expected = rgb if channels == 3 else [luma]
        np.testing.assert_allclose(pixel, expected, atol=1)


def test_half_transparent_pixels_are_composited_on_white(tmp_path):
    path = write_image(tmp_path / "a.png", color=(255, 0, 0, 128), mode="RGBA")
    np.testing.assert_allclose(load_image(path, 8, 3)[4, 4], (255, 127, 127), atol=1)


def test_sixteen_bit_keeps_the_top_eight_bits(tmp_path):
    values = np.array([[0, 255, 256, 0x8000, 0xFFFF]] * 5, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    np.testing.assert_array_equal(load_image(path, 5, 1)[2, :, 0], [0, 0, 1, 128, 255])


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), color) for color in (BLUE, RED, GREEN)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as image:
        assert image.n_frames == 3
    np.testing.assert_allclose(load_image(path, 8, 3)[4, 4], BLUE, atol=1)


@pytest.mark.parametrize("size", [(60, 20), (20, 60)])
def test_crop_keeps_the_centre_square_of_the_long_edge(tmp_path, size):
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (40, 40, 60, 60) if size[0] < 60 else (40, 0, 60, 20))
    image.paste(GREEN, (0, 20, 20, 40) if size[0] < 60 else (20, 0, 40, 20))
    path = tmp_path / "wide.png"
    image.save(path)
    out = load_image(path, 10, 3)
    np.testing.assert_allclose(out, np.broadcast_to(GREEN, (10, 10, 3)), atol=2)


def test_a_tiny_image_is_upscaled(tmp_path):
    path = write_image(tmp_path / "dot.png", size=(1, 1), color=GREEN)
    np.testing.assert_array_equal(load_image(path, 16, 3), np.broadcast_to(GREEN, (16, 16, 3)))


def test_downsampling_is_antialiased(tmp_path):
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel black and white columns
    path = tmp_path / "stripes.png"
    Image.fromarray(stripes).save(path)
    out = load_image(path, 16, 1).astype(int)
    assert np.abs(out[:, 1:-1] - 128).max() <= 3  # mid-grey, not sampled stripes (0 or 255)
    assert np.abs(out - 128).max() <= 16  # the filter's edge handling shows at the borders


def test_large_jpegs_are_decoded_reduced_but_still_smooth(tmp_path):
    image = Image.new("RGB", (1600, 1200), BLUE)
    image.paste(RED, (200, 0, 1400, 1200))
    path = tmp_path / "big.jpg"
    image.save(path, quality=95)
    out = load_image(path, 32, 3)
    np.testing.assert_allclose(out[16, 16], RED, atol=4)


def test_bad_arguments_are_programming_errors(tmp_path):
    path = write_image(tmp_path / "a.png")
    with pytest.raises(ValueError):
        load_image(path, 8, 2)
    with pytest.raises(ValueError):
        scan(tmp_path, 1.5)


# Hostile files: each skipped with its reason


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert load_rejected(tmp_path / "empty.png") == "empty file (0 bytes)"


def test_non_image_with_an_image_extension(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image at all\n" * 10)
    assert "not a PNG, JPEG, BMP, GIF, WebP or TIFF image" in load_rejected(tmp_path / "text.jpg")


def test_postscript_named_png_never_reaches_ghostscript(tmp_path):
    path = tmp_path / "evil.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert "not a PNG, JPEG" in load_rejected(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".gif", ".webp", ".tif", ".bmp"])
def test_truncated_files(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    path = tmp_path / f"full{suffix}"
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    reason = load_rejected(cut)
    assert reason.startswith(("cannot decode", "not a PNG")), reason
    assert str(tmp_path) not in reason  # the report names the file already


def test_corrupt_png_chunk(tmp_path):
    path = write_image(tmp_path / "a.png", size=(16, 16))
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 4 : idat + 12] = b"\xff" * 8  # garbage in the compressed pixels
    path.write_bytes(bytes(data))
    assert load_rejected(path).startswith("cannot decode")


def test_a_huge_declared_size_is_skipped_before_decoding(tmp_path):
    path = write_image(tmp_path / "a.png", size=(4, 4))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width and height: 10^10 pixels
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))  # a valid header, a lying one
    path.write_bytes(bytes(data))
    reason = load_rejected(path)
    assert "too large to decode safely" in reason and "10000000000 pixels" in reason


# above twice the limit Pillow raises an error, above the limit it warns: both are skipped
@pytest.mark.parametrize("pixels", [60 * 60, 30 * 60])
def test_decompression_bomb(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = write_image(tmp_path / "bomb.png", size=(pixels // 60, 60))
    reason = load_rejected(path)
    assert reason.startswith("too large to decode safely") and f"({pixels} pixels)" in reason


def test_pillow_warnings_stay_local(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = write_image(tmp_path / "bomb.png", size=(30, 60))
    load_rejected(path)
    with pytest.warns(Image.DecompressionBombWarning):  # outside load_image: a warning again
        Image.open(path).close()


def test_symlinks_out_of_the_folder_are_skipped(tmp_path):
    outside = write_image(tmp_path / "outside" / "secret.png")
    write_image(tmp_path / "outside" / "cls" / "x.png")
    root = tmp_path / "root"
    write_image(root / "ok.png")
    (root / "link.png").symlink_to(outside)
    (root / "relative.png").symlink_to(Path("..") / "outside" / "secret.png")
    (root / "folder").symlink_to(tmp_path / "outside" / "cls")
    (root / "inside.png").symlink_to(root / "ok.png")  # a link within the folder is fine
    (root / "broken.png").symlink_to(root / "missing.png")
    result = scan(root, 0.0)
    assert rel_paths(result, root) == ["inside.png", "ok.png"]
    reasons = skip_reasons(result)
    assert set(reasons) == {"link.png", "relative.png", "folder", "broken.png"}
    assert reasons["link.png"].startswith("symlink leading out of the folder")
    assert reasons["folder"].startswith("symlink leading out of the folder")
    assert reasons["broken.png"].startswith("broken symlink")


def test_symlinked_root_is_allowed(tmp_path):
    write_image(tmp_path / "real" / "a.png")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert rel_paths(scan(tmp_path / "alias", 0.0), tmp_path / "alias") == ["a.png"]


def test_fifo_named_like_an_image_is_skipped_not_opened(tmp_path):
    write_image(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.png")
    assert skip_reasons(scan(tmp_path, 0.0)) == {"pipe.png": "not a regular file"}
    assert load_rejected(tmp_path / "pipe.png") == "not a regular file"


def test_every_hostile_file_in_a_folder_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "root"
    write_image(root / "good.png")
    write_image(root / "bomb.png", size=(60, 60))
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.gif").write_text("GIF? no")
    (root / "cut.png").write_bytes(write_image(tmp_path / "whole.png").read_bytes()[:40])
    result = scan(root, 0.0)
    loaded, reasons = [], {}
    for entry in result.entries:
        try:
            loaded.append(load_image(entry.path, 8, 3))
        except SkipImage as reason:
            reasons[entry.path.name] = str(reason)
    assert len(loaded) == 1
    assert set(reasons) == {"bomb.png", "zero.jpg", "text.gif", "cut.png"}
    assert all(reasons.values())


# Provenance


def test_content_digest_follows_the_image_files_only(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for name in ("cat/a.png", "cat/b.png", "dog/c.png"):
        write_image(one / name)
    first = content_digest(one)
    expected = hashlib.md5()
    for rel in ("cat/a.png", "cat/b.png", "dog/c.png"):
        expected.update(f"{rel}\0{hashlib.md5((one / rel).read_bytes()).hexdigest()}\n".encode())
    assert first == expected.hexdigest()
    shutil.copytree(one, two)
    assert content_digest(two) == first  # where the folder is does not matter
    (two / "notes.txt").write_text("x")
    write_image(two / ".hidden.png")
    assert content_digest(two) == first  # unused files do not count
    write_image(two / "cat" / "b.png", color=BLUE)
    assert content_digest(two) != first  # an edit does
    shutil.rmtree(two)
    shutil.copytree(one, two)
    (two / "cat" / "b.png").rename(two / "cat" / "z.png")
    assert content_digest(two) != first  # and so does a rename


def test_entry_is_frozen(tmp_path):
    entry = Entry(tmp_path, 0, "train")
    with pytest.raises(AttributeError):
        entry.label = 1  # type: ignore[misc]
