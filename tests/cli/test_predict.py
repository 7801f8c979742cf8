"""`python -m lintorch.predict` as a subprocess: its output and its one-line errors."""
import json

import torch
from PIL import Image

from tests import forked
from tests.helpers import FOLDER_COLOURS as COLOURS, assert_one_line_error


def odd_images(folder):
    """Images unlike the training files: other sizes, modes and formats -> {path: expected class}."""
    g = torch.Generator().manual_seed(3)

    def solid(rgb, w, h):
        x = torch.tensor(rgb, dtype=torch.float32).view(1, 1, 3) + 10 * torch.randn(h, w, 3, generator=g)
        return Image.fromarray(x.clamp(0, 255).round().to(torch.uint8).numpy(), "RGB")
    cases = {
        folder / "big red.png": (solid(COLOURS["red"], 300, 200).convert("RGBA"), "red"),
        folder / "tiny-green.jpg": (solid(COLOURS["green"], 7, 5), "green"),
        folder / "blue-palette.png": (solid(COLOURS["blue"], 33, 65).convert("P"), "blue"),
        folder / "red-cmyk.jpg": (solid(COLOURS["red"], 40, 40).convert("CMYK"), "red"),
        folder / "grey.png": (solid((128, 128, 128), 20, 20).convert("L"), None),
    }
    for path, (im, _) in cases.items():
        im.save(path)
    return {path: label for path, (_, label) in cases.items()}


def test_predict_command_line(folder_run, image_folder, tmp_path, run_cli):
    """The session's image-folder run (trained in the test process) used by a fresh process."""
    expected = odd_images(tmp_path)
    tests = {image_folder / "test" / c / name: c for c in COLOURS for name in ("000.jpg", "001.png")}
    expected.update(tests)
    p = run_cli("-m", "lintorch.predict", folder_run, *expected, "--top-k", 2, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["values"] == "probability" and r["loss"] == "softmax" and r["classes"] == list(COLOURS)
    assert [q["image"] for q in r["predictions"]] == [str(path) for path in expected]
    for q, label in zip(r["predictions"], expected.values()):
        assert len(q["top_k"]) == 2 and q["top_k"][0]["label"] == q["label"]
        assert q["top_k"][0]["probability"] >= q["top_k"][1]["probability"] and 0 < q["probability"] <= 1
        if label is not None:
            assert q["label"] == label, q


def test_predict_errors_on_the_command_line(folder_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a picture")
    p = forked.start("lintorch.predict", folder_run, bad)    # a process of its own (tests/forked.py), torch imported
    code, (_, err) = p.wait(), p.communicate()
    assert_one_line_error(code, err, str(bad))
