# SPDX-License-Identifier: Apache-2.0
"""The quantized CPU route: one TFLite file, uint8 image in, detections out.

``convert_int8_end_to_end`` writes a single ``.tflite`` whose ``serve``
signature takes ``images`` uint8 ``[batch, height, width, 3]`` (the batch
fixed at conversion, default 1; any height and width, the whole image
resized inside, as ``serving_default``) and returns what
``serving_default`` returns: ``boxes`` (x1, y1, x2, y2 in original pixels),
``scores``, ``classes``, ``num_detections`` and ``masks`` (uint8 at the
network resolution), the detections scoring >= ``score_threshold`` first,
padded to the decoder's number of rows (static shapes; ``int8_runner`` cuts
them to the largest count of the batch, as ``serving_default`` returns
them). Inside, three parts run in order in one subgraph:

1. float resize (bilinear, half-pixel = OpenCV ``INTER_LINEAR``) and
   ``/ 255``;
2. the network in **full integer** (int8 weights per channel, int8
   activations calibrated on training images; float in / out through
   QUANTIZE / DEQUANTIZE), the family's normalisation included;
3. the family's decoding in **float32** (scores, boxes, NMS, Eq. 3 masks
   for OrienMask) and the boxes mapped to the original pixels.

Why this route: on this project's 2-core AVX-512 VNNI CPU (FPN-plus 544,
2 threads, one process timing each alternately while the machine was
heavily shared, load average ~12), the int8 TFLite network (XNNPACK) ran
in 0.4-0.6 s where ONNX Runtime 1.32's static int8 QDQ model of the same
network (``quantize_static``, per-channel QInt8 weights, QUInt8
activations) took 0.9-1.2 s and the XLA float32 network 3.4 s; converting
the network to ONNX also took 5.5 minutes and 18.5 GB of memory, the int8
TFLite conversion about 2 minutes. The end-to-end figures against the
official pipeline are in ``BENCHMARKS.md`` (``scripts/benchmark_official.py``). Why three parts spliced together rather than one conversion:
TFLite's calibrator crashes on any graph that holds the OrienMask decoding
and quantizes every op it sees (``export/tflite.py``), while the decoding
must stay float (IoUs, score products, orientation distances). So each part
is converted on its own -- only the network through the calibrator -- and
``splice_tflite`` joins the three flatbuffers into one subgraph (tensors,
buffers, operator codes and control-flow subgraphs renumbered), which the
interpreter runs like any converted model.
"""

import copy
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.export.serving import DETECTION_KEYS
from orienmask_tf.export.serving import InferenceModel

SIGNATURE = "serve"
INPUT = "images"


