"""extract interrupted from outside (issue 20, class F): SIGINT or SIGTERM while the folder is being
built ends the command (130 / 143) and removes the half-built folder beside --out; --out never
appears. In this process: tests/integration/test_extract_hostile.py."""
import os
import signal
import subprocess
import time

import pytest

from tests.helpers import popen, wait_for


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_f_a_signal_mid_extract_leaves_nothing(image_folder, tmp_path, sig, code):
    out = tmp_path / "out"
    p = popen("-m", "lintorch.extract", "--features", "torchvision:resnet18", "--dataset", "imagefolder",
              "--data-dir", image_folder, "--cache-dir", tmp_path / "cache", "--out", out, "--device", "cpu",
              "--threads", "1", "--batch-size", "4", "--input-size", "224", "--quiet")
    wait_for(tmp_path / f".out.partial{p.pid}", p)       # claimed and building: the model encodes next
    time.sleep(0.2)      # inside the build; at 224 px the encoding takes seconds even on an idle machine
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"{sig!r} did not stop extract within 120 s")
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert sorted(n for n in os.listdir(tmp_path) if n != "cache") == []
