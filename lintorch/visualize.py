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
