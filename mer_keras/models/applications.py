"""Comparison backbones from ``keras.applications`` with the papers' head and switches.

MobileNetV2 (Sandler et al. 2018), MobileNetV3 Small/Large (Howard et al. 2019), ResNet50
(He et al. 2016) and DenseNet121 (Huang et al. 2017) are the baselines of Table 2 of the
ShuffleNetV2-SVM paper (and MobileNetV3 of Table 4 of the MobileViT paper).

Each builder calls the ``keras.applications`` builder with ``include_top=False`` and
``weights=None`` (never "imagenet": nothing is downloaded), then rebuilds the backbone from
its config with the switches applied:

- ``l2``: an L2 kernel regulariser on every ``Conv2D``/``Dense`` (``kernel_regularizer``)
  and ``DepthwiseConv2D`` (``depthwise_regularizer``) layer, set in the layer configs
  before re-instantiation (so it is serialised with the model).
- ``activation``: "relu" keeps the architecture; "leaky_relu" / "swish" replace every ReLU
  layer / ``Activation("relu")`` of the body (for MobileNetV2 this drops the ReLU6 cap;
  for MobileNetV3 only the plain ReLUs of the inverted-residual bodies are replaced — the
  ReLU6 inside hard-sigmoid/hard-swish and the squeeze-excite ReLUs are kept).
- Auto-generated layer names ("re_lu_12", "activation_3", ...) depend on how many layers
  were built before in the session; they are renamed deterministically (``<base>_<k>`` by
  position) so weight files and layer lists are stable.
- Inputs are used as given: ``include_preprocessing=False`` for MobileNetV3 (scale
  inputs in the data pipeline like the other backbones).

Head (``include_top=True``): global average pooling ``"avg_pool"`` -> dropout
``"head_dropout"`` (if > 0) -> Dense ``"predictions"`` — identical in parameters to the
keras.applications top (MobileNetV3: ``"avg_pool"`` -> Dense 1024/1280 ``"features_fc"``
+ hard-swish ``"features"`` — the keras 1x1-conv "last point" layer as Dense — ->
dropout -> ``"predictions"``; keras' own top uses dropout 0.2 there).
"""

from __future__ import annotations

import copy
import re

import keras

from mer_keras.models import heads as _h
from mer_keras.models.layers import LEAKY_RELU_SLOPE, check_activation

_AUTO_NAME = re.compile(r"^([a-z_]+?)(?:_(\d+))?$")
_AUTO_BASES = {"re_lu", "activation", "multiply", "add", "rescaling", "conv2d",
               "batch_normalization", "depthwise_conv2d", "zero_padding2d", "input_layer",
               "global_average_pooling2d", "concatenate", "dense", "dropout", "reshape",
               "max_pooling2d", "average_pooling2d", "leaky_re_lu"}


def _walk_rename(obj, mapping):
    if isinstance(obj, dict):
        hist = obj.get("keras_history")
        if isinstance(hist, (list, tuple)) and hist and hist[0] in mapping:
            obj["keras_history"] = [mapping[hist[0]], *hist[1:]]
        for v in obj.values():
            _walk_rename(v, mapping)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_rename(v, mapping)


def _stable_names(cfg, prefix):
    mapping, counters = {}, {}
    for layer in cfg["layers"]:
        name = layer["name"]
        m = _AUTO_NAME.match(name)
        if m and m.group(1) in _AUTO_BASES:
            base = m.group(1)
            k = counters.get(base, 0)
            counters[base] = k + 1
            mapping[name] = f"{prefix}{base}_{k}" if base != "input_layer" else "input"
    for layer in cfg["layers"]:
        if layer["name"] in mapping:
            new = mapping[layer["name"]]
            layer["name"] = new
            layer["config"]["name"] = new
    _walk_rename(cfg["layers"], mapping)
    for key in ("input_layers", "output_layers"):
        cfg[key] = _rename_refs(cfg[key], mapping)
    return cfg


def _rename_refs(entries, mapping):
    """input_layers / output_layers: [name, node, index] or a list of those."""
    if isinstance(entries, (list, tuple)) and entries and isinstance(entries[0], str):
        return [mapping.get(entries[0], entries[0]), *entries[1:]]
    if isinstance(entries, (list, tuple)):
        return [_rename_refs(e, mapping) for e in entries]
    return entries


def _replace_activation(layer, activation):
    name = layer["config"]["name"]
    dtype = layer["config"].get("dtype")
    if activation == "leaky_relu":
        layer["class_name"] = "LeakyReLU"
        layer["config"] = {"name": name, "trainable": True, "dtype": dtype,
                           "negative_slope": LEAKY_RELU_SLOPE}
    else:
        layer["class_name"] = "Activation"
        layer["config"] = {"name": name, "trainable": True, "dtype": dtype,
                           "activation": activation}
    layer["module"] = "keras.layers"
    layer["registered_name"] = None


def _is_body_relu(layer, arch):
    cls, cfg = layer["class_name"], layer["config"]
    if cls == "Activation":
        return cfg.get("activation") == "relu"
    if cls != "ReLU":
        return False
    if arch == "mobilenet_v3":
        return cfg.get("max_value") is None and "squeeze_excite" not in cfg["name"]
    return True


def _rebuild(base, arch, activation, l2):
    cfg = copy.deepcopy(base.get_config())
    reg = keras.regularizers.serialize(keras.regularizers.L2(l2)) if l2 else None
    for layer in cfg["layers"]:
        cls = layer["class_name"]
        if reg is not None:
            if cls in ("Conv2D", "Dense"):
                layer["config"]["kernel_regularizer"] = copy.deepcopy(reg)
            elif cls == "DepthwiseConv2D":
                layer["config"]["depthwise_regularizer"] = copy.deepcopy(reg)
        if activation != "relu" and _is_body_relu(layer, arch):
            _replace_activation(layer, activation)
    cfg = _stable_names(cfg, prefix="")
    cfg["name"] = f"{base.name}_backbone"
    return keras.Model.from_config(cfg)


