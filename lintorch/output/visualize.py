"""Pictures of a model: the class templates (weight rows as images), the confusion matrix, a
caption strip for any picture (the k-means filters), and a path or sweep (path_image). The first
three are drawn to be read where they are looked at: TensorBoard's IMAGES card shows a picture at
CARD px wide whatever its size, so each is laid out for a width of SCALE * CARD with letters tall
enough to stay >= 9 px at the card's width; the PNG files are the same pictures, twice as sharp.

Shapes: C classes, images 3 x S x S. Each returns a uint8 (3, H, W) tensor that Monitor.image and
rundir.write_png take directly. Text is drawn in the TrueType font Pillow embeds (Aileron,
ImageFont.load_default(size=...), Pillow >= 10.1), so no font file is needed: font(size).
"""
import math

import torch
from PIL import Image, ImageDraw, ImageFont

CARD = 350          # px: the width TensorBoard's image card shows a picture at (tf-image-loader's CSS)
SCALE = 2           # pictures are drawn SCALE * CARD wide
MIN_GLYPH = 9       # px: the smallest letter height (ascender to baseline) wanted on the card
ASCENT = 0.76       # Aileron's ascender height per unit of font size ("automobile" at 100: 76 px)


def font(size):
    """Pillow's embedded TrueType font at `size` px (an em)."""
    return ImageFont.load_default(size=max(1, int(size)))


def shown_height(size, width):
    """The ascender height in px of `size`-px text in a picture `width` px wide, shown on the card."""
    return ASCENT * size * CARD / width