def _to_flatbuffer(endpoint, quantize_network=None, model=None):
    """Convert ``endpoint = (function, input_signature)`` to TFLite through
    a SavedModel whose signature ``serve`` it is.

    ``model``: the Keras network to track (its variables) when the function
    uses it; ``quantize_network``: calibration inputs for full int8.
    """
    function, signature = endpoint
    with tempfile.TemporaryDirectory() as tmp:
        if model is not None:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint(SIGNATURE, function,
                                 input_signature=signature)
            archive.write_out(tmp, verbose=False)
        else:
            module = tf.Module()
            module.serve = tf.function(function, input_signature=signature)
            tf.saved_model.save(module, tmp, signatures={
                SIGNATURE: module.serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize_network is not None:
            samples = list(quantize_network)

            def representative():
                for x in samples:
                    yield {INPUT: x}

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
        return converter.convert()


def convert_int8_network(model, image_size, anchors, decode_kwargs,
                         calibration):
    """The full-integer network alone (bytes): signature ``serve``, float32
    ``images`` ``[batch, H, W, 3]`` in [0, 1] (any batch) -> the raw
    outputs (``InferenceModel.raw``: the family's normalisation inside).

    Args:
        calibration: iterable of float32 ``(1, H, W, 3)`` network inputs in
            [0, 1] (training images resized to ``image_size``); the int8
            activation ranges are their observed min / max.
    """
    samples = [np.asarray(x, np.float32) for x in calibration]
    height, width = (int(v) for v in image_size)
    if not samples:
        raise ValueError("int8 quantisation needs at least one calibration "
                         "image")
    for x in samples:
        if x.shape != (1, height, width, 3):
            raise ValueError(f"calibration images must be float32 (1, "
                             f"{height}, {width}, 3), got {x.shape}")
    inference = InferenceModel(model, image_size, anchors, decode_kwargs,
                               jit_compile=False)
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT)
    return _to_flatbuffer((inference.raw, [spec]), quantize_network=samples,
                          model=model)


def end_to_end_stages(model, image_size, anchors, decode_kwargs,
                      network, score_threshold=0.0, batch_size=1):
    """The three parts of the end-to-end model, each a TFLite flatbuffer
    with a ``serve`` signature, and their wiring for ``splice_tflite``.

    Returns ``(stages, raw_keys)``: ``stages`` is ``[("pre", bytes,
    wiring), ("net", network, wiring), ("dec", bytes, wiring)]``; ``pre``
    maps ``images`` uint8 ``[batch_size, h, w, 3]`` to ``inputs`` float32
    ``[batch_size, H, W, 3]``; ``dec`` maps ``images`` (for their size)
    and the raw outputs ``raw_keys`` to the detections.
    """
    height, width = (int(v) for v in image_size)
    inference = InferenceModel(model, image_size, anchors, decode_kwargs,
                               jit_compile=False,
                               score_threshold=score_threshold)
    batch = int(batch_size)
    pixels = tf.TensorSpec([batch, None, None, 3], tf.uint8, name=INPUT)
    raw_specs = tf.function(inference.raw).get_concrete_function(
        tf.TensorSpec([batch, height, width, 3], tf.float32)
    ).structured_outputs
    raw_keys = sorted(raw_specs)

    def preprocess(images):
        return {"inputs": inference._resize(images)}

    def decode(images, *raw):
        outputs = inference.decode_raw(dict(zip(raw_keys, raw)))
        shape = tf.shape(images)
        sizes = tf.tile(shape[None, 1:3], [batch, 1])
        outputs = inference._to_original(outputs, sizes)
        masks = outputs["masks"]
        # Static shapes: every row is returned (the runner cuts them to the
        # largest kept count, as serving_default does).
        if score_threshold > 0:
            # TFLite's SELECT takes no uint8: compact the masks as bool.
            out = inference._compact(dict(outputs,
                                          masks=tf.cast(masks, tf.bool)),
                                     cut=False)
            return dict(out, masks=tf.cast(out["masks"], tf.uint8))
        # Threshold 0 keeps every valid detection, which the decoders put
        # first with all-zero padding masks (DETECTION_KEYS): the masks stay
        # as they are -- no gather and select over ~30 M pixels per image,
        # each a full pass in TFLite.
        out = inference._compact(dict(outputs, masks=masks[:, :, :1, :1]),
                                 cut=False)
        return dict(out, masks=masks)

    decode_signature = [pixels] + [
        tf.TensorSpec(raw_specs[k].shape, tf.float32, name=k)
        for k in raw_keys]
    stages = [
        ("pre", _to_flatbuffer((preprocess, [pixels])), {INPUT: INPUT}),
        ("net", network, {INPUT: "pre/inputs"}),
        ("dec", _to_flatbuffer((decode, decode_signature)),
         dict({INPUT: INPUT}, **{k: f"net/{k}" for k in raw_keys})),
    ]
    return stages, raw_keys


def convert_int8_end_to_end(model, image_size, anchors, decode_kwargs,
                            calibration=None, score_threshold=0.0,
                            batch_size=1, network=None):
    """The spliced end-to-end model (bytes); see the module docstring.

    Args:
        model, image_size, anchors, decode_kwargs: as ``InferenceModel``.
        calibration: as ``convert_int8_network`` (unless ``network`` is
            given).
        score_threshold: drop detections scoring below this (0 keeps all).
        batch_size: the model's static batch (the decoding's per-anchor
            ``map_fn`` needs it to convert); the image height and width
            stay free.
        network: a ``convert_int8_network`` flatbuffer to reuse (one
            calibration for several batch sizes).
    """
    if network is None:
        if calibration is None:
            raise ValueError("int8 quantisation needs calibration images")
        network = convert_int8_network(model, image_size, anchors,
                                       decode_kwargs, calibration)
    stages, _ = end_to_end_stages(model, image_size, anchors, decode_kwargs,
                                  network, score_threshold, batch_size)
    return splice_tflite(stages, inputs=[INPUT],
                         outputs={k: f"dec/{k}" for k in DETECTION_KEYS})


def _signature(model, key=SIGNATURE):
    for signature in model.signatureDefs or []:
        name = signature.signatureKey
        if isinstance(name, bytes):
            name = name.decode()
        if name == key:
            return signature
    raise ValueError(f"TFLite model has no signature {key!r}")


def _name(value):
    return value.decode() if isinstance(value, bytes) else value


# Builtin options that name subgraphs (control flow), remapped on splicing.
_SUBGRAPH_FIELDS = ("condSubgraphIndex", "bodySubgraphIndex",
                    "thenSubgraphIndex", "elseSubgraphIndex",
                    "initSubgraphIndex", "subgraph")


def splice_tflite(stages, inputs, outputs):
    """Join TFLite models into one model with one ``serve`` signature.

    Args:
        stages: ``[(name, flatbuffer, wiring)]`` in execution order. Each
            flatbuffer has a ``serve`` signature; ``wiring`` maps each of
            its signature inputs to a source: the name of an input of the
            joined model, or ``"<earlier stage>/<output name>"``.
        inputs: the joined model's signature inputs (sources of the wiring;
            each is created from the first stage input wired to it).
        outputs: ``{name: "<stage>/<output name>"}`` of the joined model.

    The main subgraph of every stage is appended to one subgraph (its
    operators after those of the earlier stages, its signature inputs
    replaced by their sources); the stages' other subgraphs (WHILE / IF
    bodies), buffers and operator codes are appended and renumbered.
    """
    from tensorflow.lite.tools import flatbuffer_utils
    from tensorflow.lite.python import schema_py_generated as schema

    joined = schema.ModelT()
    joined.version = 3
    joined.description = "orienmask-tf spliced model"
    joined.buffers = [schema.BufferT()]   # buffer 0: the empty sentinel
    joined.operatorCodes, joined.metadata = [], []
    main = schema.SubGraphT()
    main.name, main.tensors, main.operators = "main", [], []
    main.inputs, main.outputs = [], []
    joined.subgraphs = [main]
    sources = {}     # source name -> tensor index in the main subgraph
    metadata_names = set()
    for stage, flatbuffer, wiring in stages:
        model = flatbuffer_utils.convert_bytearray_to_object(
            bytearray(flatbuffer))
        signature = _signature(model)
        buffer_offset = len(joined.buffers)
        opcode_offset = len(joined.operatorCodes)
        joined.buffers += model.buffers
        joined.operatorCodes += model.operatorCodes
        # The signature's subgraph joins the main one; the others (bodies of
        # WHILE / IF) are appended after the subgraphs already joined.
        others = [i for i in range(len(model.subgraphs))
                  if i != signature.subgraphIndex]
        subgraph_map = {signature.subgraphIndex: 0}
        subgraph_map.update({i: len(joined.subgraphs) + k
                             for k, i in enumerate(others)})
        extra = []
        for index in others:
            subgraph = model.subgraphs[index]
            for tensor in subgraph.tensors or []:
                tensor.buffer += buffer_offset
            for op in subgraph.operators or []:
                _renumber_op(op, opcode_offset, subgraph_map, None)
            extra.append(subgraph)
        source = model.subgraphs[signature.subgraphIndex]
        bound = {}
        for entry in signature.inputs:
            name = _name(entry.name)
            if name not in wiring:
                raise ValueError(f"stage {stage!r}: input {name!r} is not "
                                 "wired")
            target = wiring[name]
            if target not in sources:
                if target not in inputs:
                    raise ValueError(f"stage {stage!r}: input {name!r} "
                                     f"wired to unknown {target!r}")
                tensor = copy.copy(source.tensors[entry.tensorIndex])
                tensor.name = target
                tensor.buffer += buffer_offset
                sources[target] = len(main.tensors)
                main.tensors.append(tensor)
            bound[entry.tensorIndex] = sources[target]
        mapping = {}
        for index, tensor in enumerate(source.tensors):
            if index in bound:
                mapping[index] = bound[index]
                continue
            tensor.buffer += buffer_offset
            tensor.name = f"{stage}/{_name(tensor.name)}"
            mapping[index] = len(main.tensors)
            main.tensors.append(tensor)
        for op in source.operators or []:
            _renumber_op(op, opcode_offset, subgraph_map, mapping)
            main.operators.append(op)
        for entry in signature.outputs:
            sources[f"{stage}/{_name(entry.name)}"] = mapping[
                entry.tensorIndex]
        joined.subgraphs += extra
        for meta in model.metadata or []:
            if _name(meta.name) not in metadata_names:
                metadata_names.add(_name(meta.name))
                meta.buffer += buffer_offset
                joined.metadata.append(meta)
    missing = [s for s in list(inputs) + list(outputs.values())
               if s not in sources]
    if missing:
        raise ValueError(f"splice: no tensor for {missing}")
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs, signature.outputs = [], []
    for name in inputs:
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, sources[name]
        signature.inputs.append(entry)
        main.inputs.append(sources[name])
    for name, target in outputs.items():
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, sources[target]
        signature.outputs.append(entry)
        main.outputs.append(sources[target])
    joined.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(joined))


