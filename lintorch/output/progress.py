"""Progress of a long loop over images, for whoever watches: a tqdm bar on a terminal, and in a log
file (stderr not a terminal) one plain line every EVERY items or SECONDS seconds, whichever comes
first, so `lintorch evaluate ... 2> log` still shows that it is moving and how far it is. A job
done within AFTER seconds writes no line at all (a log is not cluttered by quick steps).

    with Progress(len(files), "predict", unit="images") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))
"""
import sys
import time

EVERY = 1000       # a line at least every EVERY items (or a tenth of the job, whichever is more) ...
SECONDS = 30.0     # ... or every SECONDS seconds
AFTER = 5.0        # a job done within AFTER seconds writes no line


class Progress:
    """total items; desc names the work; disable: nothing shown. stream: where it goes (stderr)."""

    def __init__(self, total, desc, unit="images", disable=False, stream=None):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.stream = sys.stderr if stream is None else stream
        self.every, self.seconds, self.after = max(EVERY, total // 10), SECONDS, AFTER
        self.done, self._shown, self._t0 = 0, 0, time.perf_counter()
        self._last = self._t0
        self._bar = None
        if not disable and _is_terminal(self.stream):
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit={"images": "img"}.get(unit, unit), unit_scale=True, leave=False, file=self.stream)

    def update(self, n):
        self.done += n
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._t0 < self.after:
            return
        if self.done - self._shown >= self.every or now - self._last >= self.seconds or \
                (self.done >= self.total > self._shown):
            self._line(now)

    def _line(self, now):
        elapsed = now - self._t0
        left = ""
        if 0 < self.done < self.total:
            left = f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        print(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%), "
              f"{_duration(elapsed)}{left}", file=self.stream, flush=True)
        self._shown, self._last = self.done, now

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(s):
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
