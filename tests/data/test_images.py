"""lintorch.data.images: every image mode decodes to the 8-bit RGB picture a viewer shows; sizes beyond memory are
refused."""
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lintorch.data import decoded_bytes, imagecache, load_dataset, sources
from lintorch.data.folders import decode, load_image
from lintorch.data.images import ImageModeError, file_problem, to_rgb
from lintorch.errors import DataError
from lintorch.predict import image_tensor
from tests.data.conftest import load_tree, tree


WHITE = (255, 255, 255)


def pixels(image):
    return np.asarray(image, dtype=np.int64)


def decoded(path):
    """The file as the image folders decode it -> (H, W, 3) int array."""
    image = load_image(str(path))
    assert image.mode == "RGB"
    return pixels(image)


def png16(path, rows, channels):
    """A 16-bit PNG (colour type 2: RGB, 6: RGBA) of rows, a (H, W, channels) uint16 array."""
    h, w, _ = rows.shape
    raw = b"".join(b"\0" + rows[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    kind = {3: 2, 4: 6}[channels]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- 16-bit and float

@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, mode, fmt):
    v = np.array([[0, 257, 1000, 32896], [40000, 65278, 65535, 300]], dtype=np.uint16)   # 32896 = 128 * 257
    image = Image.fromarray(v.astype(np.int32), "I") if mode == "I" else \
        Image.frombytes(mode, v.shape[::-1], v.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    path = tmp_path / f"g.{fmt.lower()}"
    image.save(path, fmt)
    assert Image.open(path).mode == mode
    got = decoded(path)
    expected = np.rint(v.astype(np.float64) * 255 / 65535).astype(np.int64)
    assert (got == expected[..., None]).all(), got[..., 0]


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png(tmp_path, channels):
    g = np.random.default_rng(0)
    v = g.integers(0, 65536, size=(5, 6, channels), dtype=np.uint16)
    if channels == 4:
        v[..., 3] = 65535                      # opaque: the colours show as they are
    png16(tmp_path / "c.png", v, channels)
    got = decoded(tmp_path / "c.png")
    assert np.abs(got - v[..., :3].astype(np.float64) * 255 / 65535).max() <= 1     # Pillow keeps the high byte


def test_float_0_to_1_is_scaled(tmp_path):
    v = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(v, "F").save(tmp_path / "f.tif")
    assert (decoded(tmp_path / "f.tif")[..., 0] == [[0, 128, 255]]).all()


@pytest.mark.parametrize("mode, values, named", [
    ("F", np.array([[0.0, 200.0]], dtype=np.float32), "mode F"),
    ("F", np.array([[-1.0, 0.5]], dtype=np.float32), "mode F"),
    ("I", np.array([[-5, 10]], dtype=np.int32), "mode I"),
    ("I", np.array([[0, 70000]], dtype=np.int32), "mode I"),
])
def test_ranges_without_one_picture_are_refused_by_file_and_mode(tmp_path, mode, values, named):
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / "x.tif"
    Image.fromarray(values, mode).save(path)
    with pytest.raises(ImageModeError, match=named):
        load_image(str(path))
    with pytest.raises(DataError) as e:
        decode([str(path)], 4, False)
    text = str(e.value)
    assert str(path) in text and named in text and "\n" not in text
    with pytest.raises(DataError) as e:
        image_tensor(str(path), 4)
    assert str(path) in str(e.value) and named in str(e.value)


# --------------------------------------------------------------------------- 8-bit colour modes

@pytest.mark.parametrize("mode, fmt", [("1", "PNG"), ("L", "PNG"), ("P", "PNG"), ("P", "GIF"), ("RGB", "PNG"),
                                       ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("LAB", "TIFF"),
                                       ("RGB", "BMP"), ("L", "PPM")])
def test_8bit_modes_show_their_colours(tmp_path, mode, fmt):
    colours = [(0, 0, 0), (255, 255, 255)] if mode == "1" else \
        [(128, 128, 128), (30, 30, 30)] if mode == "L" else [(200, 30, 40), (20, 180, 60)]
    rgb = Image.new("RGB", (8, 4), colours[0])
    rgb.paste(colours[1], (4, 0, 8, 4))
    image = rgb.quantize(2) if mode == "P" else rgb.convert(mode)       # P: exactly the two colours
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    got = decoded(path)
    tolerance = {"JPEG": 6, "LAB": 10, "YCbCr": 3}.get(fmt if fmt == "JPEG" else mode, 0)
    assert np.abs(got[:, :4] - colours[0]).max() <= tolerance
    assert np.abs(got[:, 4:] - colours[1]).max() <= tolerance


def test_hsv_from_a_pil_image():
    hsv = Image.new("HSV", (2, 1), (0, 255, 255))             # pure red
    assert (pixels(to_rgb(hsv)) == [255, 0, 0]).all()


# --------------------------------------------------------------------------- transparency

def rgba_pattern():
    """(2, 3) pixels: opaque red, transparent (green beneath), half-transparent blue."""
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[:, 0] = (255, 0, 0, 255)
    a[:, 1] = (0, 255, 0, 0)
    a[:, 2] = (0, 0, 255, 128)
    return Image.fromarray(a, "RGBA")


def expected_over_white():
    half = 128 / 255
    return np.array([[255, 0, 0], [255, 255, 255], [np.rint(255 * (1 - half)), np.rint(255 * (1 - half)), 255]])


def test_rgba_is_composited_over_white(tmp_path):
    rgba_pattern().save(tmp_path / "a.png")
    got = decoded(tmp_path / "a.png")
    assert np.abs(got[0] - expected_over_white()).max() <= 1


def test_premultiplied_modes_agree_with_rgba():
    straight = pixels(to_rgb(rgba_pattern()))
    assert np.abs(pixels(to_rgb(rgba_pattern().convert("RGBa"))) - straight).max() <= 2
    grey = rgba_pattern().convert("LA")
    assert np.abs(pixels(to_rgb(grey.convert("La"))) - pixels(to_rgb(grey))).max() <= 2


def test_la_png_transparent_is_white(tmp_path):
    a = np.array([[[10, 255], [10, 0]]], dtype=np.uint8)
    Image.fromarray(a, "LA").save(tmp_path / "la.png")
    got = decoded(tmp_path / "la.png")
    assert (got[0, 0] == 10).all() and (got[0, 1] == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_like_rgba(tmp_path, fmt):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)       # index 0 green (transparent), 1 red
    p.putpixel((1, 0), 1)
    path = tmp_path / f"p.{fmt.lower()}"
    p.save(path, fmt, transparency=0)
    got = decoded(path)
    assert (got[0, 0] == WHITE).all() and (got[0, 1] == [255, 0, 0]).all()
    pa = Image.new("PA", (2, 1))                                 # the same picture held as PA
    pa.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pa.putpixel((1, 0), (1, 255))
    assert (pixels(to_rgb(pa)) == got).all()


@pytest.mark.parametrize("mode, key, colour", [("L", 10, (10,)), ("RGB", (1, 2, 3), (1, 2, 3))])
def test_png_transparent_colour_key(tmp_path, mode, key, colour):
    image = Image.new(mode, (2, 1), colour if mode == "RGB" else colour[0])
    image.putpixel((1, 0), (200, 100, 50) if mode == "RGB" else 200)
    image.save(tmp_path / "k.png", transparency=key)
    got = decoded(tmp_path / "k.png")
    assert (got[0, 0] == WHITE).all()
    assert (got[0, 1] == ((200, 100, 50) if mode == "RGB" else (200, 200, 200))).all()


# --------------------------------------------------------------------------- frames, orientation

@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_several_frames_decode_the_first(tmp_path, fmt):
    frames = [Image.new("RGB", (4, 4), c) for c in [(250, 0, 0), (0, 0, 250), (0, 250, 0)]]
    path = tmp_path / f"m.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    assert getattr(Image.open(path), "n_frames", 1) == 3
    got = decoded(path)
    assert np.abs(got - [250, 0, 0]).max() <= 8


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 2), (250, 0, 0))
    image.paste((0, 0, 250), (0, 0, 3, 2))                     # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6                                            # shown rotated 90 degrees clockwise
    image.save(tmp_path / "o.png", exif=exif)
    got = decoded(tmp_path / "o.png")
    assert got.shape == (6, 2, 3)
    assert (got[0] == [0, 0, 250]).all() and (got[-1] == [250, 0, 0]).all()