def _renumber_op(op, opcode_offset, subgraph_map, tensor_map):
    op.opcodeIndex += opcode_offset
    if tensor_map is not None:
        for field in ("inputs", "outputs", "intermediates"):
            values = getattr(op, field)
            if values is not None:
                setattr(op, field, [tensor_map[int(i)] if i >= 0 else int(i)
                                    for i in values])
    options = op.builtinOptions
    for field in _SUBGRAPH_FIELDS:
        if options is not None and hasattr(options, field):
            setattr(options, field, subgraph_map[getattr(options, field)])


def int8_runner(flatbuffer_or_path, num_threads=None):
    """Load the end-to-end model once; returns ``images -> dict of arrays``
    (``images``: uint8 ``(B, h, w, 3)``, B the model's batch; a new image
    size re-plans the interpreter).

    The file returns every decoder row (static shapes; rows past
    ``num_detections`` are padding: class -1, zero score, box and mask);
    the runner cuts them to the largest ``num_detections`` of the batch,
    which gives exactly ``serving_default``'s outputs.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(flatbuffer_or_path, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(flatbuffer_or_path),
                                  num_threads=num_threads)
    else:
        interpreter = Interpreter(model_path=os.fspath(flatbuffer_or_path),
                                  num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE)
    batch = int(runner.get_input_details()[INPUT]["shape"][0])

    def run(images):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[:1] != (batch,) or \
                images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 ({batch}, height, width,"
                             f" 3) for this model, got {images.dtype} "
                             f"{images.shape}")
        out = runner(images=images)
        length = int(np.max(out["num_detections"], initial=0))
        return {k: np.array(v if k == "num_detections" else v[:, :length])
                for k, v in out.items()}

    return run
