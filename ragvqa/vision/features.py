"""Photo-to-photo similarity from the classifier's pooled features.

Raw EfficientNet-Lite2 pooled features are all positive-leaning: two
unrelated photos already have a cosine of about 0.23 (0.09-0.40 over the
package photos below), so every photo in a KB would look a little like
every query. Subtracting a fixed mean feature first (then re-normalising)
puts unrelated photos near 0 (mean -0.03) while a flipped, cropped,
half-size copy of the same photo stays at 0.79-0.92.

The mean (``data/feature_mean.json``, 1280 floats) is computed by
``python -m ragvqa.vision.features`` over every RGB-convertible photo that
scikit-image, scikit-learn and matplotlib ship (:data:`MEAN_PHOTOS`): a
small, fixed, diverse set, so the constant is reproducible on any machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ragvqa.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

MEAN_FILE = Path(__file__).with_name("data") / "feature_mean.json"
#: (module, path inside it) of the photos the mean is taken over.
MEAN_PHOTOS: tuple[tuple[str, str], ...] = tuple(
    [("skimage", f"data/{name}") for name in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "chessboard_RGB.png",
        "clock_motion.png", "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png",
        "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "microaneurysms.png",
        "moon.png", "motorcycle_left.png", "page.png", "phantom.png", "retina.jpg", "rocket.jpg",
        "text.png",
    )]
    + [("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg")]
    + [("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")]
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def feature_mean() -> np.ndarray:
    """The shipped mean feature, float32 (1280,)."""
    import numpy as np

    try:
        values = json.loads(MEAN_FILE.read_text(encoding="utf-8"))["mean"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read {MEAN_FILE} ({exc})", hint="reinstall ragvqa") from exc
    return np.asarray(values, dtype=np.float32)


def mean_digest() -> str:
    """sha256 of the shipped mean (goes into retriever fingerprints)."""
    return hashlib.sha256(MEAN_FILE.read_bytes()).hexdigest()


def centred(features: np.ndarray) -> np.ndarray:
    """Features (..., 1280) minus the mean, L2-normalised (float32)."""
    import numpy as np

    shifted = np.asarray(features, dtype=np.float32) - feature_mean()
    norms = np.linalg.norm(shifted, axis=-1, keepdims=True)
    return (shifted / np.maximum(norms, 1e-12)).astype(np.float32)


def _photo_path(module: str, inner: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{module} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def main() -> int:
    """Recompute ``data/feature_mean.json`` from :data:`MEAN_PHOTOS`."""
    import numpy as np
    from PIL import Image

    from ragvqa.vision.classifier import get_classifier

    model = get_classifier("cpu")
    photos = [Image.open(_photo_path(m, p)).convert("RGB") for m, p in MEAN_PHOTOS]
    feats = np.stack([model.classify([im])[0].features for im in photos])
    mean = feats.mean(axis=0)
    payload = {
        "about": "mean EfficientNet-Lite2 pooled feature (L2-normalised per photo) over MEAN_PHOTOS",
        "photos": [f"{m}/{p}" for m, p in MEAN_PHOTOS],
        "mean": [round(float(v), 6) for v in mean],
    }
    MEAN_FILE.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    print(f"wrote the mean of {len(photos)} photos to {MEAN_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
