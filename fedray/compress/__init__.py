"""Update codecs both ways: what travels is the encoded form, and its bytes are what is counted.

`clients.codec` is the last step of the client chain (it encodes each update; the
server decodes it before checking and aggregating); `server.codec` encodes the
broadcast parameters once per round, and each client actor decodes them once.
Importing the package registers every built-in codec in `CODECS`.
"""

from __future__ import annotations

from typing import NamedTuple

from fedray.compress import content, gain, quantize, sparsify  # noqa: F401  (register the codecs)
from fedray.compress.codec import CODECS, PARAMS_CODECS
from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig
from fedray.transforms import UpdateTransform
from fedray.types import ParamSpec

__all__ = ["CODECS", "Codecs", "build_codecs", "codec_problems"]


class Codecs(NamedTuple):
    """The run's codecs; None where the config says `none`."""

    uplink: UpdateTransform | None
    """`clients.codec`: appended to the client chain."""
    downlink: UpdateTransform | None
    """`server.codec`: encodes the broadcast parameters."""


def build_codecs(cfg: RunConfig) -> Codecs:
    """Both codecs from the config; one ConfigError naming every problem and its key."""
    problems: list[str] = []
    built = []
    for key, spec in (("clients.codec", cfg.clients.codec), ("server.codec", cfg.server.codec)):
        if key == "server.codec" and spec.name not in PARAMS_CODECS and spec.name in CODECS.names():
            problems.append(f"server.codec: '{spec.name}' cannot encode the broadcast parameters (it drops "
                            f"coordinates that only the sender's error feedback makes up for); use one of "
                            f"{sorted(PARAMS_CODECS)}")
            built.append(None)
            continue
        if key == "server.codec" and spec.args.get("rate") == "auto":
            problems.append("server.codec: rate: auto sizes client uploads; the broadcast takes a fixed rate")
        try:
            transform = CODECS.build_component(key, spec)
        except ValueError as err:
            problems.append(str(err))
            transform = None
        if transform is not None and transform.decode is None:
            problems.append(f"{key}: codec '{spec.name}' has no decode, so nothing could read what it sends")
        built.append(None if spec.name == "none" else transform)
    peft = cfg.model.peft
    if cfg.server.codec.name != "none" and peft is not None and peft.aggregation == "stack":
        problems.append("server.codec must be none with model.peft.aggregation=stack: stacking adds each "
                        "client's update to the exact adapter it was sent, which an encoded broadcast is not")
    if problems:
        raise ConfigError(problems)
    return Codecs(*built)


def codec_problems(cfg: RunConfig, spec: ParamSpec) -> list[str]:
    """What only the model's tensor names can tell: content rules that match no tensor."""
    codec = cfg.clients.codec
    if codec.name != "content":
        return []
    rules = codec.args.get("rules") or []
    return [f"clients.codec.args.{p}" for p in content.unmatched_rules(rules, spec)]
