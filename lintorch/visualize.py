"""Pictures of a model: the class templates (weight rows as images) and the confusion matrix.

Shapes: C classes, images 3 x S x S. Each returns a uint8 (3, H, W) tensor that TensorBoard's
add_image and torchvision's write_png take directly; labels are drawn with Pillow's built-in font.
"""
import torch
from PIL import Image, ImageDraw, ImageFont


def _to_tensor(img):
    """PIL RGB image -> uint8 (3, H, W)."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def template_grid(weight, classes, image_shape, zoom=4, columns=5):
    """weight (C, D) -> uint8 (3, H, W): each class's weight row as an image, min-max scaled
    on its own (as cs231n shows them), enlarged `zoom` times, its class name beneath."""
    C = weight.shape[0]
    t = weight.detach().float().cpu().reshape(C, *image_shape)
    lo = t.flatten(1).min(1).values.view(C, 1, 1, 1)
    hi = t.flatten(1).max(1).values.view(C, 1, 1, 1)
    t = ((t - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8)
    if t.shape[1] == 1:
        t = t.expand(C, 3, *t.shape[2:])
    t = t.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)        # (C, 3, zS, zS)
    side, label_h, pad = t.shape[-1], 12, 4
    rows = -(-C // columns)
    cols = min(C, columns)
    canvas = Image.new("RGB", (cols * (side + pad) + pad, rows * (side + label_h + pad) + pad), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for c in range(C):
        x0 = pad + (c % columns) * (side + pad)
        y0 = pad + (c // columns) * (side + label_h + pad)
        canvas.paste(Image.fromarray(t[c].permute(1, 2, 0).numpy()), (x0, y0))
        draw.text((x0, y0 + side), str(classes[c])[:side // 6], fill="black", font=font)
    return _to_tensor(canvas)


def confusion_image(cm, classes, cell=36):
    """cm (C, C) counts, rows = true class, columns = predicted -> uint8 (3, H, W) heat map with
    the count in each cell and row-normalized shading (a perfect model is a dark diagonal)."""
    C = cm.shape[0]
    frac = cm.double() / cm.sum(1, keepdim=True).clamp_min(1)
    left, top = 70, 16
    canvas = Image.new("RGB", (left + C * cell + 4, top + C * cell + 4), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i in range(C):
        draw.text((2, top + i * cell + cell // 3), str(classes[i])[:11], fill="black", font=font)
        draw.text((left + i * cell + 2, 2), str(classes[i])[:5], fill="black", font=font)
        for j in range(C):
            shade = int(255 * (1 - frac[i, j].item()))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 3, box[1] + cell // 3), str(int(cm[i, j])), font=font,
                      fill="white" if shade < 128 else "black")
    return _to_tensor(canvas)


def _panel(draw, font, box, xs, ys, chosen, title, fmt, color):
    """One line chart in box = (x0, y0, x1, y1): points (xs in 0..1, ys raw), the chosen index marked."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline="black")
    finite = [y for y in ys if y is not None]
    draw.text((x0, y0 - 14), title, fill="black", font=font)
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or max(abs(hi), 1e-12)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span

    def at(i):
        return x0 + 6 + xs[i] * (x1 - x0 - 12), y1 - (ys[i] - lo) / (hi - lo) * (y1 - y0)
    for t in (lo + 0.08 * (hi - lo) / 1.16, hi - 0.08 * (hi - lo) / 1.16):   # the data's own range
        py = y1 - (t - lo) / (hi - lo) * (y1 - y0)
        draw.line((x0 - 3, py, x0, py), fill="black")
        draw.text((2, py - 6), fmt(t), fill="black", font=font)
    pts = [at(i) for i, y in enumerate(ys) if y is not None]
    if len(pts) > 1:
        draw.line(pts, fill=color, width=2)
    for px, py in pts:
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)
    if chosen is not None and ys[chosen] is not None:
        px, py = at(chosen)
        draw.line((px, y0, px, y1), fill=(200, 0, 0))
        draw.ellipse((px - 4, py - 4, px + 4, py + 4), outline=(200, 0, 0), width=2)


def path_image(values, val_acc, objective=None, chosen=None, name="reg", width=480):
    """A path or sweep as a picture: validation accuracy (and the training objective, when given)
    against the swept value (log scale when every value is > 0), the chosen one marked in red.
    values (R,), val_acc (R,) in 0..1 (None: not measured), objective (R,) or None -> uint8 (3, H, W)."""
    import math
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
    left, ph, gap = 64, 150, 34
    height = gap + len(panels) * (ph + gap) + 14
    canvas = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for k, (title, ys, fmt, color) in enumerate(panels):
        y0 = gap + k * (ph + gap)
        _panel(draw, font, (left, y0, width - 12, y0 + ph), xs, ys, chosen, title, fmt, color)
    y = gap + len(panels) * (ph + gap) - gap + 4
    for i in sorted({0, R - 1} | ({chosen} if chosen is not None else set())):
        px = left + 6 + xs[i] * (width - 12 - left - 12)
        label = f"{values[i]:.3g}"
        draw.text((px - 3 * len(label), y), label, fill=(200, 0, 0) if i == chosen else "black", font=font)
    chosen_text = "" if chosen is None else f"; chosen {name} = {values[chosen]:.3g}" + (
        "" if val_acc[chosen] is None else f" ({100 * val_acc[chosen]:.2f}%)")
    draw.text((left, height - 14), f"{name}{' (log scale)' if logx else ''}{chosen_text}", fill="black", font=font)
    return _to_tensor(canvas)
