"""Decoding one image file (or PIL image) to the 8-bit RGB picture an image viewer shows: the one
home of that rule, used by image folders, the DataLoader path, predict and LinearProbe alike.

Every mode Pillow opens either decodes to what a viewer shows or is refused by name (ImageModeError):
  - 8-bit colour and grey (1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV): Pillow's conversion to RGB;
  - transparency (LA, La, PA, RGBA, RGBa, P or L or RGB with a transparent colour): composited over
    WHITE, as a viewer shows it on a light page, whichever mode holds the alpha;
  - 16-bit grey (I;16, I;16B, I;16L, I;16N, and I holding 0..65535): scaled by 255 / 65535, the
    full 16-bit range (a 16-bit PNG is not clipped to white); 16-bit RGB(A) PNGs Pillow already
    reads as 8-bit RGB(A);
  - 32-bit float (F) holding 0..1: scaled by 255; I or F outside those ranges has no one picture
    a viewer shows: refused, naming the mode and the range;
  - several frames (GIF, TIFF pages): the first, as a viewer's thumbnail shows;
  - an EXIF orientation tag: applied (a phone photo stored sideways is shown upright);
  - an embedded colour profile (ICC; Adobe RGB, Display P3, a CMYK press profile, a grey profile): the
    pixels converted to sRGB, as a colour-managed viewer shows them. A profile that cannot be read or
    does not fit the image's mode is ignored, as viewers ignore it: the stored values are shown.
"""
import functools
import io
import os
import stat

import numpy as np

from ..errors import DataError

BACKGROUND = (255, 255, 255)   # what transparent pixels show
EIGHT_BIT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")
ORIENTATION = 0x0112           # the EXIF tag
PROFILED = {"RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "L": "RGB"}   # mode -> its sRGB mode


class ImageModeError(DataError):
    """An image whose mode (or values) has no one 8-bit picture: the message names the mode; the
    caller adds the file."""


def to_rgb(image):
    """A PIL image of any mode -> a PIL RGB image of what a viewer shows (see the module's rules);
    ImageModeError naming the mode when there is no such picture."""
    from PIL import Image
    image = in_srgb(image)
    mode = image.mode
    if mode in ALPHA or "transparency" in image.info and mode in ("P", "L", "RGB", "1"):
        try:
            rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")   # La: premultiplied
        except ValueError:
            raise ImageModeError(f"image mode {mode} (with transparency) cannot be converted to RGB") from None
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode == "RGB":
        return image
    if mode in EIGHT_BIT:
        return image.convert("RGB")
    if mode == "F" or mode == "I" or mode.startswith("I;16"):
        return grey_8bit(image).convert("RGB")
    raise ImageModeError(f"image mode {mode} is not one lintorch decodes (expected an 8-bit, 16-bit or "
                         f"0..1 float image); convert it to RGB")


def in_srgb(image):
    """A PIL image with an embedded ICC profile -> its pixels converted to sRGB (mode RGB, or RGBA
    keeping the alpha); any other image unchanged. A palette image is expanded to RGB(A) first."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    if image.mode == "P" or "transparency" in image.info:      # a transparent colour becomes alpha first
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode not in PROFILED:
        return image
    transform = _to_srgb(bytes(icc), image.mode)
    if transform is None:
        return image
    from PIL import ImageCms
    out = ImageCms.applyTransform(image, transform)
    out.info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    return out


@functools.lru_cache(maxsize=32)
def _to_srgb(icc, mode):
    """The colour transform from profile `icc` in `mode` to sRGB, built once per profile; None when
    the profile cannot be read or does not describe images of this mode."""
    from PIL import ImageCms
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, PROFILED[mode])
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def grey_8bit(image):
    """A 16-bit, 32-bit integer or float grey image -> mode L, scaled from its full range
    (0..65535 for integers, 0..1 for floats); ImageModeError for values outside it."""
    from PIL import Image
    a = np.asarray(image)
    if a.size == 0:
        return Image.new("L", image.size)
    lo, hi = float(a.min()), float(a.max())
    if image.mode == "F":
        if not (np.isfinite(a).all() and 0 <= lo and hi <= 1):
            raise ImageModeError(f"image mode F (32-bit float) holds values in [{lo:g}, {hi:g}]: lintorch reads "
                                 f"float images as 0..1; scale it to 0..1 or save it as 8-bit")
        return Image.fromarray(np.rint(a.astype(np.float64) * 255).astype(np.uint8), "L")
    if lo < 0 or hi > 65535:
        raise ImageModeError(f"image mode {image.mode} ({a.dtype} values in [{lo:g}, {hi:g}]) is outside 16-bit's "
                             f"0..65535: it has no one 8-bit picture; save it as 8- or 16-bit")
    scaled = (a.astype(np.uint32) * 255 + 32767) // 65535          # round(v * 255 / 65535)
    return Image.fromarray(scaled.astype(np.uint8), "L")


def file_problem(path):
    """Why path is not an image file to open (missing, a folder, a FIFO, a socket, a device, a
    dangling symlink), or None for a regular file. A FIFO is never opened: it would block."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a symlink to {os.readlink(path)}, which does not exist"
        return "no such file"
    except OSError as e:
        return e.strerror[0].lower() + e.strerror[1:] if e.strerror else str(e)
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    for test, kind in kinds:
        if test(st.st_mode):
            return f"{kind}, not an image file"
    return None


def open_rgb(path):
    """An image file -> the PIL RGB image a viewer shows (its first frame, upright). Raises what
    Pillow raises for a file it cannot read (OSError, UnidentifiedImageError, ...), DataError for a
    path that is no regular file, ImageModeError for a mode with no one 8-bit picture."""
    from PIL import Image, ImageOps
    why = file_problem(path)
    if why:
        raise DataError(why)
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
        try:
            if image.getexif().get(ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
        except Exception:         # a damaged EXIF block: the pixels as stored
            pass
        return to_rgb(image)
