"""Name -> builder registry used by configs, presets and the CLI.

Builders are imported lazily so that ``mer-keras --help`` does not import every model.
"""

from __future__ import annotations

import importlib
from typing import Callable

# snake_case name -> "module:callable" (module relative to mer_keras.models)
_BUILDERS: dict[str, str] = {
    # ShuffleNetV2-SVM paper
    "shufflenet_v2": "shufflenet_v2:ShuffleNetV2",
    "shufflenet_v2_cbam": "shufflenet_v2:ShuffleNetV2CBAM",
    "shufflenet_v2_vit": "shufflenet_v2:ShuffleNetV2ViT",
    # MobileViT paper
    "mobilevit_s": "mobilevit:MobileViTS",
    "mobilevit_xs": "mobilevit:MobileViTXS",
    "mobilevit_xxs": "mobilevit:MobileViTXXS",
    # comparison backbones
    "mobilenet_v2": "applications:MobileNetV2",
    "mobilenet_v3_small": "applications:MobileNetV3Small",
    "mobilenet_v3_large": "applications:MobileNetV3Large",
    "resnet50": "applications:ResNet50",
    "densenet121": "applications:DenseNet121",
    "resnet18": "resnet18:ResNet18",
    "deit_tiny": "deit:DeiTTiny",
    "deit_small": "deit:DeiTSmall",
    "deit_base": "deit:DeiTBase",
    # optical-flow networks (Off-TANet paper and its Table 2)
    "off_tanet": "off_tanet:OffTANet",
    "arfnet": "arfnet:ARFNet",
    "ststnet": "ststnet:STSTNet",
    "off_apexnet": "flow_baselines:OffApexNet",
    "dual_inception": "flow_baselines:DualInception",
    "macnn": "flow_baselines:MACNN",
    "micro_attention": "flow_baselines:MicroAttention",
}


def available() -> list[str]:
    """Registered builder names, sorted."""
    return sorted(_BUILDERS)


def get(name: str) -> Callable:
    """The builder registered as ``name`` (e.g. ``get("off_tanet")(classes=3)``)."""
    try:
        target = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(f"mer_keras.models.{module}"), attr)