def _build(app_fn, arch, include_top, weights, input_tensor, input_shape, pooling, classes,
           classifier_activation, name, l2, dropout, activation, head, app_kwargs=None,
           last_point=None):
    _h.check_weights(weights)
    _h.check_head(head)
    check_activation(activation)
    if input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        input_shape = tuple(input_tensor.shape[1:])
    base = app_fn(include_top=False, weights=None, input_shape=tuple(input_shape),
                  **(app_kwargs or {}))
    backbone = _rebuild(base, arch, activation, l2)
    if input_tensor is None:
        inputs, x = backbone.inputs, backbone.outputs[0]
    else:
        img_input, inputs = _h.resolve_input(input_tensor, input_shape)
        x = backbone(img_input)
    if include_top:
        if last_point:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = keras.layers.Dense(last_point, kernel_regularizer=_h.l2_regularizer(l2),
                                   name="features_fc")(x)
            x = keras.layers.Activation("hard_swish", name="features")(x)
        x = _h.classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                               classifier_activation=classifier_activation,
                               pool=not last_point)
    else:
        x = _h.pool_features(x, pooling)
    model = keras.Model(inputs, x, name=name)
    return _h.load_weights(model, weights)


_ARGS_DOC = """
    Args (keras.applications order): include_top, weights (None or a .keras/.weights.h5
    path; nothing is downloaded), input_tensor, input_shape (224x224x3 in the papers),
    pooling (include_top=False: None/"avg"/"max"), classes, classifier_activation
    (ignored for head="svm"), name; paper switches l2 (L2 on every conv/depthwise/dense
    kernel), dropout (before the classifier), activation ("relu" = original; see module
    docstring), head ("softmax" or "svm" = linear output for MultiMarginLoss).
"""


def MobileNetV2(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
                pooling=None, classes=3, classifier_activation="softmax", name="mobilenet_v2",
                l2=0.0, dropout=0.0, activation="relu", head="softmax", alpha=1.0):
    return _build(keras.applications.MobileNetV2, "mobilenet_v2", include_top, weights,
                  input_tensor, input_shape, pooling, classes, classifier_activation, name, l2,
                  dropout, activation, head, dict(alpha=alpha))


MobileNetV2.__doc__ = ("MobileNetV2 (Sandler et al. 2018), ShuffleNetV2-SVM paper Table 2 "
                       "baseline; 1000 classes = keras.applications' 3,504,872 trainable.\n"
                       + _ARGS_DOC + "    alpha: width multiplier (keras.applications).\n")


def MobileNetV3Small(include_top=True, weights=None, input_tensor=None,
                     input_shape=(224, 224, 3), pooling=None, classes=3,
                     classifier_activation="softmax", name="mobilenet_v3_small", l2=0.0,
                     dropout=0.0, activation="relu", head="softmax", alpha=1.0):
    return _build(keras.applications.MobileNetV3Small, "mobilenet_v3", include_top, weights,
                  input_tensor, input_shape, pooling, classes, classifier_activation, name, l2,
                  dropout, activation, head, dict(alpha=alpha, include_preprocessing=False),
                  last_point=1024)


MobileNetV3Small.__doc__ = ("MobileNetV3-Small (Howard et al. 2019), MobileViT paper Table 4 "
                            "comparison; head = GAP -> Dense 1024 hard-swish -> classifier "
                            "(keras.applications' top as Dense layers).\n" + _ARGS_DOC)


def MobileNetV3Large(include_top=True, weights=None, input_tensor=None,
                     input_shape=(224, 224, 3), pooling=None, classes=3,
                     classifier_activation="softmax", name="mobilenet_v3_large", l2=0.0,
                     dropout=0.0, activation="relu", head="softmax", alpha=1.0):
    return _build(keras.applications.MobileNetV3Large, "mobilenet_v3", include_top, weights,
                  input_tensor, input_shape, pooling, classes, classifier_activation, name, l2,
                  dropout, activation, head, dict(alpha=alpha, include_preprocessing=False),
                  last_point=1280)


MobileNetV3Large.__doc__ = ("MobileNetV3-Large (Howard et al. 2019); head = GAP -> Dense "
                            "1280 hard-swish -> classifier.\n" + _ARGS_DOC)


def ResNet50(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
             pooling=None, classes=3, classifier_activation="softmax", name="resnet50",
             l2=0.0, dropout=0.0, activation="relu", head="softmax"):
    return _build(keras.applications.ResNet50, "resnet50", include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation, name, l2, dropout,
                  activation, head)


ResNet50.__doc__ = ("ResNet50 (He et al. 2016, keras.applications layout with conv biases), "
                    "ShuffleNetV2-SVM paper Table 2 baseline; 1000 classes = 25,583,592 "
                    "trainable.\n" + _ARGS_DOC)


def DenseNet121(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
                pooling=None, classes=3, classifier_activation="softmax", name="densenet121",
                l2=0.0, dropout=0.0, activation="relu", head="softmax"):
    return _build(keras.applications.DenseNet121, "densenet121", include_top, weights,
                  input_tensor, input_shape, pooling, classes, classifier_activation, name, l2,
                  dropout, activation, head)


DenseNet121.__doc__ = "DenseNet121 (Huang et al. 2017), comparison backbone.\n" + _ARGS_DOC

__all__ = ["MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ResNet50", "DenseNet121"]