# --------------------------------------------------------------------------- the users: folders, predict

def test_folder_decode_and_predict_agree_on_a_16bit_png(tmp_path):
    v = np.full((8, 8), 128 * 257, dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g.png")
    x, keep = decode([str(tmp_path / "g.png")], 8, False)
    assert keep == [0] and (x == 128).all()
    assert torch.equal(image_tensor(str(tmp_path / "g.png"), 8), x[0])
    assert torch.equal(image_tensor(Image.fromarray(v), 8), x[0])            # a PIL image: the same rules


def test_predict_says_what_a_path_is(tmp_path, deadline):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    for name, what in [("folder", "a folder"), ("pipe", "a FIFO"), ("missing.png", "no such file")]:
        assert what in file_problem(str(tmp_path / name))
        with pytest.raises(DataError, match=what):
            image_tensor(str(tmp_path / name), 4)
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with pytest.raises(DataError, match="symlink"):
        image_tensor(str(tmp_path / "link.png"), 4)


def swapped_primaries_profile():
    """sRGB's ICC profile with its red and blue primaries exchanged (the tag table's rXYZ and bXYZ
    entries swapped): a stored (r, g, b) means the sRGB colour (b, g, r), as the TRCs are equal."""
    from PIL import ImageCms
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", icc[128:132])[0]
    entry = {bytes(icc[o:o + 4]): o for o in range(132, 132 + 12 * count, 12)}
    r, b = entry[b"rXYZ"], entry[b"bXYZ"]
    icc[r + 4:r + 12], icc[b + 4:b + 12] = icc[b + 4:b + 12], icc[r + 4:r + 12]
    icc[84:100] = bytes(16)                   # the profile ID (an MD5 of the old bytes): "not computed"
    return bytes(icc)


def colours(mode):
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (6, 5, len(mode)), generator=g).to(torch.uint8).numpy()
    if mode == "RGBA":
        a[..., 3] = 255
    return a


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGB", "TIFF"), ("RGBA", "PNG")])
def test_an_embedded_colour_profile_is_applied(tmp_path, mode, fmt):
    a = colours(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(a, mode).save(path, fmt, icc_profile=swapped_primaries_profile())
    shown = a[..., [2, 1, 0]].astype(np.int64)                  # what a colour-managed viewer shows
    assert np.abs(decoded(path) - shown).max() <= 1
    assert np.abs(decoded(path) - a[..., :3]).max() > 100        # not the stored values


@pytest.mark.parametrize("icc", [b"not a profile at all", None])
def test_an_unreadable_or_srgb_profile_leaves_the_stored_colours(tmp_path, icc):
    from PIL import ImageCms
    a = colours("RGB")
    path = tmp_path / "x.png"
    profile = icc if icc is not None else ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(a, "RGB").save(path, "PNG", icc_profile=profile)
    assert np.abs(decoded(path) - a).max() <= 1


def test_a_profile_that_does_not_fit_the_mode_is_ignored(tmp_path):
    a = colours("L")[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(a, "L").save(path, "PNG", icc_profile=swapped_primaries_profile())   # an RGB profile on grey
    assert (decoded(path) == a[..., None].astype(np.int64)).all()


def test_folder_decode_and_predict_apply_the_same_profile(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(colours("RGB"), "RGB").save(path, "PNG", icc_profile=swapped_primaries_profile())
    with Image.open(path) as image:
        image.load()
        from_pil = pixels(to_rgb(image))
    assert (from_pil == decoded(path)).all()


# --------------------------------------------------------------------------- image sizes that cannot fit

def test_decoded_bytes():
    assert decoded_bytes(50_000, 32) == 50_000 * 3 * 32 * 32
    assert decoded_bytes(60_000, 2000) == 720_000_000_000


def test_image_size_beyond_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    """--image-size 2000 on CIFAR-10 asked the allocator for 720 GB; now a one-line DataError that
    names the memory needed and available, before anything is decoded or allocated."""
    with pytest.raises(DataError, match=r"--image-size 20000 needs about .* available.*smaller --image-size"):
        load_dataset("synthetic", image_size=20000)
    tree(tmp_path)
    monkeypatch.setattr(imagecache, "decode", lambda *a: pytest.fail("decoded before the memory check"))
    monkeypatch.setattr(sources, "available_memory", lambda: 50_000_000)     # a 50 MB machine
    with pytest.raises(DataError, match=r"--image-size 2000 needs about 336.0 MB .*50.0 MB available.*at most about"):
        load_tree(tmp_path, image_size=2000)


def test_image_size_that_fits_still_loads(tmp_path, monkeypatch):
    tree(tmp_path)
    monkeypatch.setattr(sources, "available_memory", lambda: 50_000_000)
    assert load_tree(tmp_path, image_size=64).train.x.shape[-1] == 64
