# SPDX-License-Identifier: Apache-2.0
"""The Python API: a trained network together with everything it needs.

    import orienmask_tf as om
    seg = om.load("runs/quickstart/model.keras")      # or om.from_preset(...)
    results = seg.predict(["a.jpg", rgb_array])        # one Result per image
    stats = seg.evaluate("instances_val.json", "val_images/")
    seg.export("saved_model")                          # or "tflite", "onnx"

A ``Segmenter`` holds the network and its ``Experiment`` (family, input
size, anchors, decoding, normalisation, class names); the CLI commands
``predict``, ``evaluate``, ``export`` and ``benchmark`` call it.
"""

import dataclasses
import os
import pathlib

import cv2
import numpy as np

from orienmask_tf import registry
from orienmask_tf.config import load_config


@dataclasses.dataclass
class Result:
    """Detections of one image, in its original pixels.

    Attributes:
        boxes: ``(n, 4)`` float32 ``x1, y1, x2, y2``.
        scores: ``(n,)`` float32, descending as decoded.
        class_ids: ``(n,)`` int32 contiguous labels ``0 .. num_classes-1``.
        class_names: the ``n`` names (the label as text when unnamed).
        masks: ``(n, height, width)`` bool at the image's resolution.
        image_size: ``(height, width)`` of the image.
        path: the file the image came from (None for arrays).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: list
    masks: np.ndarray
    image_size: tuple
    path: str = None

    def __len__(self):
        return len(self.scores)


def _read_rgb(image):
    """A path or an ``(H, W, 3|4|1)`` / ``(H, W)`` uint8 array -> RGB uint8."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image (expected a "
                             ".jpg / .png / .bmp file)")
        return np.ascontiguousarray(bgr[:, :, ::-1]), path
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 RGB, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) \
            or min(array.shape[:2]) < 1:
        raise ValueError("image arrays must be (height, width, 3) RGB "
                         f"(or 1 / 4 channels), got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3]), None


class Segmenter:
    """A network of a registered family plus its experiment.

    Args:
        network: the family's Keras network (weights loaded).
        config: its ``Experiment``.

    Use ``Segmenter.load(path)`` for a ``.keras`` file (``om.load``) and
    ``Segmenter.from_preset(name)`` for a shipped config (``om.from_preset``).
    """

    def __init__(self, network, config):
        from orienmask_tf.saving import check_network

        check_network(network, config, "network", what="Segmenter")
        self.network = network
        self.config = config
        self._inference = {}

    # ------------------------------------------------------------------
    # Construction

    @classmethod
    def load(cls, path, config=None, overrides=()):
        """Load a ``.keras`` file with the experiment it carries, or that of
        ``config`` (a YAML path) instead; ``overrides``
        (``"section.key=value"``) apply on top. A setting that does not fit
        the network (e.g. ``model.num_classes``) is an error naming it."""
        from orienmask_tf.saving import load_network

        network, experiment = load_network(path, config_path=config,
                                           overrides=overrides)
        return cls(network, experiment)

    @classmethod
    def from_preset(cls, name, weights=None, overrides=()):
        """Build the network of preset ``name`` (``presets()``) with fresh
        weights, or with those of ``weights`` (a ``.keras`` file of the same
        network, e.g. from ``orienmask-tf convert``)."""
        config = load_config(preset_path(name), overrides)
        network = config.family.build_network(config)
        if weights is not None:
            from orienmask_tf.saving import load_network

            source, _ = load_network(weights, config, what="weights")
            network.set_weights(source.get_weights())
        return cls(network, config)

    # ------------------------------------------------------------------
    # What it is

    @property
    def family(self):
        return self.config.family

    @property
    def image_size(self):
        return tuple(self.config.image_size)

    @property
    def class_names(self):
        names = tuple(self.config.data.class_names)
        count = self.config.model.num_classes
        return names + tuple(str(i) for i in range(len(names), count))

    def __repr__(self):
        return (f"<Segmenter {self.family.display_name} {self.config.name} "
                f"{self.image_size[0]}x{self.image_size[1]}, "
                f"{self.config.model.num_classes} classes>")

    def save(self, path):
        """Write the network with its experiment (``saving.save_network``)."""
        from orienmask_tf.saving import save_network

        return save_network(self.network, path, self.config)

    def inference_model(self, jit_compile=True, score_threshold=0.0):
        """The ``export.serving.InferenceModel`` (cached per settings)."""
        from orienmask_tf.export.serving import InferenceModel

        key = (bool(jit_compile), float(score_threshold))
        if key not in self._inference:
            anchors, decode = self.family.inference_args(self.config)
            self._inference[key] = InferenceModel(
                self.network, self.image_size, anchors, decode,
                jit_compile=jit_compile, score_threshold=score_threshold)
        return self._inference[key]

    # ------------------------------------------------------------------
    # Use

    def predict(self, images, score_threshold=0.3):
        """Detect on one image or a list of images.

        Args:
            images: a path, an ``(H, W, 3)`` uint8 RGB array, or a list of
                them (any sizes).
            score_threshold: keep detections scoring at least this.

        Returns:
            a list of ``Result``, one per image, in order.
        """
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        items = [images] if single else list(images)
        inference = self.inference_model(score_threshold=score_threshold)
        names = self.class_names
        results = []
        for item in items:
            rgb, path = _read_rgb(item)
            det = {k: np.asarray(v)[0]
                   for k, v in inference.detect_uint8(rgb[None]).items()}
            n = int(det["num_detections"])
            height, width = rgb.shape[:2]
            masks = np.zeros((n, height, width), bool)
            for i in range(n):
                masks[i] = cv2.resize(det["masks"][i], (width, height),
                                      interpolation=cv2.INTER_NEAREST) > 0
            ids = det["classes"][:n].astype(np.int32)
            results.append(Result(
                boxes=det["boxes"][:n].astype(np.float32),
                scores=det["scores"][:n].astype(np.float32), class_ids=ids,
                class_names=[names[k] for k in ids], masks=masks,
                image_size=(height, width), path=path))
        return results

    def evaluate(self, annotations=None, images=None, split="val",
                 max_images=0, batch_size=None, verbose=True, plots=None,
                 progress=False):
        """COCO ``bbox`` and ``segm`` AP on a COCO split.

        Args:
            annotations, images: a COCO instances JSON and its image folder
                (default: the experiment's ``data.<split>_*`` paths).
            split: which split of the experiment when no paths are given.
            max_images: the first N images only (0 = all).
            progress: a bar on stderr, one step per batch.
            plots: a folder to write the evaluation pictures into
                (``pr_curves``, ``per_class_ap``, ``confusion_matrix``, each
                ``.png`` + ``.json``; ``orienmask_tf.eval.plots``).

        Returns:
            ``{"bbox": {...}, "segm": {...}}`` with the 12 COCO metrics.
        """
        from orienmask_tf.inference.evaluate import NetworkEvaluator

        config = self.config
        if annotations is not None:
            if images is None:
                raise ValueError("evaluate: give the image folder of "
                                 f"{annotations} too (images=...)")
            config = dataclasses.replace(config, data=dataclasses.replace(
                config.data, **{f"{split}_annotations": os.fspath(
                    annotations), f"{split}_images": os.fspath(images)}))
        evaluator = NetworkEvaluator(config, split, max_images=max_images,
                                     batch_size=batch_size)
        stats = evaluator(self.network, verbose=verbose, plots=plots,
                          progress=progress)
        self.last_evaluator = evaluator
        return stats

    def export(self, format="saved_model", output=None, quantize=None,
               calibration_images=None, score_threshold=0.0, version=None,
               model_name=None, batch_size=1):
        """Write a deployment artifact; returns its path.

        Args:
            format: ``"saved_model"`` (TF Serving layout
                ``<output>/<model_name>/<version>/``, default output
                ``saved_models``), ``"tflite"`` or ``"onnx"`` (a file,
                default ``saved_models/<model_name>[_<quantize>].<ext>``),
                or ``"tflite_e2e"``: the quantized CPU route
                (``export/quantize.py``: uint8 image in, detections out,
                int8 network; ``quantize="int8"``; default
                ``saved_models/<model_name>_int8_e2e.tflite``).
            quantize: TFLite only: ``"fp16"``, ``"int8-dynamic"`` or
                ``"int8"`` (needs ``calibration_images``: float32
                ``(1, H, W, 3)`` arrays in [0, 1]).
            score_threshold: SavedModel and ``tflite_e2e``: drop detections
                below this.
            batch_size: ``tflite_e2e``: its static batch.
        """
        from orienmask_tf.config import config_to_dict

        name = model_name or self.config.name
        anchors, decode = self.family.inference_args(self.config)
        common = (self.network, self.image_size, anchors, decode)
        if format == "tflite_e2e":
            from orienmask_tf.export.quantize import convert_int8_end_to_end

            if quantize != "int8" or not calibration_images:
                raise ValueError("format 'tflite_e2e' is int8 only and needs "
                                 "calibration images")
            output = output or os.path.join("saved_models",
                                            f"{name}_int8_e2e.tflite")
            _write_bytes(output, convert_int8_end_to_end(
                *common, calibration=calibration_images,
                score_threshold=score_threshold, batch_size=batch_size))
            return output
        if quantize and format != "tflite":
            raise ValueError("quantize applies to the tflite format only")
        if format == "saved_model":
            from orienmask_tf.export.saved_model import export_saved_model
            from orienmask_tf.export.saved_model import next_version

            model_dir = os.path.join(output or "saved_models", name)
            version = version or next_version(model_dir)
            export_dir = os.path.join(model_dir, str(version))
            if os.path.exists(export_dir):
                raise ValueError(f"{export_dir} exists; TF Serving versions "
                                 "are immutable, pick another version")
            export_saved_model(*common, export_dir,
                               metadata={"config": config_to_dict(self.config),
                                         "score_threshold": score_threshold},
                               score_threshold=score_threshold)
            return export_dir
        if format == "tflite":
            from orienmask_tf.export.tflite import convert_tflite

            if quantize == "int8" and not calibration_images:
                raise ValueError("int8 quantisation needs calibration images")
            output = output or os.path.join(
                "saved_models",
                f"{name}{'_' + quantize if quantize else ''}.tflite")
            flatbuffer = convert_tflite(*common, quantize=quantize,
                                        calibration=calibration_images)
            _write_bytes(output, flatbuffer)
            return output
        if format == "onnx":
            from orienmask_tf.export.onnx import export_onnx

            output = output or os.path.join("saved_models", f"{name}.onnx")
            folder = os.path.dirname(os.path.abspath(output))
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".tmp-{os.getpid()}-"
                               f"{os.path.basename(output)}")
            export_onnx(*common, tmp)
            os.replace(tmp, output)
            return output
        raise ValueError(f"format must be 'saved_model', 'tflite', 'onnx' "
                         f"or 'tflite_e2e', got {format!r}")

    def benchmark(self, formats=None, batch_sizes=(1, 8), warmup=2, runs=5):
        """Latency of each deployment format on this machine (rows as
        ``export.benchmark.benchmark_formats`` returns them)."""
        from orienmask_tf.export.benchmark import FORMATS
        from orienmask_tf.export.benchmark import benchmark_formats

        anchors, decode = self.family.inference_args(self.config)
        return benchmark_formats(
            self.network, self.image_size, anchors, decode,
            formats=list(formats or FORMATS), batch_sizes=batch_sizes,
            warmup=warmup, runs=runs)


def _write_bytes(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "wb") as stream:
        stream.write(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------
# Presets: the YAML files each family ships in its ``presets/`` folder.


def _preset_files():
    import importlib

    root = pathlib.Path(importlib.import_module(
        "orienmask_tf.families").__file__).parent
    files = {}
    for name in registry.names():
        for path in sorted((root / name / "presets").glob("*.yaml")):
            files[path.stem] = (name, path)
    return files


def presets():
    """``{name: {"family", "reproduces", "path"}}`` of every shipped config."""
    import yaml

    out = {}
    for name, (family, path) in _preset_files().items():
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream) or {}
        out[name] = {"family": family,
                     "reproduces": data.get("reproduces", ""),
                     "path": str(path)}
    return out


def preset_path(name):
    """The YAML file of preset ``name``."""
    files = _preset_files()
    if name not in files:
        raise ValueError(f"unknown preset {name!r}; expected one of "
                         f"{sorted(files)}")
    return str(files[name][1])