def _to_tensor(img):
    """PIL RGB image -> uint8 (3, H, W)."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def _from_tensor(t):
    return Image.fromarray(t.permute(1, 2, 0).contiguous().cpu().numpy())


def _width(text, size):
    return font(size).getlength(text)


# --------------------------------------------------------------------------- class templates

def template_grid(weight, classes, image_shape, width=SCALE * CARD):
    """weight (C, D) -> uint8 (3, H, width): each class's weight row as an image, min-max scaled on
    its own (as cs231n shows them), enlarged to a tile, its full class name beneath. As many
    columns (5 at most) as keep the longest name >= MIN_GLYPH px tall on the card."""
    C = weight.shape[0]
    t = weight.detach().float().cpu().reshape(C, *image_shape)
    lo = t.flatten(1).min(1).values.view(C, 1, 1, 1)
    hi = t.flatten(1).max(1).values.view(C, 1, 1, 1)
    t = ((t - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8)
    if t.shape[1] == 1:
        t = t.expand(C, 3, *t.shape[2:])
    names = [str(c) for c in classes]
    per_size = max(_width(n, 100) for n in names) / 100          # the longest name's width per px of size
    for columns in range(min(C, 5), 0, -1):
        pad = width // 50
        tile = (width - pad * (columns + 1)) // columns
        size = min(tile * 0.9 / per_size, tile / 4)
        if shown_height(size, width) >= MIN_GLYPH + 0.5:
            break
    zoom = max(1, tile // t.shape[-1])
    t = t.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)        # (C, 3, zS, zS)
    side, label_h = t.shape[-1], int(size * 1.3)
    rows = -(-C // columns)
    canvas = Image.new("RGB", (width, rows * (side + label_h + pad) + pad), "white")
    draw, f = ImageDraw.Draw(canvas), font(size)
    for c in range(C):
        x0 = pad + (c % columns) * (tile + pad)
        y0 = pad + (c // columns) * (side + label_h + pad)
        canvas.paste(_from_tensor(t[c]), (x0 + (tile - side) // 2, y0))
        draw.text((x0 + tile / 2, y0 + side + size * 0.15), names[c], fill="black", font=f, anchor="mt")
    return _to_tensor(canvas)


# --------------------------------------------------------------------------- confusion matrix

def confusion_layout(cm, classes, width=SCALE * CARD):
    """Where confusion_image draws: {size (font px), cell, left (x of column 0), top (y of row 0),
    width, height}. The font size fills `width`: row labels (full class names), then C cells each
    as wide as the widest count."""
    C = cm.shape[0]
    counts = max(_width(str(int(v)), 100) for v in cm.flatten().tolist()) / 100
    names = max(_width(str(c), 100) for c in classes) / 100
    # width = m + names*s + g + C * (counts + p) * s + m: margins m = 0.15 s, gap g = 0.3 s, cell padding
    # p = 0.3 s (tight: at C = 10 the widest 3-digit count then stands 9 px tall on the card)
    size = width / (0.15 + names + 0.3 + C * (counts + 0.3) + 0.15)
    cell = math.floor((counts + 0.3) * size)
    left = int(width - 0.15 * size - C * cell)
    top = int(1.6 * size + names * size + 0.4 * size)       # "predicted", then the rotated column names
    return {"size": size, "cell": cell, "left": left, "top": top, "width": width,
            "height": top + C * cell + int(0.3 * size)}


def confusion_image(cm, classes, width=SCALE * CARD):
    """cm (C, C) counts, rows = true class, columns = predicted -> uint8 (3, H, width) heat map with
    every count in its cell, the full class names along both axes, "true" and "predicted" over
    them, and row-normalized shading (a perfect model is a dark diagonal)."""
    C = cm.shape[0]
    L = confusion_layout(cm, classes, width)
    size, cell, left, top = L["size"], L["cell"], L["left"], L["top"]
    frac = cm.double() / cm.sum(1, keepdim=True).clamp_min(1)
    canvas = Image.new("RGB", (L["width"], L["height"]), "white")
    draw, f = ImageDraw.Draw(canvas), font(size)
    draw.text((left + C * cell / 2, 0.2 * size), "predicted", fill="black", font=f, anchor="mt")
    draw.text((left - 0.3 * size, top - 0.3 * size), "true", fill="black", font=f, anchor="rs")
    for i in range(C):
        name = str(classes[i])
        draw.text((left - 0.3 * size, top + (i + 0.5) * cell), name, fill="black", font=f, anchor="rm")
        strip = Image.new("RGB", (int(_width(name, size)) + 2, int(size * 1.2)), "white")
        ImageDraw.Draw(strip).text((0, size * 0.1), name, fill="black", font=f, anchor="lt")
        up = strip.rotate(90, expand=True)                   # reads bottom to top, ends just above its column
        canvas.paste(up, (int(left + (i + 0.5) * cell - up.width / 2), int(top - 0.3 * size) - up.height))
        for j in range(C):
            shade = int(255 * (1 - frac[i, j].item()))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + cell / 2, box[1] + cell / 2), str(int(cm[i, j])), font=f, anchor="mm",
                      fill="white" if shade < 128 else "black")
    return _to_tensor(canvas)


# --------------------------------------------------------------------------- captions

def captioned(picture, text, width=None):
    """picture uint8 (3, H, W) -> uint8 (3, H', W') with `text` on a white strip above it (wrapped
    to lines), tall enough to read on the card. width: the width to lay out for (default: the
    picture's own, at least SCALE * CARD; a narrower picture is centred)."""
    W = max(picture.shape[-1], width or SCALE * CARD)
    size = (MIN_GLYPH + 1) / shown_height(1, W)
    f = font(size)
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and f.getlength(trial) > W - size:
            lines.append(line)
            trial = word
        line = trial
    lines.append(line)
    strip = int(size * (1.3 * len(lines) + 0.4))
    canvas = Image.new("RGB", (W, strip + picture.shape[1]), "white")
    draw = ImageDraw.Draw(canvas)
    for n, ln in enumerate(lines):
        draw.text((size * 0.5, size * (0.3 + 1.3 * n)), ln, fill="black", font=f, anchor="lt")
    canvas.paste(_from_tensor(picture), ((W - picture.shape[-1]) // 2, strip))
    return _to_tensor(canvas)


# --------------------------------------------------------------------------- a path or sweep

def _panel(draw, f, size, box, xs, ys, chosen, title, fmt, color):
    """One line chart in box = (x0, y0, x1, y1): points (xs in 0..1, ys raw), the chosen index
    marked; text in font f of `size` px."""
    x0, y0, x1, y1 = box
    thin, dot = max(1, round(size / 12)), max(2, round(size / 6))
    draw.rectangle(box, outline="black", width=thin)
    finite = [y for y in ys if y is not None]
    draw.text((x0, y0 - 0.25 * size), title, fill="black", font=f, anchor="ld")
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or max(abs(hi), 1e-12)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span

    def at(i):
        return x0 + dot * 3 + xs[i] * (x1 - x0 - dot * 6), y1 - (ys[i] - lo) / (hi - lo) * (y1 - y0)
    for t in (lo + 0.08 * (hi - lo) / 1.16, hi - 0.08 * (hi - lo) / 1.16):   # the data's own range
        py = y1 - (t - lo) / (hi - lo) * (y1 - y0)
        draw.line((x0 - size * 0.2, py, x0, py), fill="black", width=thin)
        draw.text((x0 - size * 0.3, py), fmt(t), fill="black", font=f, anchor="rm")
    pts = [at(i) for i, y in enumerate(ys) if y is not None]
    if len(pts) > 1:
        draw.line(pts, fill=color, width=2 * thin)
    for px, py in pts:
        draw.ellipse((px - dot, py - dot, px + dot, py + dot), fill=color)
    if chosen is not None and ys[chosen] is not None:
        px, py = at(chosen)
        draw.line((px, y0, px, y1), fill=(200, 0, 0), width=thin)
        draw.ellipse((px - 2 * dot, py - 2 * dot, px + 2 * dot, py + 2 * dot), outline=(200, 0, 0), width=2 * thin)


def path_image(values, val_acc, objective=None, chosen=None, name="reg", width=SCALE * CARD):
    """A path or sweep as a picture: validation accuracy (and the training objective, when given)
    against the swept value (log scale when every value is > 0), the chosen one marked in red.
    Laid out, like the other pictures, for TensorBoard's card: `width` px wide with letters that
    stay >= MIN_GLYPH px tall at the card's width.
    values (R,), val_acc (R,) in 0..1 (None: not measured), objective (R,) or None -> uint8 (3, H, W)."""
    R = len(values)
    logx = all(v > 0 for v in values) and R > 1
    tx = [math.log10(v) if logx else float(v) for v in values]
    lo, hi = min(tx), max(tx)
    xs = [(t - lo) / ((hi - lo) or 1.0) for t in tx]
    panels = [("validation accuracy", [None if a is None else 100 * a for a in val_acc], lambda t: f"{t:.1f}%",
               (0, 90, 200))]
    if objective is not None:
        panels.append(("training objective", [None if f is None or not math.isfinite(f) else f for f in objective],
                       lambda t: f"{t:.3g}", (0, 140, 60)))
    size = (MIN_GLYPH + 1) / shown_height(1, width)
    f = font(size)
    ticks = [fmt(t) for _, ys, fmt, _ in panels for t in (min((y for y in ys if y is not None), default=0),
                                                         max((y for y in ys if y is not None), default=0))]
    left = int(max(f.getlength(t) for t in ticks) + 0.6 * size)
    right, gap = int(0.8 * size), int(1.6 * size)
    ph = int(0.3 * width)
    bottom = int(3.0 * size)                   # the x labels and the caption
    height = gap + len(panels) * (ph + gap) - gap + bottom + int(0.4 * size)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, ys, fmt, color) in enumerate(panels):
        y0 = gap + k * (ph + gap)
        _panel(draw, f, size, (left, y0, width - right, y0 + ph), xs, ys, chosen, title, fmt, color)
    y = gap + len(panels) * (ph + gap) - gap + 0.2 * size
    dot = max(2, round(size / 6))
    drawn = []                                  # x extents of the labels written: the chosen first, no overlaps
    for i in ([chosen] if chosen is not None else []) + [0, R - 1]:
        px = left + dot * 3 + xs[i] * (width - right - left - dot * 6)
        label = f"{values[i]:.3g}"
        w = f.getlength(label)
        a, b = min(max(px - w / 2, 0), width - w), min(max(px - w / 2, 0), width - w) + w
        if any(a < d1 + 0.5 * size and d0 < b + 0.5 * size for d0, d1 in drawn):
            continue
        drawn.append((a, b))
        draw.text((a, y), label, fill=(200, 0, 0) if i == chosen else "black", font=f, anchor="lt")
    chosen_text = "" if chosen is None else f": chosen {values[chosen]:.3g}" + (
        "" if val_acc[chosen] is None else f" ({100 * val_acc[chosen]:.2f}%)")
    draw.text((left, height - 0.3 * size), f"{name}{' (log scale)' if logx else ''}{chosen_text}", fill="black",
              font=f, anchor="ld")
    return _to_tensor(canvas)
